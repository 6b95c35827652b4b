"""Opening a snapshot: a raw stable-memory file of any name, or a snapshot download directory.

The file is mapped read-only (``mmap.ACCESS_READ``) and never read whole, so a sparse snapshot of
hundreds of GiB opens instantly. Anything that makes the input unreadable raises ``InputError``; the
CLI turns it into one line on stderr and exit status 2. Anything that is merely odd about a readable
snapshot (size not a whole number of pages, metadata disagreeing with the file, an interrupted
download) becomes a ``Finding``.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspector.errors import InputError
from inspector.layouts import WASM_PAGE_SIZE
from inspector.memory import PhysicalMemory, Range
from inspector.model import Finding

STABLE_MEMORY_FILE = "stable_memory.bin"
METADATA_FILE = "metadata.json"
DOWNLOAD_PROGRESS_FILE = ".download_progress.json"
# icp-cli downloads snapshot blobs in chunks of this many bytes and records completed chunk offsets.
DOWNLOAD_CHUNK_SIZE = 2_000_000
SNAPSHOT_DIR_MARKERS = (
    METADATA_FILE,
    STABLE_MEMORY_FILE,
    "wasm_memory.bin",
    "wasm_module.bin",
    "wasm_chunk_store",
)
METADATA_KEYS = (
    "source",
    "taken_at_timestamp",
    "stable_memory_size",
    "wasm_memory_size",
    "wasm_module_size",
    "canister_version",
)


def os_reason(exc: BaseException) -> str:
    """The reason in an OSError without Python's ``[Errno N]`` and repeated file name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@dataclass
