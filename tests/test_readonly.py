"""Read-only, provably: every command on every fixture leaves the snapshot's bytes and modification time
unchanged, and output files never overwrite an input nor an existing file without ``--force``.

Two independent proofs per fixture:

* the file's sha256, size and mtime (ns) before and after running every command on it;
* a Python audit hook (PEP 578) that sees every ``open``/``os.open`` with write flags, every writable
  ``mmap``, and every truncate/rename/remove/utime/chmod of the snapshot while the commands run, so a
  write that restored the bytes (or failed half-way) would still be caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, ROOT, run_cli

SAMPLES = ROOT / "snapshots" / "samples"
SUFFIXES = (".bin", ".dump", ".golden")
NOT_STABLE_MEMORY = {"wasm_memory.bin", "wasm_module.bin"}
# How many fixtures the (slower) headless TUI opens; every fixture gets every CLI command.
TUI_FIXTURES = 2


def snapshot_files() -> list[Path]:
    out: list[Path] = []
    for d in (FIXTURES, SAMPLES):
        if d.is_dir():
            out += [
                p
                for p in sorted(d.rglob("*"))
                if p.is_file() and p.suffix in SUFFIXES and p.name not in NOT_STABLE_MEMORY
            ]
    return out


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT.parent)) for p in paths]


# --- the audit hook --------------------------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Events that change a file's bytes or metadata (the file a path leads to, following symlinks) …
_CONTENT_EVENTS = {
    "os.truncate": (0,),
    "os.utime": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "shutil.copyfile": (1,),
    "shutil.copymode": (1,),
    "shutil.copystat": (1,),
}
# … and events that change a directory entry (the name itself: removing a symlink to the snapshot is fine).
_NAME_EVENTS = {
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.rename": (0, 1),
    "os.replace": (0, 1),
    "os.link": (1,),
    "os.symlink": (1,),
    "shutil.move": (0, 1),
    "shutil.rmtree": (0,),
}


class _Watch:
    """Which files (by device and inode, so links and other spellings count) must not be written."""

    def __init__(self) -> None:
        self.files: dict[tuple[int, int], str] = {}
        self.names: set[str] = set()
        self.dirs: set[str] = set()
        self.violations: list[str] = []

    def ident(self, target: Any) -> tuple[int, int] | None:
        try:
            st = os.fstat(target) if isinstance(target, int) else os.stat(target)
        except (OSError, TypeError, ValueError):
            return None
        return st.st_dev, st.st_ino

    def _in_watched_dir(self, target: Any) -> str | None:
        if isinstance(target, int):
            return None
        with contextlib.suppress(TypeError, ValueError, OSError):
            name = os.path.abspath(os.fsdecode(target))
            if name in self.names:
                return name
            if os.path.dirname(name) in self.dirs:
                return f"a new file in {os.path.dirname(name)}"
        return None

    def touches(self, target: Any) -> str | None:
        """Whether writing through ``target`` (a path or descriptor) reaches a watched file."""
        if target is None:
            return None
        ident = self.ident(target)
        if ident is not None and ident in self.files:
            return self.files[ident]
        return self._in_watched_dir(target)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.files:
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writes = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            hit = self.touches(path) if writes else None
            if hit:
                self.violations.append(f"open({path!r}, {mode!r}, {flags!r}) → {hit}")
        elif event == "mmap.__new__":
            fileno, _length, access = args[0], args[1], args[2]
            if access != mmap.ACCESS_READ and fileno not in (-1, None):
                hit = self.touches(fileno)
                if hit:
                    self.violations.append(f"mmap(access={access}) of {hit}")
        elif event in _CONTENT_EVENTS or event in _NAME_EVENTS:
            content = event in _CONTENT_EVENTS
            for i in (_CONTENT_EVENTS if content else _NAME_EVENTS)[event]:
                if i >= len(args):
                    continue
                hit = self.touches(args[i]) if content else self._in_watched_dir(args[i])
                if hit:
                    self.violations.append(f"{event}{args!r} → {hit}")

    @contextlib.contextmanager
    def watching(self, paths: list[Path]) -> Iterator[None]:
        self.violations = []
        for p in paths:
            ident = self.ident(p)
            assert ident is not None
            self.files[ident] = str(p)
            self.names.add(os.path.abspath(p))
            self.dirs.add(os.path.abspath(p.parent))
        try:
            yield
        finally:
            self.files.clear()
            self.names.clear()
            self.dirs.clear()


_WATCH = _Watch()
# Audit hooks cannot be removed; this one returns at once while nothing is watched.
sys.addaudithook(_WATCH.hook)


# --- helpers ---------------------------------------------------------------------------------------------


def _fingerprint(p: Path) -> tuple[str, int, int, list[str]]:
    st = p.stat()
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest(), st.st_size, st.st_mtime_ns, sorted(os.listdir(p.parent))


def _structures(path: Path) -> list[tuple[str, str]]:
    from inspector.session import load

    session = load(path)
    try:
        out = []
        for s in session.analysis.structures:
            mid = s.memory_id[0] if isinstance(s.memory_id, list) else s.memory_id
            out.append((str(mid), s.kind))
        return out
    finally:
        session.close()


def _all_argvs(p: Path, out_dir: Path, other: Path) -> list[list[str]]:
    path = str(p)
    argvs = [
        ["summary", path],
        ["summary", path, "--deep"],
        ["summary", path, "--json"],
        ["summary", path, "--deep", "--json"],
    ]
    argvs += [["check", path], ["check", path, "--json"]]
    structures = _structures(p)
    for mid, kind in structures[:4]:
        if not mid.startswith("?"):
            # "?bN" names a memory the forensics rebuilt without knowing its id: only salvage takes it.
            argvs += [
                ["entries", path, "--memory", mid, "--format", "jsonl"],
                ["entries", path, "--memory", mid, "--format", "table", "--limit", "50"],
                # Nested ids ("5/1") contain a slash: not a file name as such.
                [
                    "extract",
                    path,
                    "--memory",
                    mid,
                    "-o",
                    str(out_dir / f"extract-{mid.replace('/', '_')}.bin"),
                    "--force",
                ],
            ]
        if kind == "btreemap":
            argvs.append(["salvage", path, "--memory", mid, "--format", "jsonl"])
    argvs += [["diff", path, str(other), "--json"], ["diff", str(other), path, "--json"]]
    return argvs


# --- every command on every fixture ------------------------------------------------------------------


@pytest.mark.parametrize("snapshot", snapshot_files(), ids=_ids(snapshot_files()))
def test_every_command_leaves_the_snapshot_untouched(snapshot: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(bytes(65_536))
    before = _fingerprint(snapshot)
    argvs = _all_argvs(snapshot, tmp_path, other)
    with _WATCH.watching([snapshot]):
        for argv in argvs:
            status, _out, err = run_cli(argv)
            assert status in (0, 1), (argv, err)
    assert not _WATCH.violations, _WATCH.violations
    assert _fingerprint(snapshot) == before, f"{snapshot} changed"


def test_snapshot_directory_untouched(tmp_path: Path) -> None:
    d = SAMPLES / "snapshot_dir"
    if not d.is_dir():
        pytest.skip("no snapshot_dir sample")
    files = sorted(p for p in d.iterdir() if p.is_file())
    before = {p: _fingerprint(p) for p in files}
    with _WATCH.watching(files):
        for argv in _all_argvs(d, tmp_path, d):
            status, _out, err = run_cli(argv)
            assert status in (0, 1), (argv, err)
    assert not _WATCH.violations, _WATCH.violations
    assert {p: _fingerprint(p) for p in files} == before


def test_tui_leaves_snapshots_untouched() -> None:
    import inspector.tui.app as tui
    from inspector.model import Region

    # Small ones with a MemoryManager and every structure kind, and the stable_save incident.
    wanted = ("vec_log_heap/stable_memory.bin", "migration/after_stable_save/stable_memory.bin")
    picked = [FIXTURES / w for w in wanted if (FIXTURES / w).is_file()][:TUI_FIXTURES]
    # Without the real-library fixtures, the forged incident samples (healthy, and after stable_save).
    samples = ROOT / "snapshots" / "samples"
    picked = picked or [
        samples / "healthy" / "stable_memory.bin",
        samples / "after_stable_save" / "stable_memory.bin",
    ]

    async def scenario(p: Path) -> None:
        app = tui.create_app(p)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            tree = app.region_tree
            for _ in range(2):
                for node in list(tree.root.children):
                    for sub in [node, *node.children[:8]]:
                        if isinstance(sub.data, Region) and not tree.is_populated(sub):
                            tree.populate_now(sub)
                            sub.expand()
                await pilot.pause()
            for key in ("n", "down", "down", "x", "right", "m", "t"):
                await pilot.press(key)
            await pilot.pause()

    for p in picked:
        before = _fingerprint(p)
        with _WATCH.watching([p]):
            asyncio.run(scenario(p))
        assert not _WATCH.violations, _WATCH.violations
        assert _fingerprint(p) == before, f"{p} changed"


def test_audit_hook_sees_writes(tmp_path: Path) -> None:
    """The proof above is only as good as the hook: it must notice the usual ways of writing."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(bytes(4096))
    attempts = [
        lambda: open(victim, "r+b").close(),  # noqa: SIM115
        lambda: os.close(os.open(victim, os.O_RDWR)),
        lambda: os.truncate(victim, 4096),
        lambda: os.utime(victim),
        lambda: (tmp_path / "sibling.partial").write_bytes(b"x"),
        lambda: os.remove(victim),
    ]
    for attempt in attempts:
        with _WATCH.watching([victim]):
            attempt()
        assert _WATCH.violations, attempt
    victim.write_bytes(bytes(4096))  # the last attempt removed it
    fd = os.open(victim, os.O_RDONLY)
    try:
        with _WATCH.watching([victim]):
            with contextlib.suppress(OSError, ValueError):
                mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE).close()
        assert _WATCH.violations
        with _WATCH.watching([victim]):
            mmap.mmap(fd, 0, access=mmap.ACCESS_READ).close()
            open(victim, "rb").close()  # noqa: SIM115
        assert not _WATCH.violations
    finally:
        os.close(fd)


