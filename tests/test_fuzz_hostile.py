"""Property-based fuzzing of issue 16's hostile round, with the case builders ``tools/fuzz_cli.py --hostile``
uses (``tools/fuzz_hostile.py``): metadata keys and values, schema fields, ``-o`` target kinds, and a
snapshot that shrinks while it is read. Every invocation runs the real CLI in a subprocess (the shrinking
file raises a real SIGBUS, which no in-process test survives).

Properties: no traceback, no "internal error", no death by signal, status 0/1/2 with status 2 in one
line; plus each case's own check (nothing unsafe reaches the terminal; no target changes kind; the
input is never written). The default run is short; ``STABLE_INSPECT_FUZZ_EXAMPLES`` scales it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tools import fuzz_hostile as fh
from tools.fuzz_cli import classify

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "snapshots" / "samples"
SEEDS = ["healthy/stable_memory.bin", "after_stable_save/stable_memory.bin", "post_upgrade/stable_memory.bin"]
MEMORY_IDS = {"healthy": ["0", "4"], "after_stable_save": ["?b1", "raw"], "post_upgrade": ["0", "4"]}
LONG_RUN = int(os.environ.get("STABLE_INSPECT_FUZZ_EXAMPLES", "0") or 0)


def _settings(default: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=LONG_RUN or default,
        deadline=None,
        derandomize=not LONG_RUN,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def _run_case(
    build: Callable[[Path, Path, random.Random], fh.Case], seed_name: str, rnd: random.Random
) -> None:
    seed = SAMPLES / seed_name
    if not seed.exists():
        pytest.skip("no samples")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STABLE_INSPECT_DEBUG", "STABLE_INSPECT_NO_SUPERVISOR")
    }
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory(prefix="fuzz16_") as tmp:
        case = build(seed, Path(tmp), rnd)
        note(f"{case.name}: {case.runs} {case.env}")
        outs: list[tuple[int | None, str, str]] = []
        for argv in case.runs:
            proc = subprocess.run(
                [sys.executable, *(case.prefix or ["-m", "inspector"]), *argv],
                capture_output=True,
                cwd=ROOT,
                env={**env, **case.env},
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
            out = proc.stdout.decode("utf-8", "replace")
            err = proc.stderr.decode("utf-8", "replace")
            problem = classify(proc.returncode, err)
            assert problem is None, (problem, argv, err[-600:])
            outs.append((proc.returncode, out, err))
        extra = case.check(outs)
        assert extra is None, (extra, case.runs, [o[2][-300:] for o in outs])


def _mids(seed_name: str) -> list[str]:
    return MEMORY_IDS[seed_name.split("/")[0]]


@_settings(2)
@given(seed=st.sampled_from(SEEDS), rnd=st.randoms(use_true_random=False))
def test_hostile_metadata_never_reaches_the_terminal(seed: str, rnd: random.Random) -> None:
    _run_case(lambda s, w, r: fh.metadata_case(s, w, r), seed, rnd)


@_settings(3)
@given(seed=st.sampled_from(SEEDS), rnd=st.randoms(use_true_random=False))
def test_schema_fields_are_validated_never_crash(seed: str, rnd: random.Random) -> None:
    _run_case(lambda s, w, r: fh.schema_case(s, w, r, _mids(seed)), seed, rnd)


@_settings(8)
@given(seed=st.sampled_from(SEEDS), rnd=st.randoms(use_true_random=False))
def test_output_targets_are_never_replaced(seed: str, rnd: random.Random) -> None:
    _run_case(lambda s, w, r: fh.output_case(s, w, r, _mids(seed)), seed, rnd)


@_settings(3)
@given(seed=st.sampled_from(SEEDS), rnd=st.randoms(use_true_random=False))
def test_shrinking_file_never_kills_with_a_signal(seed: str, rnd: random.Random) -> None:
    _run_case(lambda s, w, r: fh.shrink_case(s, w, r, _mids(seed)), seed, rnd)
