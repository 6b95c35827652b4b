"""``stable-inspect repair SNAPSHOT -o OUT [--reference OLD] [--assign '?b1=4' …] [--prefer live|salvaged]
[--dry-run] [--json] [--force] [--export-stable-save FILE]``.

Writes a NEW snapshot in which the real library finds the data again (see ``inspector.repair.plan`` for
the two incidents it repairs), then re-opens it with the project's own decoder as proof. The input is
never written; ``--dry-run`` prints the plan and writes nothing. Exit status: 0 repaired (or nothing to
repair), 1 the proof failed, 2 the repair cannot be planned or written (nothing was written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from inspector.repair.plan import RepairError, RepairPlan, make_plan

MAX_LISTED_CONFLICTS = 10


def _key_text(key: bytes) -> str:
    from inspector.safe_text import escape_control

    try:
        return repr(escape_control(key.decode("utf-8")))
    except UnicodeDecodeError:
        return key.hex()


def plan_lines(plan: RepairPlan, path: str) -> list[str]:
    case = {
        "header_clobbered": "MemoryManager header clobbered",
        "reinitialised": "MemoryManager re-initialised over old data",
        "nothing": "nothing to repair",
    }[plan.case]
    lines = [f"repair plan for {path} ({case})"]
    for w in plan.writes:
        lines.append(f"  write [{w.start:,}, {w.end:,}) {w.end - w.start:,} bytes: {w.what}")
    if plan.output_size > plan.input_size:
        lines.append(f"  grow the file from {plan.input_size:,} to {plan.output_size:,} bytes")
    if plan.restored:
        lines.append("restored:")
        lines.extend(f"  {r['text']}" for r in plan.restored)
    if plan.lost:
        lines.append("stays lost:")
        lines.extend(f"  {r['text']}" for r in plan.lost)
    conflicts = plan.conflicts
    if conflicts:
        lines.append(f"conflicts ({len(conflicts)}): one key, two different values")
        for c in conflicts[:MAX_LISTED_CONFLICTS]:
            have = "live and salvaged" if c.live is not None else f"{len(c.salvaged)} salvaged copies"
            kept = "neither written" if c.kept == "none" else f"{c.kept} kept"
            lines.append(f"  memory {c.memory_id} key {_key_text(c.key)}: {have} differ; {kept}")
        if len(conflicts) > MAX_LISTED_CONFLICTS:
            lines.append(f"  … {len(conflicts) - MAX_LISTED_CONFLICTS} more (see --json)")
    lines.extend(f"note: {n}" for n in plan.notes)
    return lines


def proof_lines(plan: RepairPlan, proof: Any, out: str) -> list[str]:
    lines = [f"proof: {out} re-opened with stable-inspect's decoder"]
    if not proof.manager_present:
        lines.append("  no MemoryManager found at the base offset")
    for mid, mp in sorted(plan.maps.items()):
        p = proof.maps[mid]
        lines.append(f"  {mp.line()}")
        state = (
            "matches the plan"
            if p.matches_plan
            else f"DOES NOT match the plan ({mp.count:,} entries, {mp.digest})"
        )
        lines.append(
            f"  memory {mid}: validated walk: {p.count:,} entries, {p.nodes:,} nodes, depth {p.depth}; "
            f"entries_sha256 {p.entries_sha256} ({state})"
        )
    if proof.error_findings:
        lines.append(f"  {len(proof.error_findings)} error finding(s):")
        lines.extend(f"    {e}" for e in proof.error_findings[:20])
    else:
        lines.append("  no error finding")
    return lines


def run(args: argparse.Namespace) -> int:
    from inspector.cli import UsageError
    from inspector.session import load

    session = load(args.path)
    reference = None
    try:
        session.snapshot.check_unchanged()
        if args.reference:
            reference = load(args.reference)
        try:
            plan = make_plan(
                session.analysis,
                prefer=args.prefer,
                reference=reference.analysis if reference is not None else None,
                reference_label=str(args.reference or ""),
                assign=list(args.assign or []),
            )
        except RepairError as exc:
            raise UsageError(str(exc)) from None
        if args.export_stable_save and args.dry_run:
            print(
                "stable-inspect: --dry-run: the stable_save message is not exported either", file=sys.stderr
            )
        elif args.export_stable_save:
            from inspector.repair.output import export_stable_save

            n = export_stable_save(session.snapshot, plan, Path(args.export_stable_save), args.force)
            print(
                f"stable-inspect: wrote the {n:,}-byte stable_save message to {args.export_stable_save}",
                file=sys.stderr,
            )
        out: dict[str, Any] = {"input": str(args.path), "output": args.output, "dry_run": bool(args.dry_run)}
        out.update(plan.to_json())
        proof = None
        if plan.case == "nothing":
            out["written"] = False
        elif not args.dry_run:
            from inspector.repair.output import write_repaired
            from inspector.repair.proof import prove

            write_repaired(session.snapshot, plan, Path(args.output), args.force)
            out["written"] = True
            proof = prove(args.output, plan)
            out["proof"] = proof.to_json()
        else:
            out["written"] = False
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            for line in plan_lines(plan, str(args.path)):
                print(line)
            if plan.case == "nothing":
                print("nothing written")
            elif args.dry_run:
                print(
                    f"dry run: nothing written ({len(plan.written_ranges)} range(s) would be written to {args.output})"
                )
            else:
                print(f"wrote {args.output} ({plan.output_size:,}-byte stable memory)")
                assert proof is not None
                for line in proof_lines(plan, proof, args.output):
                    print(line)
        return 0 if proof is None or proof.ok else 1
    finally:
        session.close()
        if reference is not None:
            reference.close()
