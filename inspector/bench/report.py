"""The result table as text (rich), markdown, and the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from inspector.bench.model import FULL, Config, GiB, Row
from inspector.bench.runner import run_child
from inspector.bench.targets import _fmt_s

# --- report ---------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1)
    except (ValueError, OSError):
        pass
    floor = run_child(["true"]).rss_kb / 1024
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "rss_floor_mb": round(floor, 1),
        "load_average": load,
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def figure_text(r: Row) -> str:
    if r.figure is None:
        return "—"
    if r.unit == "s":
        text = _fmt_s(r.figure)
        if len(r.samples) > 1:
            text += f" ({min(r.samples):.3f}–{max(r.samples):.3f})"
        return text
    if r.unit == "MB":
        return f"{r.figure:.0f} MB"
    return f"{r.figure:g} {r.unit}"


def ratio_text(r: Row) -> str:
    return "" if r.ratio is None else f"{r.ratio:.2f}×"


def rss_text(r: Row) -> str:
    return "" if r.rss_mb is None else f"{r.rss_mb:.0f} MB"


def print_table(rows: list[Row], cfg: Config, machine: dict[str, Any], elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    runs = f"{cfg.runs} runs" + (
        f" ({cfg.interleaved_runs} where timed against a reference)"
        if cfg.interleaved_runs != cfg.runs
        else ""
    )
    title = f"stable-inspect bench ({cfg.name}: median of {runs}, min–max in brackets)"
    if cfg != FULL:
        # The limits are the issue's, stated for the full-size inputs.
        title += " — smaller inputs than the limits assume: indicative only"
    table = Table(title=title, title_justify="left")
    for col, kw in (
        ("target", {}),
        ("figure", {"justify": "right"}),
        ("limit", {}),
        ("ratio", {"justify": "right"}),
        ("result", {}),
        ("peak RSS", {"justify": "right"}),
        ("note", {"style": "dim", "overflow": "fold"}),
    ):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    style = {"pass": "green", "FAIL": "bold red", "n/a": "yellow", "ref": "dim"}
    for r in rows:
        table.add_row(
            r.target,
            figure_text(r),
            r.limit_text,
            ratio_text(r),
            f"[{style[r.result]}]{r.result}[/]",
            rss_text(r),
            r.note,
        )
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 200)  # a log file gets whole rows, not 80 folded columns
    console.print(table)
    console.print(
        f"[dim]ratio: figure ÷ reference (the native walk timed in the run, else the issue's 0.2 s; cmp -s; "
        f"the smaller snapshot) where there is "
        f"one, else figure ÷ limit. Peak RSS is each process's own; {machine['rss_floor_mb']:.0f} MB is the "
        f"floor any child reports (the launcher's size). {machine['cores']} cores, {machine['cpu']}, "
        f"Python {machine['python']}; load average {machine.get('load_average')} before, "
        f"{machine.get('load_average_end')} after; {elapsed:.0f} s in all.[/]"
    )


def markdown_table(rows: list[Row]) -> str:
    """The table as GitHub markdown (for the README)."""
    out = [
        "| target | figure | limit | ratio | result | peak RSS | note |",
        "| --- | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for r in rows:
        cells = [r.target, figure_text(r), r.limit_text, ratio_text(r), r.result, rss_text(r), r.note]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)
