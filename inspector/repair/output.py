"""Writing the repaired snapshot: a copy of the input with the plan's writes, never the input itself.

A ``.bin`` goes through the CLI's atomic writer (``cli._write_output``: refuses the input, refuses an
existing path without ``--force``, writes ``OUT.partial`` and renames it). A snapshot folder becomes a
folder: every file copied, the new ``stable_memory.bin`` written the same way, ``metadata.json``'s
``stable_memory_size`` updated, all built in ``OUT.partial`` and renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from inspector.output import partial_path, removed_on_failure
from inspector.repair.model import RepairPlan
from inspector.snapshot import METADATA_FILE, STABLE_MEMORY_FILE
from inspector.sparse import data_ranges, is_zero

if TYPE_CHECKING:
    from inspector.snapshot import Snapshot

COPY_BLOCK = 4 << 20


def _copy_with_writes(snapshot: Snapshot, plan: RepairPlan, fh: BinaryIO) -> None:
    """The input's bytes (holes stay holes), then the plan's writes, then the final size."""
    buf, size = snapshot.buf, snapshot.size
    ranges = data_ranges(snapshot.fd, size) if snapshot.fd is not None else [(0, size)]
    for lo, hi in ranges:
        pos = lo
        while pos < hi:
            snapshot.check_unchanged()
            n = min(COPY_BLOCK, hi - pos)
            block = buf[pos : pos + n]
            if not is_zero(block):
                fh.seek(pos)
                fh.write(block)
            pos += n
    fh.truncate(plan.output_size)
    for w in plan.writes:
        fh.seek(w.start)
        fh.write(w.data)


def _refuse_input(out: Path, src: Path) -> None:
    from inspector.cli import UsageError

    if out.exists() and os.path.samefile(out, src) or out.resolve() == src.resolve():
        raise UsageError(f"{out}: refusing to overwrite the input snapshot")
    try:
        out.resolve().relative_to(src.resolve())
    except ValueError:
        return
    if src.is_dir():
        raise UsageError(f"{out}: refusing to write inside the input snapshot folder")


def write_repaired(snapshot: Snapshot, plan: RepairPlan, out: Path, force: bool) -> Path:
    """Write the repaired snapshot to ``out``; returns the stable-memory file written."""
    from inspector.cli import UsageError, _write_output

    src_file = snapshot.file_path
    if src_file is None:
        raise UsageError(f"{snapshot.path}: no stable-memory file to repair")
    _refuse_input(out, Path(snapshot.path))
    _refuse_input(out, Path(src_file))

    def writer(fh: BinaryIO) -> None:
        _copy_with_writes(snapshot, plan, fh)

    src = Path(snapshot.path)
    if not src.is_dir():
        _write_output(out, [src_file], force, writer)
        return out
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists (use --force to overwrite)")
    tmp = partial_path(out)
    _remove(tmp)
    try:
        with removed_on_failure(tmp, _remove):
            _build_folder(src, src_file, tmp, out, plan, writer)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return out / STABLE_MEMORY_FILE


def _build_folder(
    src: Path, src_file: Path, tmp: Path, out: Path, plan: RepairPlan, writer: Callable[[BinaryIO], None]
) -> None:
    """Every file of the snapshot folder ``src`` into ``tmp`` (the new stable memory written through
    ``writer``), then ``tmp`` renamed over ``out`` (an existing ``out`` moved aside first)."""
    from inspector.cli import _write_output

    tmp.mkdir()
    for entry in sorted(src.iterdir()):
        target = tmp / entry.name
        if entry.name == STABLE_MEMORY_FILE:
            _write_output(target, [src_file], False, writer)
        elif entry.name == METADATA_FILE and entry.is_file():
            meta = json.loads(entry.read_text())
            if isinstance(meta, dict):
                meta["stable_memory_size"] = plan.output_size
            target.write_text(json.dumps(meta, indent=2) + "\n")
        elif entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)
    if out.exists() or out.is_symlink():
        old = out.with_name(out.name + ".replaced")
        _remove(old)
        os.replace(out, old)
        os.replace(tmp, out)
        _remove(old)
    else:
        os.replace(tmp, out)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def export_stable_save(snapshot: Snapshot, plan: RepairPlan, out: Path, force: bool) -> int:
    """The stable_save message's exact bytes (what stable_restore would decode) to ``out``."""
    from inspector.cli import UsageError, _write_output

    if plan.stable_save is None:
        raise UsageError("--export-stable-save: this snapshot holds no stable_save message at offset 0")
    start, end = plan.stable_save
    _refuse_input(out, Path(snapshot.path))

    def writer(fh: BinaryIO) -> None:
        pos = start
        while pos < end:
            n = min(COPY_BLOCK, end - pos)
            fh.write(snapshot.buf[pos : pos + n])
            pos += n

    _write_output(out, [snapshot.file_path], force, writer)
    return end - start
