"""``stable-inspect diff OLD NEW``: compare two snapshots (TUI by default, ``--json`` or ``--report``).

Both snapshots are loaded before anything is shown, so an unreadable input ends with one line on
stderr and exit status 2 (``InputError``), never with a half-drawn screen. The report is ``rich``
output; every string that comes from a snapshot goes through ``safe_rich_text`` and is never parsed
as markup. The TUI is imported only on its own path, so ``--json`` and ``--report`` never load Textual.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Iterator
from itertools import repeat
from typing import TYPE_CHECKING, Any, TextIO

from inspector.jsonout import JsonValue, json_default
from inspector.safe_text import json_safe

if TYPE_CHECKING:  # the engine is imported after the byte compare has been started (see run)
    from inspector.diff.byte_ranges import DiffResult
    from inspector.diff.engine import LayoutDiff, SnapshotDiff
    from inspector.session import Session


def _load(args: argparse.Namespace, *, orphan_scan: bool = True) -> tuple[Any, Any]:
    from inspector.cli import UsageError
    from inspector.decode.values import validate_schema_types
    from inspector.session import load, load_schema

    if args.schema:
        problems = validate_schema_types(load_schema(args.schema))
        if problems:
            raise UsageError("schema: " + "; ".join(problems))
    old = load(args.old, did=args.did, schema=args.schema, orphan_scan=orphan_scan)
    try:
        if not orphan_scan:
            _let_go(old)
        new = load(args.new, did=args.did, schema=args.schema, orphan_scan=orphan_scan)
        if not orphan_scan:
            _let_go(new)
    except BaseException:
        old.close()
        raise
    return old, new


def _let_go(session: Session) -> None:
    """Drop this process's mapping of what loading read (the page cache keeps it). The orphan scan's
    free-list walk does that as it ends; with the scan deferred, each side kept ~245 MB of a 1 GiB
    snapshot mapped, and both sides together doubled the diff's peak RSS (272 → 510 MB on the bench's
    dense pair)."""
    from inspector.mapped_pages import page_releaser

    page_releaser(session.snapshot.buf)(0, session.snapshot.size)


def _compute(
    old: Session, new: Session, byte_result: DiffResult | None = None, layout: LayoutDiff | None = None
) -> SnapshotDiff:
    """The diff, with a progress bar on an interactive stderr (a multi-GiB compare takes seconds)."""
    from inspector.diff.engine import diff_sessions

    if byte_result is not None or not sys.stderr.isatty():
        return diff_sessions(old, new, byte_result=byte_result, layout=layout)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), transient=True, console=Console(stderr=True)
    ) as bar:
        task = bar.add_task("comparing", total=1)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"comparing {stage}", completed=done, total=max(total, 1))

        return diff_sessions(old, new, progress=progress)


# One line for anything without a dict or deeper lists in it (json's C encoder); ``indent=2`` would take
# the pure-Python encoder, which spent ~0.1 s on the 600 KB report of the bench's big-value map pair and
# wrote every [start, end] range over four lines.
_inline = json.JSONEncoder(ensure_ascii=False, default=json_default).encode
_CONTAINERS = (dict, list, tuple)
# What ``_inline`` turns a str into (ensure_ascii=False) and json's own text of an int, called directly for
# the report's ~10,000 strings and numbers: each ``_inline`` call costs a few µs of encoder set-up.
_string = json.encoder.encode_basestring
_integer = int.__repr__


def _one_line(items: list[Any] | tuple[Any, ...]) -> str | None:
    """``items`` on one line, as ``_inline`` writes it, when nothing in them is a dict or holds a container
    (a list of ``[start, end]`` pairs); None otherwise. The usual items (ints, strings, pairs of ints) are
    written here: an ``_inline`` call costs a few µs of encoder set-up, and the big-value map diff's
    report has ~2,000 such lists."""
    parts: list[str] = []
    for x in items:
        t = type(x)
        if t is int:
            parts.append(_integer(x))
        elif t is str:
            parts.append(_string(x))
        elif t is list or t is tuple:
            ints = True
            for y in x:
                if type(y) is not int:
                    ints = False
                    if isinstance(y, _CONTAINERS):
                        return None
            parts.append("[" + ", ".join(map(_integer, x)) + "]" if ints else _inline(x))
        elif isinstance(x, dict) or (
            isinstance(x, list | tuple) and any(isinstance(y, _CONTAINERS) for y in x)
        ):
            return None
        else:
            parts.append(_inline(x))
    return "[" + ", ".join(parts) + "]"


def _pretty(value: Any, indent: str, out: list[str]) -> None:
    """``value`` as ``json.dumps(value, indent=2)`` lays it out, except that flat lists (``_one_line``) stay
    on one line; ``indent`` is the current line's."""
    t = type(value)
    if t is str:
        out.append(_string(value))
    elif t is int:  # (exactly int: bool and other subclasses take ``_inline``)
        out.append(_integer(value))
    elif isinstance(value, dict):
        if not value or not all(map(isinstance, value, repeat(str))):
            # (Keys other than strings: json's own rules for them, on the slow path; none are expected.)
            out.append(
                json.dumps(value, indent=2, default=json_default, ensure_ascii=False).replace(
                    "\n", "\n" + indent
                )
            )
            return
        inner = indent + "  "
        sep = "{\n" + inner
        for k, v in value.items():
            # (Strings and ints, most of the values, written here: a call less for each.)
            tv = type(v)
            if tv is str:
                out.append(sep + _string(k) + ": " + _string(v))
            elif tv is int:
                out.append(sep + _string(k) + ": " + _integer(v))
            else:
                out.append(sep + _string(k) + ": ")
                _pretty(v, inner, out)
            sep = ",\n" + inner
        out.append("\n" + indent + "}")
    elif isinstance(value, list | tuple):
        line = _one_line(value)
        if line is not None:
            out.append(line)
            return
        inner = indent + "  "
        sep = "[\n" + inner
        for v in value:
            out.append(sep)
            sep = ",\n" + inner
            _pretty(v, inner, out)
        out.append("\n" + indent + "]")
    elif value is None or isinstance(value, str | int | float):
        out.append(_inline(value))
    else:
        _pretty(json_default(value), indent, out)