class Snapshot:
    path: Path  # what the user named (file or directory)
    file_path: Path | None  # the stable-memory file, None when the directory has none
    size: int
    memory: PhysicalMemory
    metadata: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    missing_ranges: list[Range] = field(default_factory=list)  # never downloaded (icp-cli)
    _mmap: mmap.mmap | None = None
    _fd: int | None = None

    @property
    def buf(self) -> Any:
        return self.memory.buf

    @property
    def fd(self) -> int | None:
        return self._fd

    def check_unchanged(self) -> None:
        """Raise ``InputError`` if the file shrank since it was mapped.

        Reading a mapped page that now lies past the end of the file kills the process with SIGBUS, and
        Python cannot turn that into an exception (the faulting read restarts after any handler). So the
        size is checked again before each long walk; after a shrink, reads are also bounded by the new
        size (they raise ``OutOfBounds``) in case a caller catches the error and goes on.
        """
        if self._fd is None:
            return
        try:
            now = os.fstat(self._fd).st_size
        except OSError as exc:
            raise InputError(f"{self.file_path}: cannot read: {exc.strerror or exc}") from None
        if now < self.size:
            self.memory.size = min(self.memory.size, now)
            raise InputError(
                f"{self.file_path}: the file shrank from {self.size:,} to {now:,} bytes while it was being read"
            )

    def close(self) -> None:
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                # A memoryview somewhere still points into the map; the OS reclaims it at exit.
                pass
            self._mmap = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Commands run in one process (tests, the TUI's diff) must not leak a descriptor per snapshot.
        # Only the descriptor: the map may still be read through a structure that outlives this object,
        # and it unmaps itself when the last reference goes.
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


# metadata.json and the download progress file are a few hundred bytes; anything far bigger is not one.
MAX_JSON_BYTES = 16 << 20


def _read_json(path: Path, what: str, findings: list[Finding]) -> dict[str, Any] | None:
    try:
        st = path.stat()
        # A FIFO (or device) here would block the read forever; a huge file would be read whole.
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if st.st_size > MAX_JSON_BYTES:
            raise OSError(f"{st.st_size:,} bytes is too big for a {what} file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        findings.append(
            Finding("warning", "metadata_unreadable", f"{what} {path.name} cannot be read: {os_reason(exc)}")
        )
        return None
    if not isinstance(data, dict):
        findings.append(Finding("warning", "metadata_unreadable", f"{what} {path.name} is not a JSON object"))
        return None
    return data


def _missing_from_progress(progress: dict[str, Any], total: int) -> list[Range] | None:
    """Ranges of stable memory an interrupted icp-cli download never fetched.

    icp-cli keeps, per blob, a ``frontier`` below which every chunk is complete and the set of chunk
    offsets completed ahead of it; everything else at or past the frontier is a zero-filled hole.
    """
    blob = progress.get("stable_memory")
    if not isinstance(blob, dict):
        return None
    frontier = blob.get("frontier")
    ahead = blob.get("ahead") or []
    if not isinstance(frontier, int) or not isinstance(ahead, list):
        return None
    done = sorted(o for o in ahead if isinstance(o, int) and frontier <= o < total)
    missing: list[Range] = []
    pos = min(max(frontier, 0), total)
    for off in done:
        if off > pos:
            missing.append((pos, off))
        pos = max(pos, min(total, off + DOWNLOAD_CHUNK_SIZE))
    if pos < total:
        missing.append((pos, total))
    return missing


def _resolve(path: Path) -> tuple[Path | None, dict[str, Any] | None, list[Finding], list[Range] | None]:
    """Find the stable-memory file for a path; read directory metadata if there is any."""
    findings: list[Finding] = []
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{path}: no such file or directory")
    if not path.is_dir():
        return path, None, findings, None
    markers = [m for m in SNAPSHOT_DIR_MARKERS if (path / m).exists()]
    if not markers:
        raise InputError(f"{path}: directory holds no snapshot (no {STABLE_MEMORY_FILE} or {METADATA_FILE})")
    metadata = None
    if (path / METADATA_FILE).exists():
        metadata = _read_json(path / METADATA_FILE, "snapshot metadata", findings)
    missing: list[Range] | None = None
    progress_path = path / DOWNLOAD_PROGRESS_FILE
    if progress_path.exists():
        progress = _read_json(progress_path, "download progress", findings)
        size = metadata.get("stable_memory_size") if metadata else None
        if progress is not None and isinstance(size, int):
            missing = _missing_from_progress(progress, size)
        if missing is None:
            missing = []
            findings.append(
                Finding(
                    "warning",
                    "download_incomplete",
                    f"{DOWNLOAD_PROGRESS_FILE} is present: the snapshot download was interrupted, and "
                    "parts of the stable memory may be zero-filled holes that were never downloaded",
                )
            )
    stable = path / STABLE_MEMORY_FILE
    if not stable.exists():
        return None, metadata, findings, missing
    return stable, metadata, findings, missing


def open_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Open a snapshot file or directory read-only. Raises ``InputError`` for unreadable input."""
    p = Path(path)
    file_path, metadata, findings, missing = _resolve(p)
    if file_path is None:
        declared = metadata.get("stable_memory_size") if metadata else None
        if declared not in (None, 0):
            raise InputError(
                f"{p}: metadata says stable memory is {declared} bytes, but there is no {STABLE_MEMORY_FILE}"
            )
        # dfx writes no stable_memory.bin when the canister's stable memory is empty.
        findings.append(
            Finding(
                "info",
                "stable_memory_empty",
                f"the snapshot has no {STABLE_MEMORY_FILE}: the canister's stable memory is empty",
            )
        )
        return Snapshot(p, None, 0, PhysicalMemory(b"", 0), metadata, findings)

    try:
        st = file_path.stat()
    except OSError as exc:
        raise InputError(f"{file_path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{file_path}: is a directory, not a snapshot file")
    if not stat.S_ISREG(st.st_mode):
        # FIFOs, sockets and devices cannot be mapped, and reading one could block forever.
        raise InputError(f"{file_path}: not a regular file")
    try:
        fd = os.open(file_path, os.O_RDONLY)
    except OSError as exc:
        raise InputError(f"{file_path}: cannot open: {exc.strerror or exc}") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise InputError(f"{file_path}: file is empty (0 bytes): nothing to inspect")
        try:
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise InputError(f"{file_path}: cannot map file: {os_reason(exc)}") from None
    except InputError:
        os.close(fd)
        raise

    snap = Snapshot(p, file_path, size, PhysicalMemory(mm, size, "stable memory", fd=fd), metadata, findings)
    snap._mmap, snap._fd = mm, fd
    if size % WASM_PAGE_SIZE:
        findings.append(
            Finding(
                "warning",
                "size_not_page_multiple",
                f"file size {size:,} is not a whole number of 64 KiB pages "
                f"({size // WASM_PAGE_SIZE} pages + {size % WASM_PAGE_SIZE} bytes): the snapshot may be truncated",
                [(size - size % WASM_PAGE_SIZE, size)],
            )
        )
    if metadata is not None:
        declared = metadata.get("stable_memory_size")
        if isinstance(declared, int) and declared != size:
            findings.append(
                Finding(
                    "error" if declared > size else "warning",
                    "metadata_size_mismatch",
                    f"metadata says stable_memory_size is {declared:,} bytes, but {file_path.name} has {size:,}",
                    [(min(declared, size), max(declared, size))],
                )
            )
    if missing:
        snap.missing_ranges = missing
        total = sum(e - s for s, e in missing)
        findings.append(
            Finding(
                "warning",
                "download_incomplete",
                f"the snapshot download was interrupted: {total:,} bytes in {len(missing)} range(s) were never "
                "downloaded and read as zeros",
                missing[:64],
            )
        )
    return snap


def metadata_summary(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata keys users care about first, then any others, as they are."""
    if not metadata:
        return {}
    out = {k: metadata[k] for k in METADATA_KEYS if k in metadata}
    for k, v in metadata.items():
        if k not in out and not isinstance(v, dict | list):
            out[k] = v
    return out
