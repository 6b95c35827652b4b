"""Scale rows of ``stable-inspect bench`` (issue 13, item 3): a 20,000,000-entry random-order u64 map.

The map is grown like the bench's 1M map (inspector/forge/btree_grow.py: random keys in random order, a
tenth removed again), directly on raw memory (~850 MB), and cached in the work directory. Only the full
bench builds it: growing it takes minutes and about 2 GB of memory in the forge. Rows:

* ``summary --deep`` time and peak RSS, next to the 1M raw map's from the same run: per-entry time
  and RSS must stay flat (≤ 1.25× the 1M figures), i.e. the walk is linear and its memory bounded;
* the TUI's first paint on it (≤ 0.5 s, issue 13's figure for this map), judged from the end of the
  imports: importing Textual alone takes ~0.4 s on the bench machine whatever the file, so the row
  judges what depends on the file (open, decode the headers, build the first screen, paint) and its
  note gives process start → first paint and the import time as measured;
* the longest event-loop stall while scrolling its entries (≤ 0.1 s): the TUI probe's ``scroll`` mode
  (expand the entries, page down, jump to the last page shown, open it, scroll in it).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.bench.inputs import _cached, build_map_image, check_map_input
from inspector.bench.model import Row, Timing
from inspector.bench.runner import _log, inspector_cmd, time_command
from inspector.bench.targets import na_row, timed_row
from inspector.bench.tui_probe import run_tui_probe

if TYPE_CHECKING:
    from inspector.bench.targets import Bench

SCALE_FLAT_X = 1.25  # per-entry time and peak RSS at 20M: ≤ 1.25× the 1M map's
SCALE_TUI_PAINT_LIMIT_S = 0.5
SCALE_TUI_STALL_LIMIT_S = 0.1
SCALE_RUNS = 2  # each run walks 20M entries; the untimed run is the checked one


def scale_map(workdir: Path, entries: int) -> tuple[Path, dict[str, object]]:
    path = workdir / f"map-raw-u64-{entries}.bin"
    info = _cached(
        path, {"recipe": "map-raw", "entries": entries}, lambda p: build_map_image(p, entries, raw=True)
    )
    return path, info


def scale_rows(bench: Bench) -> list[Row]:
    cfg, work = bench.cfg, bench.workdir
    n = cfg.scale_entries
    path, info = scale_map(work, n)
    count, digest = int(str(info["count"])), str(info["entries_sha256"])
    check_map_input(path, count, digest)  # untimed, and it warms the page cache
    cmd = inspector_cmd("summary", str(path), "--deep", "--json")
    big = time_command(cmd, SCALE_RUNS, what="summary --deep")
    small = bench.deep_timings.get("raw")
    if small is None:  # the deep rows did not run (or failed): time the 1M map here
        small_path = bench.inputs.map_raw
        small = time_command(inspector_cmd("summary", str(small_path), "--deep", "--json"), cfg.runs)
    small_n = bench.inputs.map_count
    rows = [
        timed_row(
            f"summary --deep, {count:,}-entry u64 map (raw, random order)",
            big,
            limit=SCALE_FLAT_X * small.median * count / small_n,
            limit_text=f"linear: ≤ {SCALE_FLAT_X:g}× the {small_n:,}-entry time per entry",
            reference=small.median * count / small_n,
            note=(
                f"{path.stat().st_size / 1e6:,.0f} MB; count and entries_sha256 match the forge; "
                f"per entry {big.median / count * 1e9:.0f} ns vs {small.median / small_n * 1e9:.0f} ns at "
                f"{small_n:,} ({small.median:.3f} s)"
            ),
        ),
        Row(
            f"summary --deep peak RSS, {count:,} vs {small_n:,} entries",
            big.rss_mb,
            "MB",
            SCALE_FLAT_X * small.rss_mb,
            f"flat: ≤ {SCALE_FLAT_X:g}× the {small_n:,}-entry run",
            big.rss_mb / small.rss_mb if small.rss_mb else None,
            big.rss_mb <= SCALE_FLAT_X * small.rss_mb,
            big.rss_mb,
            note=f"{small.rss_mb:.0f} MB at {small_n:,} entries",
        ),
    ]
    rows.append(tui_paint_row(bench, path, f"{count:,}-entry map"))
    rows.append(scroll_stall_row(bench, path, f"{count:,}-entry map"))
    return rows


def tui_paint_row(bench: Bench, path: Path, label: str) -> Row:
    """First paint, judged from the end of the imports (see the module); one untimed run first."""
    cfg = bench.cfg
    target = f"TUI first screen ({label}), after the imports"
    limit_text = f"≤ {SCALE_TUI_PAINT_LIMIT_S:g} s"
    paints: list[float] = []
    whole: list[float] = []
    imports: list[float] = []
    rss = 0
    detail = ""
    for i in range(cfg.tui_runs + 1):  # the first run only warms caches
        data, child = run_tui_probe("paint", path, bench.workdir)
        if "error" in data:
            return na_row(target, limit_text, str(data["error"]))
        ready = data.get("ready") or data["settled"]
        if i:
            paints.append(ready - data["imported"])
            whole.append(ready - child.spawn)
            imports.append(data["imported"] - data["t0"])
        rss = max(rss, child.rss_kb)
        detail = (
            f"load {data['created'] - data['imported']:.2f} s, "
            f"app → first paint {ready - data['created']:.2f} s"
        )
    return timed_row(
        target,
        Timing(paints, rss, 0),
        limit=SCALE_TUI_PAINT_LIMIT_S,
        limit_text=limit_text,
        note=(
            f"open + first screen + paint (last run: {detail}); process start → first paint "
            f"{statistics.median(whole):.2f} s, of which importing Textual and the app "
            f"{statistics.median(imports):.2f} s"
        ),
    )


def scroll_stall_row(bench: Bench, path: Path, label: str) -> Row:
    """Longest event-loop stall of the TUI probe's scroll through the map's entries."""
    name = f"TUI scroll of the {label}: longest stall"
    limit_text = f"≤ {SCALE_TUI_STALL_LIMIT_S:g} s event-loop block"
    _log(f"  TUI scroll probe on {path.name} …")
    data, child = run_tui_probe("scroll", path, bench.workdir, keys=bench.cfg.tui_keys)
    why = data.get("error") or data.get("scroll_error")
    if why:
        return na_row(name, limit_text, str(why))
    stall = float(data["stall_max_s"])
    return Row(
        name,
        stall,
        "s",
        SCALE_TUI_STALL_LIMIT_S,
        limit_text,
        stall / SCALE_TUI_STALL_LIMIT_S,
        stall <= SCALE_TUI_STALL_LIMIT_S,
        child.rss_kb / 1024,
        samples=[stall],
        note=(
            f"{data['keys']} keys over {data['pages']} pages; pilot round trip per key: median "
            f"{data['key_median_s'] * 1000:.0f} ms, max {data['key_max_s'] * 1000:.0f} ms; "
            f"'{data['deep_page']}' built in {data['deep_page_load_s']:.2f} s (worker)"
        ),
    )


def prepare_all(workdir: Path, *, quick: bool = False) -> None:
    """Forge (or find cached) every input of the full bench in ``workdir``, timing nothing, so a later
    ``stable-inspect bench --workdir DIR`` only times. The 20M map alone takes ~11 CPU-minutes."""
    from inspector.bench.inputs import prepare_inputs
    from inspector.bench.model import FULL, QUICK
    from inspector.bench.real import prepare_pairs

    cfg = QUICK if quick else FULL
    workdir.mkdir(parents=True, exist_ok=True)
    prepare_inputs(cfg, workdir)
    prepare_pairs(workdir, cfg.dense_mib, cfg.patches)
    if cfg.scale_entries:
        scale_map(workdir, cfg.scale_entries)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m inspector.bench.scale", description="Forge the bench's inputs into a work directory."
    )
    parser.add_argument("workdir", help="the directory later passed to stable-inspect bench --workdir")
    parser.add_argument("--quick", action="store_true", help="the inputs of bench --quick instead")
    args = parser.parse_args()
    prepare_all(Path(args.workdir), quick=args.quick)
