"""Issue 16 items 5 and 8: every argument and schema field is validated at the boundary with a message
that names it; the catch-all says "internal error, please report" and is never a user's error.

Each case runs ``main`` in-process *without* STABLE_INSPECT_DEBUG, so a bug hidden by the catch-all
would show up as the "internal error" line these tests forbid.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from unittest import mock

import pytest

from inspector import cli
from inspector.cli import main
from inspector.forge import RawImage
from inspector.forge.structures import VEC_MAGIC, _vec_header
from inspector.structures import vec as vec_module

ROOT = Path(__file__).resolve().parent.parent
HEALTHY = ROOT / "snapshots" / "samples" / "healthy"
AFTER = ROOT / "snapshots" / "samples" / "after_stable_save"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {k: v for k, v in os.environ.items() if k != "STABLE_INSPECT_DEBUG"}
    with (
        mock.patch.dict(os.environ, env, clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse
            status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


def _one_line_error(status: int, err: str, *words: str) -> None:
    assert status == 2, err
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    assert "internal error" not in err and "Traceback" not in err and "Errno" not in err
    for w in words:
        assert w in lines[0], err


@pytest.fixture
def need_samples() -> None:
    if not HEALTHY.is_dir():
        pytest.skip("no samples")


@pytest.mark.parametrize(
    "value, words",
    [
        ("0", ("key_size", "1 to")),
        ("-1", ("key_size", "1 to")),
        ('"abc"', ("key_size", "'abc'")),
        ("true", ("key_size", "True")),
        ("1.5", ("key_size", "1.5")),
    ],
)
@pytest.mark.parametrize("command", ["summary", "check", "entries"])
def test_schema_key_size_is_checked_everywhere(
    need_samples: None, tmp_path: Path, value: str, words: tuple[str, ...], command: str
) -> None:
    schema = tmp_path / "s.toml"
    schema.write_text(f"[memory.4]\nkey_size = {value}\n")
    extra = ["--memory", "4"] if command == "entries" else []
    status, _, err = _run([command, str(HEALTHY), *extra, "--schema", str(schema)])
    _one_line_error(status, err, "schema", *words)


@pytest.mark.parametrize("command", ["summary", "check", "entries", "salvage"])
def test_unknown_value_type_is_rejected_by_every_command(
    need_samples: None, tmp_path: Path, command: str
) -> None:
    schema = tmp_path / "s.toml"
    schema.write_text('[memory.4]\nvalue = "nosuchtype"\n')
    extra = ["--memory", "4"] if command in ("entries", "salvage") else []
    status, _, err = _run([command, str(HEALTHY), *extra, "--schema", str(schema)])
    _one_line_error(status, err, "nosuchtype", "[memory.4] value")


def test_schema_fields_of_the_wrong_type(need_samples: None, tmp_path: Path) -> None:
    schema = tmp_path / "s.toml"
    schema.write_text("[memory.4]\nkey = 5\n")
    status, _, err = _run(["summary", str(HEALTHY), "--schema", str(schema)])
    _one_line_error(status, err, "[memory.4] key must be a string")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["entries", "{h}", "--memory", "4", "--key-size", "0"], ("--key-size", ">= 1")),
        (["entries", "{h}", "--memory", "4", "--key-size", "x"], ("--key-size",)),
        (["entries", "{h}", "--memory", "4", "--limit", "-1"], ("--limit",)),
        (["entries", "{h}", "--memory", "?b" + "9" * 5000], ("--memory", "bucket number out of range")),
        (["entries", "{h}", "--memory", "9" * 5000], ("--memory", "out of range")),
        (["extract", "{h}", "--memory", "?b" + "1" * 5000, "-o", "{t}/x"], ("--memory",)),
        (["extract", "{h}", "--memory", "4", "-o", ""], ("empty",)),
        (["extract", "{h}", "--memory", "4", "-o", "{h}/stable_memory.bin/x"], ("Not a directory",)),
        (["summary", "{h}", "--schema", "{t}/missing.toml"], ("No such file or directory",)),
        (["salvage", "{a}", "--memory", "4", "--reference", "{t}/nope"], ("nope", "no such file")),
    ],
)
def test_arguments_fail_with_one_line_naming_them(
    need_samples: None, tmp_path: Path, argv: list[str], words: tuple[str, ...]
) -> None:
    argv = [a.format(h=HEALTHY, t=tmp_path, a=AFTER) for a in argv]
    status, _, err = _run(argv)
    _one_line_error(status, err, *words)


def test_argparse_escapes_escape_sequences_from_argv(need_samples: None) -> None:
    status, _, err = _run(["summary", str(HEALTHY), "\x1b[5mzz"])
    assert status == 2
    assert "\x1b" not in err and "\\x1b[5mzz" in err


def test_catch_all_says_internal_error_please_report(need_samples: None) -> None:
    def boom(args: object) -> int:
        raise KeyError("deliberate")

    with mock.patch.dict(cli.HANDLERS, {"summary": boom}):
        status, _, err = _run(["summary", str(HEALTHY)])
    assert status == 2
    assert err.startswith("stable-inspect: internal error, please report: KeyError: ")
    assert len(err.splitlines()) == 1


def test_os_error_is_reported_without_errno(need_samples: None) -> None:
    def disk_full(args: object) -> int:
        raise OSError(28, "No space left on device", "/some/out.bin")

    with mock.patch.dict(cli.HANDLERS, {"summary": disk_full}):
        status, _, err = _run(["summary", str(HEALTHY)])
    assert status == 2
    assert err == "stable-inspect: /some/out.bin: No space left on device\n"


def test_zero_sized_vec_says_the_listing_stops_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vec_module, "MAX_ZERO_SIZED_ELEMENTS", 10)
    img = RawImage(1)
    img.write(0, _vec_header(VEC_MAGIC, 50, 0, True))
    path = tmp_path / "vec0.bin"
    img.write_to(path)
    for fmt in ("jsonl", "table"):
        status, out, err = _run(["entries", str(path), "--memory", "raw", "--format", fmt])
        assert status == 0, err
        if fmt == "jsonl":
            assert len(out.splitlines()) == 10
        assert "vec_out_of_bounds" in err and "50 zero-sized elements" in err and "first 10" in err
