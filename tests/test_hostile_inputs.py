"""Inputs that are not snapshots, or barely: every command answers with findings (readable input) or with
one line on stderr and exit status 2 (unreadable input), never with a traceback, a hang or a crash.

Most cases call ``inspector.cli.main`` in-process with ``STABLE_INSPECT_DEBUG=1`` so that an unexpected
exception propagates and fails the test. FIFOs and files that shrink while mapped run the real CLI in a
subprocess: a FIFO could block the process forever, and a read of a mapped page past the new end of a
shrunk file kills it with SIGBUS.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_fixtures, run_cli

SUBPROCESS_TIMEOUT = 60


def command_argvs(path: str, memory: str, out: str, other: str | None = None) -> list[tuple[str, list[str]]]:
    """Every command of the CLI (each output format) on one input, as (command, argv)."""
    return [
        ("summary", ["summary", path]),
        ("summary", ["summary", path, "--deep"]),
        ("summary", ["summary", path, "--json"]),
        ("summary", ["summary", path, "--deep", "--json"]),
        ("entries", ["entries", path, "--memory", memory, "--format", "jsonl"]),
        ("entries", ["entries", path, "--memory", memory, "--format", "table"]),
        ("check", ["check", path]),
        ("check", ["check", path, "--json"]),
        ("salvage", ["salvage", path, "--memory", memory]),
        ("salvage", ["salvage", path, "--memory", memory, "--format", "jsonl"]),
        ("extract", ["extract", path, "--memory", memory, "-o", out, "--force"]),
        ("diff", ["diff", other or path, path, "--json"]),
    ]


def assert_unreadable(status: int, stderr: str, argv: list[str]) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert status == 2, f"{argv}: status {status}, stderr {stderr!r}"
    assert len(lines) == 1, f"{argv}: expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("stable-inspect: "), lines[0]
    assert "Traceback" not in stderr and "internal error" not in stderr


def memory_ids(path: Path) -> list[str]:
    from inspector.session import load

    session = load(path)
    try:
        return [
            str(s.memory_id[0] if isinstance(s.memory_id, list) else s.memory_id)
            for s in session.analysis.structures
        ]
    finally:
        session.close()


# --- unreadable inputs: exit 2, one line -----------------------------------------------------------------


def _missing(tmp: Path) -> Path:
    return tmp / "no_such_snapshot.bin"


def _empty_file(tmp: Path) -> Path:
    p = tmp / "empty.bin"
    p.write_bytes(b"")
    return p


def _empty_dir(tmp: Path) -> Path:
    p = tmp / "empty_dir"
    p.mkdir()
    return p


def _dir_without_snapshot(tmp: Path) -> Path:
    p = tmp / "not_a_snapshot_dir"
    p.mkdir()
    (p / "notes.txt").write_text("hello")
    return p


def _stable_memory_is_a_dir(tmp: Path) -> Path:
    p = tmp / "snap_dir_with_dir"
    (p / "stable_memory.bin").mkdir(parents=True)
    return p


def _symlink_loop(tmp: Path) -> Path:
    p = tmp / "loop.bin"
    os.symlink(p, p)
    return p


def _dangling_symlink(tmp: Path) -> Path:
    p = tmp / "dangling.bin"
    os.symlink(tmp / "gone.bin", p)
    return p


def _metadata_without_file(tmp: Path) -> Path:
    p = tmp / "snap_dir_missing_file"
    p.mkdir()
    (p / "metadata.json").write_text(json.dumps({"stable_memory_size": 65_536}))
    return p


UNREADABLE: dict[str, Callable[[Path], Path]] = {
    "missing": _missing,
    "empty_file": _empty_file,
    "empty_dir": _empty_dir,
    "dir_without_snapshot": _dir_without_snapshot,
    "stable_memory_is_a_dir": _stable_memory_is_a_dir,
    "symlink_loop": _symlink_loop,
    "dangling_symlink": _dangling_symlink,
    "metadata_without_file": _metadata_without_file,
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_unreadable_input_gives_one_line_and_status_2(kind: str, tmp_path: Path) -> None:
    path = str(UNREADABLE[kind](tmp_path))
    good = tmp_path / "good.bin"
    good.write_bytes(bytes(65_536))
    ran = 0
    for _name, argv in command_argvs(path, "raw", str(tmp_path / "out.bin"), other=str(good)):
        status, _out, err = run_cli(argv)
        assert_unreadable(status, err, argv)
        ran += 1
    assert ran >= 6
    assert not (tmp_path / "out.bin").exists()


def test_unreadable_old_side_of_diff(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(bytes(65_536))
    status, _out, err = run_cli(["diff", str(tmp_path / "missing.bin"), str(good), "--json"])
    assert_unreadable(status, err, ["diff"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied(tmp_path: Path) -> None:
    p = tmp_path / "secret.bin"
    p.write_bytes(bytes(65_536))
    p.chmod(0)
    status, _out, err = run_cli(["summary", str(p)])
    assert_unreadable(status, err, ["summary"])


def test_error_line_is_one_line_whatever_the_path(tmp_path: Path) -> None:
    # A path is data too: a newline or an escape sequence in it must not split or style the message.
    evil = tmp_path / "a\nb\x1b[2J\u202e.bin"
    status, _out, err = run_cli(["summary", str(evil)])
    assert_unreadable(status, err, ["summary"])
    assert "\x1b" not in err and "\u202e" not in err


# --- readable but broken: findings, never a traceback ----------------------------------------------------


def _bytes_inputs() -> dict[str, bytes]:
    rng = random.Random(7)
    return {
        "one_byte": b"\x00",
        "one_byte_M": b"M",
        "mgr_only": b"MGR",
        "mgr_header_cut": b"MGR\x01" + bytes(100),
        "btr_only": b"BTR\x02",
        "btr_header_cut": b"BTR\x02" + bytes(60),
        "didl_only": b"DIDL",
        "didl_garbage": b"DIDL" + bytes(rng.randrange(256) for _ in range(500)),
        "random_100k": bytes(rng.randrange(256) for _ in range(100_000)),
        "random_page": bytes(rng.randrange(256) for _ in range(65_536)),
        "zero_page": bytes(65_536),
        "ff_page": b"\xff" * 65_536,
        "scl_huge_value": b"SCL\x01\xff\xff\xff\xff" + bytes(100),
        "svc_huge_length": b"SVC\x01" + b"\xff" * 8 + b"\x08\x00\x00\x00\x01" + bytes(47) + bytes(64),
        "gli_huge_length": b"GLI\x01" + bytes(28) + b"\xff" * 8 + bytes(64),
    }


@pytest.mark.parametrize("kind", sorted(_bytes_inputs()))
def test_broken_bytes_answered_with_findings(kind: str, tmp_path: Path) -> None:
    p = tmp_path / "stable_memory.bin"
    p.write_bytes(_bytes_inputs()[kind])
    _all_commands_behave(p, tmp_path)


def _all_commands_behave(p: Path, tmp_path: Path) -> dict[str, object]:
    """Run every command on a readable snapshot; return the summary JSON document."""
    status, out, err = run_cli(["summary", str(p), "--deep", "--json"])
    assert status == 0, err
    doc = json.loads(out)
    mids = memory_ids(p) or ["raw"]
    for mid in dict.fromkeys([*mids[:2], "raw"]):
        for _name, argv in command_argvs(str(p), mid, str(tmp_path / "out.bin"), other=str(p)):
            status, _o, err = run_cli(argv)
            assert status in (0, 1, 2), (argv, status, err)
            assert "Traceback" not in err
            if status == 2:
                # Only a usage problem may give 2 here (e.g. no such memory, not a map): one line.
                assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, (argv, err)
    return doc


def test_truncated_fixtures_report_findings(tmp_path: Path) -> None:
    fixtures = require_fixtures()
    cases = [
        ("migration/pre_upgrade/stable_memory.bin", [2080, 34_848, 65_536 * 9 + 1]),
        ("vec_log_heap/stable_memory.bin", [65_536 + 8, 65_536 * 9]),
        ("btree_u64_many/stable_memory.bin", [99, 117, 600_000]),
        ("migration/after_stable_save/stable_memory.bin", [300, 40_000]),
    ]
    for name, cuts in cases:
        data = (fixtures / name).read_bytes()
        for cut in cuts:
            p = tmp_path / f"cut{cut}.bin"
            p.write_bytes(data[:cut])
            doc = _all_commands_behave(p, tmp_path)
            # A cut file is a broken snapshot: something must say so.
            assert doc["findings"] or doc["memory_manager"].get("present") is False, (name, cut)
            p.unlink()


# --- subprocess cases: FIFOs and files that shrink while mapped -------------------------------------------


def _run_subprocess(
    argv: list[str], env_extra: dict[str, str] | None = None, code: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STABLE_INSPECT_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(env_extra or {})
    cmd = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "inspector", *argv]
    try:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            cwd=str(ROOT),
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - the failure being tested for
        pytest.fail(f"{argv} did not finish within {SUBPROCESS_TIMEOUT} s (blocked?): {exc}")


def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "stable_memory.fifo"
    os.mkfifo(fifo)
    good = tmp_path / "good.bin"
    good.write_bytes(bytes(65_536))
    for _name, argv in command_argvs(str(fifo), "raw", str(tmp_path / "out.bin"), other=str(good)):
        proc = _run_subprocess(argv)
        assert_unreadable(proc.returncode, proc.stderr, argv)


def test_fifo_inside_snapshot_directory_does_not_block(tmp_path: Path) -> None:
    # dfx/icp snapshot directories: metadata.json and the download progress file are read whole.
    d = tmp_path / "snap"
    d.mkdir()
    (d / "stable_memory.bin").write_bytes(bytes(65_536))
    os.mkfifo(d / "metadata.json")
    os.mkfifo(d / ".download_progress.json")
    proc = _run_subprocess(["summary", str(d), "--json"])
    assert proc.returncode == 0, proc.stderr
    codes = {f["code"] for f in json.loads(proc.stdout)["findings"]}
    assert "metadata_unreadable" in codes


def test_stable_memory_fifo_inside_snapshot_directory(tmp_path: Path) -> None:
    d = tmp_path / "snap"
    d.mkdir()
    os.mkfifo(d / "stable_memory.bin")
    proc = _run_subprocess(["summary", str(d)])
    assert_unreadable(proc.returncode, proc.stderr, ["summary"])


def test_metadata_that_is_not_json(tmp_path: Path) -> None:
    d = tmp_path / "snap"
    d.mkdir()
    (d / "stable_memory.bin").write_bytes(bytes(65_536))
    # Deep nesting: json.loads recurses and raises RecursionError rather than ValueError.
    (d / "metadata.json").write_text("[" * 100_000)
    status, out, err = run_cli(["summary", str(d), "--json"])
    assert status == 0, err
    assert "metadata_unreadable" in {f["code"] for f in json.loads(out)["findings"]}


# A wrapper that truncates the snapshot at a chosen moment (right after it is mapped, or after the
# whole analysis), then runs the real CLI. Without a defence the next read of a page past the new end
# kills the process with SIGBUS (status -7).
SHRINK_WRAPPER = textwrap.dedent(
    """
    import os, sys
    when, victim, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    argv = sys.argv[4:]
    import inspector.session as session_mod

    if when == "after_open":
        real_open = session_mod.open_snapshot

        def open_and_shrink(*a, **k):
            snap = real_open(*a, **k)
            if os.path.samefile(a[0], victim):
                os.truncate(victim, size)
            return snap

        session_mod.open_snapshot = open_and_shrink
    else:
        real_load = session_mod.load

        def load_and_shrink(*a, **k):
            session = real_load(*a, **k)
            if os.path.samefile(a[0], victim):
                os.truncate(victim, size)
            return session

        session_mod.load = load_and_shrink
    from inspector.cli import main
    sys.exit(main(argv))
    """
)


@pytest.mark.parametrize("when", ["after_open", "after_load"])
def test_file_shrinking_while_mapped_is_not_a_crash(when: str, tmp_path: Path) -> None:
    fixtures = require_fixtures()
    seed = fixtures / "btree_big_values" / "stable_memory.bin"  # a map (memory 3) with overflow pages
    ran = 0
    for _name, argv_template in command_argvs("VICTIM", "3", str(tmp_path / "out.bin"), other=str(seed)):
        victim = tmp_path / "victim.bin"
        shutil.copyfile(seed, victim)
        argv = [str(victim) if a == "VICTIM" else a for a in argv_template]
        proc = _run_subprocess([when, str(victim), "4096", *argv], code=SHRINK_WRAPPER)
        assert proc.returncode != -signal.SIGBUS, f"{argv}: killed by SIGBUS"
        assert proc.returncode >= 0, f"{argv}: killed by signal {-proc.returncode}"
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
        # The snapshot changed under the tool: that is unreadable input, said in one line.
        assert_unreadable(proc.returncode, proc.stderr, argv)
        assert "shrank" in proc.stderr
        ran += 1
    assert ran >= 6


def test_check_unchanged_bounds_reads_after_a_shrink(tmp_path: Path) -> None:
    """After a detected shrink, reads past the new end raise OutOfBounds instead of touching the map."""
    from inspector.memory import OutOfBounds
    from inspector.snapshot import InputError, open_snapshot

    p = tmp_path / "s.bin"
    p.write_bytes(bytes(3 * 65_536))
    snap = open_snapshot(p)
    try:
        snap.check_unchanged()
        os.truncate(p, 65_536)
        with pytest.raises(InputError, match="shrank"):
            snap.check_unchanged()
        with pytest.raises(OutOfBounds):
            snap.memory.read(2 * 65_536, 16)
        assert snap.memory.read(0, 16) == bytes(16)
    finally:
        snap.close()


def test_open_command_on_unreadable_input_never_starts_the_ui(tmp_path: Path) -> None:
    for kind in ("missing", "empty_file", "empty_dir"):
        path = UNREADABLE[kind](tmp_path)
        for argv in (["open", str(path)], [str(path)]):
            status, _out, err = run_cli(argv)
            assert_unreadable(status, err, argv)


def test_did_and_schema_fifos_do_not_block(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(bytes(65_536))
    fifo = tmp_path / "names.fifo"
    os.mkfifo(fifo)
    for option in ("--did", "--schema"):
        proc = _run_subprocess(["summary", str(good), option, str(fifo)])
        assert_unreadable(proc.returncode, proc.stderr, [option])


def test_schema_nested_too_deeply(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(bytes(65_536))
    schema = tmp_path / "schema.toml"
    schema.write_text("a = " + "[" * 100_000)
    status, _out, err = run_cli(["summary", str(good), "--schema", str(schema)])
    assert_unreadable(status, err, ["--schema"])


def test_salvage_with_unreadable_reference(tmp_path: Path) -> None:
    from inspector.forge import RawImage, forge_u64_btreemap

    img = RawImage()
    img.place(forge_u64_btreemap(range(30), range(30)))
    good = tmp_path / "map.bin"
    img.write_to(good)
    for reference in (tmp_path / "missing.bin", _empty_file(tmp_path)):
        argv = ["salvage", str(good), "--memory", "raw", "--reference", str(reference)]
        status, _out, err = run_cli(argv)
        assert_unreadable(status, err, argv)


@pytest.mark.parametrize("kind", ["one_byte", "mgr_header_cut", "didl_garbage", "svc_huge_length"])
def test_tui_opens_broken_bytes(kind: str, tmp_path: Path) -> None:
    import asyncio

    import inspector.tui.app as tui

    p = tmp_path / "stable_memory.bin"
    p.write_bytes(_bytes_inputs()[kind])

    async def scenario() -> None:
        app = tui.create_app(p)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            for key in ("down", "right", "down", "n", "x", "m"):
                await pilot.press(key)
            await pilot.pause()

    asyncio.run(scenario())
