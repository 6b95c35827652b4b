"""``stable-inspect check PATH [--json] [--no-scan]``: the diagnosis and every finding.

Exit status: 0 when there is no error finding, 1 when there is, 2 when the input cannot be read (the
CLI turns ``InputError``/``UsageError`` into that). ``--json`` prints the same object as
``summary --json``, with the diagnosis, findings, ``stable_save`` and ``reconstructed`` filled in.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from inspector.analysis.forensics import refresh_diagnosis, run_forensics
from inspector.jsonout import JsonObject, json_default
from inspector.model import Finding
from inspector.safe_text import safe_rich_text

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.session import Session

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
MAX_RANGES_SHOWN = 3


def prepare(path: str, *, did: str | None = None, schema: str | None = None, scan: bool = True) -> Session:
    """Load, walk every structure fully, then run the forensics (so the diagnosis sees every finding)."""
    from inspector.session import load

    session = load(path, did=did, schema=schema, forensics=False)
    analysis = session.analysis
    analysis.deep()
    run_forensics(analysis, scan=scan, deep=True)
    _apply_session_choices(session)
    refresh_diagnosis(analysis)
    return session


def _apply_session_choices(session: Session) -> None:
    """Structures found by the reconstruction get the schema settings and .did names too."""
    for s in session.analysis.structures:
        if s.settings or not session.schema:
            s.names = s.names or session.names
            continue
        ids = s.memory_id if isinstance(s.memory_id, list) else [s.memory_id]
        s.settings = next((session.schema[str(i)] for i in ids if str(i) in session.schema), {})
        s.names = s.names or session.names


def public_json(analysis: Analysis) -> JsonObject:
    """``analysis.to_json()`` without the in-process hooks (extras whose key starts with '_')."""
    return {k: v for k, v in analysis.to_json().items() if not k.startswith("_")}


def _ranges_text(f: Finding) -> str:
    if not f.physical_ranges:
        return ""
    shown = ", ".join(f"{s:#x}..{e:#x}" for s, e in f.physical_ranges[:MAX_RANGES_SHOWN])
    more = len(f.physical_ranges) - MAX_RANGES_SHOWN
    return f"[{shown}{f' +{more} more' if more > 0 else ''}]"


def print_report(analysis: Analysis, console: Console) -> None:
    findings = analysis.all_findings()
    if analysis.diagnosis:
        console.print(Text("Diagnosis", style="bold red" if analysis.has_errors else "bold yellow"))
        for i, line in enumerate(analysis.diagnosis, 1):
            t = Text(f"{i:>2}. ", style="bold")
            t.append_text(safe_rich_text(line))
            console.print(t)
        console.print()
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n) or "none"
    console.print(Text(f"Findings: {summary}", style="bold"))
    for f in findings:
        t = Text()
        t.append(f"{f.severity:<8}", style=SEVERITY_STYLE.get(f.severity, ""))
        t.append(f"{f.code}", style="bold")
        if f.memory_id is not None:
            t.append_text(safe_rich_text(f"  (memory {f.memory_id})", "dim"))
        rng = _ranges_text(f)
        if rng:
            t.append(f"  {rng}", style="dim")
        t.append("\n    ")
        t.append_text(safe_rich_text(f.message))
        console.print(t)
    if not analysis.diagnosis and not counts["error"] and not counts["warning"]:
        n = len([s for s in analysis.structures if s.kind not in ("empty", "memory_manager")])
        console.print(
            Text(
                f"No problems found: {n} structure(s) decoded"
                + (" through a MemoryManager" if analysis.mm.present else "")
                + _layout_note(analysis)
                + "; every header, walk and allocator check passed.",
                style="green",
            )
        )


def _layout_note(analysis: Analysis) -> str:
    """Where the manager sits when that is not the usual byte 0, and nested managers (issue 11)."""
    mm = analysis.mm
    if not mm.present:
        return ""
    out = ""
    if mm.base_offset:
        out += f" at byte {mm.base_offset:,} (bytes before it belong to the application)"
    nested = [s.memory_id for s in analysis.structures if s.kind == "memory_manager"]
    if nested:
        out += " with a nested manager in memory " + ", ".join(str(m) for m in nested)
    return out


def run(args: argparse.Namespace) -> int:
    session = prepare(
        args.path, did=getattr(args, "did", None), schema=getattr(args, "schema", None), scan=not args.no_scan
    )
    analysis = session.analysis
    try:
        if args.json:
            print(json.dumps(public_json(analysis), indent=2, default=json_default))
        else:
            print_report(analysis, Console(highlight=False))
        return 1 if analysis.has_errors else 0
    finally:
        session.close()