def _dump(value: JsonValue, indent: str) -> str:
    out: list[str] = []
    _pretty(value, indent, out)
    # ensure_ascii=False leaves bidi overrides and C1 controls raw: json_safe escapes those.
    return json_safe("".join(out))


def write_json_stream(diff: SnapshotDiff, out: TextIO) -> None:
    """Write ``diff --json`` key by key and long lists item by item, so the output never exists whole
    in memory (it can list thousands of ranges); the text parses to ``diff.to_json()``."""
    out.write("{")
    first = True
    for key, value in diff.iter_json():
        out.write("" if first else ",")
        first = False
        out.write(f"\n  {json.dumps(key)}: ")
        if isinstance(value, Iterator):
            out.write("[")
            sep = "\n    "
            for item in value:
                out.write(sep + _dump(item, "    "))
                sep = ",\n    "
            out.write("\n  ]" if sep != "\n    " else "]")
        else:
            out.write(_dump(value, "  "))
    out.write("\n}\n")


def run(args: argparse.Namespace) -> int:
    # The CLI starts the byte compare in a child before importing this module (see inspector.diff.prefetch);
    # callers that come here directly get the same overlap from here.
    pending = getattr(args, "pending_bytes", None)
    fail_on = getattr(args, "fail_on", None)
    if pending is None and (args.json or args.report or fail_on):
        from inspector.diff.prefetch import start_byte_diff

        pending = start_byte_diff(args.old, args.new)
    headless = bool(args.json or args.report or fail_on)
    try:
        # Headless, each side's forensic orphan scan waits for the byte compare (``diff.frontier``).
        old, new = _load(args, orphan_scan=not headless)
    except BaseException:
        if pending is not None:
            pending.stop()  # (nothing will use what the children compare)
        raise
    if not headless:
        from inspector.tui.diff_app import create_diff_app

        app = create_diff_app(old, new)
        try:
            app.run()
        finally:
            old.close()
            new.close()
        return int(app.return_code or 0)
    # The loaded sessions (and every module) stay until the command ends: the collector need not look at
    # them again before then. Its full passes over them in the diff's last, serial part took ~0.025 s of
    # the bench's big-value map diff. (Thawed at the end, for callers that go on in this process.)
    gc.freeze()
    try:
        if pending is not None and not pending.ready():
            from inspector.diff.engine import prepare

            prepare(old, new)  # while the compare still runs: what does not depend on its result
        byte_result = pending.result() if pending is not None else None
        # The comparison reads both mapped files; one that shrank since it was opened would end in SIGBUS.
        old.snapshot.check_unchanged()
        new.snapshot.check_unchanged()
        from inspector.diff.frontier import finish_orphan_scans

        finish_orphan_scans(old, new, byte_result)
        layout = None
        if pending is not None:
            if byte_result is not None and pending.chains_pending():
                # A child still resolves the old map's chains: meanwhile, what needs only the bytes and
                # the two layouts (groups, totals, the listed ranges' attribution).
                from inspector.diff.engine import layout_diff

                layout = layout_diff(old, new, byte_result)
                layout.warm()
            pending.chains()
        diff = _compute(old, new, byte_result, layout)
        if args.json:
            write_json_stream(diff, sys.stdout)
        else:
            # rich is imported for the human report only: `--json` (CI gates, scripts) never pays for it.
            from rich.console import Console

            from inspector.commands.diff_report import render_report

            Console(highlight=False).print(render_report(diff))
        if fail_on:
            failed = gate_failure(diff.to_json(), fail_on)
            if failed:
                print(f"stable-inspect diff: failing (--fail-on {fail_on}): {failed}", file=sys.stderr)
                return 1
    finally:
        old.close()
        new.close()
        gc.unfreeze()
    return 0


FAIL_ON = ("loss", "incident", "any")


def gate_failure(report: dict[str, Any], mode: str) -> str | None:
    """Why ``--fail-on MODE`` fails this comparison (None: it passes). ``loss``: entries of the old
    snapshot are gone or an incident lost data; ``incident``: an incident was detected; ``any``: the
    snapshots differ at all."""
    kind = report.get("incident")
    # The diff classifies every comparison; only these two mean "nothing went wrong".
    incident = kind if kind not in (None, "identical", "healthy") else None
    if mode == "any":
        if not report.get("identical"):
            n = int(report.get("changed_range_count") or 0)
            return f"the snapshots differ ({n:,} changed byte range{'' if n == 1 else 's'})"
        return None
    if incident:
        return f"incident detected: {incident}"
    if mode == "loss":
        lost = [
            (s.get("memory_id"), int(s.get("removed") or 0))
            for s in report.get("structures") or []
            if int(s.get("removed") or 0) > 0 or s.get("status") == "removed"
        ]
        if lost:
            parts = [f"memory {mid}: {n:,} entr{'y' if n == 1 else 'ies'} removed" for mid, n in lost]
            return "entries lost (" + "; ".join(parts) + ")"
    return None