# --- output files ----------------------------------------------------------------------------------------


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    p = tmp_path / "in" / "stable_memory.bin"
    p.parent.mkdir()
    src = SAMPLES / "healthy" / "stable_memory.bin"
    if not src.exists():
        pytest.skip("no healthy sample")
    shutil.copyfile(src, p)
    return p


def _extract(snap: Path, out: Path | str, *extra: str) -> tuple[int, str]:
    status, _out, err = run_cli(["extract", str(snap), "--memory", "4", "-o", str(out), *extra])
    return status, err


def test_extract_refuses_the_input_in_every_spelling(snap: Path, tmp_path: Path) -> None:
    before = _fingerprint(snap)
    link = tmp_path / "link.bin"
    link.symlink_to(snap)
    hard = tmp_path / "hard.bin"
    os.link(snap, hard)
    spellings = [
        snap,
        snap.parent / ".." / "in" / snap.name,
        link,
        hard,
    ]
    for out in spellings:
        for extra in ((), ("--force",)):
            status, err = _extract(snap, out, *extra)
            assert status == 2, (out, extra, err)
            assert "input" in err, err
    # The snapshot directory form: OUT is the stable_memory.bin inside it.
    status, err = run_cli(["extract", str(snap.parent), "--memory", "4", "-o", str(snap), "--force"])[0::2]
    assert status == 2, err
    assert _fingerprint(snap) == before


