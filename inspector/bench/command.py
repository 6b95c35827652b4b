"""``stable-inspect bench`` (and ``python -m inspector.bench``): parse the options, run the benchmark or
re-render a saved report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from inspector.bench.inputs import prepare_inputs
from inspector.bench.model import FULL, PROJECT_ROOT, QUICK, TINY, BenchError, Config, Row
from inspector.bench.report import machine_info, markdown_table, print_table
from inspector.bench.runner import close_launcher, compile_bytecode
from inspector.bench.targets import Bench


def run_benchmark(cfg: Config, workdir: Path, inputs_dir: Path | None = None) -> dict[str, Any]:
    """Build (or reuse) the inputs in ``workdir``, time every target, return the JSON-able report."""
    start = time.perf_counter()
    machine = machine_info()
    workdir.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    inputs = prepare_inputs(cfg, workdir)
    bench = Bench(cfg, inputs, workdir)
    bench.inputs_dir = inputs_dir
    rows = bench.run_all()
    elapsed = time.perf_counter() - start
    measured = [r for r in rows if r.passed is not None]
    try:
        # Other work on the machine skews every figure: the load before and after says how much.
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return {
        "config": asdict(cfg),
        "machine": machine,
        "elapsed_s": round(elapsed, 1),
        "all_passed": all(r.passed for r in measured),
        "rows": [{**asdict(r), "result": r.result} for r in rows],
    }


def _inside_project(path: Path) -> bool:
    try:
        path.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        return False
    return True


def rows_from_report(report: dict[str, Any]) -> list[Row]:
    return [Row(**{k: v for k, v in r.items() if k != "result"}) for r in report["rows"]]


def render(report: dict[str, Any], args: argparse.Namespace) -> None:
    rows = rows_from_report(report)
    if args.json:
        print(json.dumps(report, indent=2))
    elif getattr(args, "markdown", False):
        print(markdown_table(rows))
    else:
        print_table(rows, Config(**report["config"]), report["machine"], report["elapsed_s"])


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stable-inspect bench``; 0 when every measured target holds, 1 otherwise."""
    saved = getattr(args, "from_json", None)
    if saved:
        # Re-render a saved --json report (e.g. as markdown for the README) without re-running it.
        report = json.loads(Path(saved).read_text())
        render(report, args)
        return 0 if report["all_passed"] else 1
    cfg = TINY if getattr(args, "tiny", False) else QUICK if args.quick else FULL
    if args.workdir:
        workdir = Path(args.workdir)
        if _inside_project(workdir):
            print(
                f"stable-inspect bench: --workdir {workdir}: inputs are GiB-sized; put them outside the project",
                file=sys.stderr,
            )
            return 2
        cleanup = False
    else:
        workdir = Path(tempfile.mkdtemp(prefix="stable-inspect-bench-"))
        cleanup = True
    try:
        inputs_dir = getattr(args, "inputs", None)
        report = run_benchmark(cfg, workdir, Path(inputs_dir) if inputs_dir else None)
    except BenchError as exc:
        print(f"stable-inspect bench: {exc}", file=sys.stderr)
        return 2
    finally:
        close_launcher()
        if cleanup:
            shutil.rmtree(workdir, ignore_errors=True)
    render(report, args)
    return 0 if report["all_passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inspector.bench", description="Run the performance benchmark."
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quick", action="store_true", help="smaller inputs, fewer runs")
    p.add_argument(
        "--workdir", default=None, help="where to build (and keep) the inputs; default: a temp dir"
    )
    p.add_argument("--markdown", action="store_true", help="print the table as markdown (for the README)")
    p.add_argument("--from-json", metavar="FILE", help="render a saved --json report instead of running")
    p.add_argument(
        "--inputs", metavar="DIR", help="also time real snapshots in DIR that have an expected.json"
    )
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke tests only
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
