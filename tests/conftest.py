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


# Fixtures whose snapshot is NOT healthy by design: the incident steps (an error diagnosis is the point),
# the 0.7.1 reclaim whose memory 3 loses its map on reload, and the random-bytes negative control.
UNHEALTHY_FIXTURES = frozenset(
    {
        "migration/after_stable_save",
        "migration/after_stable_save_small",
        "migration/post_upgrade",
        "migration/post_upgrade_small",
        "incident_16page/after_stable_save",
        "incident_16page/post_upgrade",
        "reclaim_holes_v071",
        "random_noise",
    }
)

# Fixtures the tool does not support yet, each with its reason: the glob tests mark them xfail (strict,
# so a fixture that starts passing must leave this list). Issue 11 ended with this list empty.
NOT_YET_SUPPORTED: dict[str, str] = {}


def is_healthy(name: str) -> bool:
    return name not in UNHEALTHY_FIXTURES


def expected_files() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(FIXTURES.glob("**/expected.json"))


def expected_params() -> list[object]:
    """``expected_files()`` as pytest params, with the not-yet-supported fixtures marked xfail."""
    out: list[object] = []
    for p in expected_files():
        name = str(p.parent.relative_to(FIXTURES))
        marks = (
            [pytest.mark.xfail(reason=NOT_YET_SUPPORTED[name], strict=True)]
            if name in NOT_YET_SUPPORTED
            else []
        )
        out.append(pytest.param(p, id=name, marks=marks))
    return out


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
