"""Shared test helpers: where the real-library fixtures live, and a skip when they are absent."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"


def require_fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(
            f"real-library fixtures not found at {FIXTURES} (../shared/fixtures from the project root)"
        )
    return FIXTURES


def expected_files() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(FIXTURES.glob("**/expected.json"))


def fixture_ids() -> list[str]:
    return [str(p.parent.relative_to(FIXTURES)) for p in expected_files()]


def load_expected(name: str) -> dict:
    require_fixtures()
    return json.loads((FIXTURES / name / "expected.json").read_text())


@pytest.fixture
def fixtures_dir() -> Path:
    return require_fixtures()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process with real exceptions propagating (STABLE_INSPECT_DEBUG=1), so a bug
    fails the test instead of becoming a one-line message; returns (status, stdout, stderr)."""
    from inspector.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, {"STABLE_INSPECT_DEBUG": "1"}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def make_sparse(path: Path, size: int, writes: dict[int, bytes]) -> Path:
    """A file of ``size`` bytes that is one hole except for ``writes`` (offset → bytes)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in writes.items():
            f.seek(off)
            f.write(data)
    return path
