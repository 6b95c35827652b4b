"""``stable-inspect bench``: time the performance targets on forged inputs and print one table.

Every timed command runs as its own process (``python -m inspector …``), the way a user runs it, so
the figures include interpreter start-up and imports. Wall time is ``time.perf_counter`` around the
child; peak RSS is the child's own ``ru_maxrss`` from ``os.wait4`` (``RUSAGE_CHILDREN`` would give the
largest child so far, not this one), taken in a small launcher process (see ``LAUNCHER`` for why).
Each target runs once untimed (it warms the page cache and the bytecode cache, and its output is
checked), then ``runs`` timed times (``ratio_runs`` for a target judged as a ratio to a reference
timed interleaved with it: ``cmp -s``, the native walk): the table shows the median and the min–max.

Inputs are forged with ``inspector.forge`` into ``--workdir`` (kept, and reused by later runs when
name and parameters match) or a temporary directory (deleted at the end). Never inside the project.

Targets and their references (issue figures for this kind of machine, 2 cores):

* the Rust library walks a 1,000,000-entry ``StableBTreeMap<u64, u64>`` in about 0.2 s natively, as a
  whole process: ``summary --deep`` may take 5× that, ``entries --format jsonl`` 15× (timed in the
  same run with ``tools/native_walk`` where it is built, see ``inspector.bench.native``);
* ``diff`` of two 1 GiB snapshots may take no longer than ``cmp -s`` of two identical 1 GiB files,
  measured here in the same run;
* ``summary`` of an 8 GiB sparse snapshot: 1.5 s and 150 MB; ``check`` (with the orphan scan): 20 s,
  and peak RSS must not grow with the snapshot's size (compared with the same layout at 1 GiB);
* the TUI paints its first screen within 1 s and scrolls a million-entry map without a stall.

Only the standard library and rich are used here; the TUI is driven from a child process so that this
module never imports Textual (``tests/test_architecture.py``).
"""