def test_extract_needs_force_to_overwrite(snap: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"keep me")
    status, err = _extract(snap, out)
    assert status == 2 and "--force" in err
    assert out.read_bytes() == b"keep me"
    status, err = _extract(snap, out, "--force")
    assert status == 0, err
    assert out.read_bytes() != b"keep me" and out.stat().st_size > 0
    assert not (tmp_path / "out.bin.partial").exists()


def test_extract_partial_file_cannot_redirect_the_write(snap: Path, tmp_path: Path) -> None:
    """A planted OUT.partial symlink or hard link to the input must not make extract write into it."""
    before = _fingerprint(snap)
    for kind in ("symlink", "hardlink"):
        out = tmp_path / f"out-{kind}.bin"
        partial = out.with_name(out.name + ".partial")
        if kind == "symlink":
            partial.symlink_to(snap)
        else:
            os.link(snap, partial)
        with _WATCH.watching([snap]):
            status, err = _extract(snap, out)
        assert status == 0, err
        assert not _WATCH.violations, _WATCH.violations
        assert _fingerprint(snap) == before
        assert out.stat().st_size > 0 and not partial.exists()


def test_extract_of_a_truncated_snapshot_leaves_no_partial_file(snap: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.bin"
    cut.write_bytes(snap.read_bytes()[: 65_536 + 100])
    out = tmp_path / "out.bin"
    status, err = _extract(cut, out)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "out.bin.partial").exists()


def test_tui_export_refuses_input_and_existing(snap: Path, tmp_path: Path) -> None:
    import inspector.views.export as export

    link = tmp_path / "link.bin"
    link.symlink_to(snap)
    for out in (snap, link, snap.parent / ".." / "in" / snap.name):
        with pytest.raises(export.ExportError):
            export.check_output(out, [snap], overwrite=True)
    existing = tmp_path / "existing.json"
    existing.write_text("{}")
    with pytest.raises(export.ExportError):
        export.check_output(existing, [snap], overwrite=False)
    assert export.check_output(existing, [snap], overwrite=True) == existing
    # write_atomic through a planted .partial link leaves the input alone.
    before = _fingerprint(snap)
    target = tmp_path / "export.bin"
    target.with_name("export.bin.partial").symlink_to(snap)
    export.write_atomic(target, lambda fh: fh.write(b"exported"))
    assert target.read_bytes() == b"exported"
    assert _fingerprint(snap) == before
