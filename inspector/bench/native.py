"""The native references the deep-walk rows are judged against (issue 13, target 2).

The issue's reference is "the library's own whole-process walk": read the file into a ``VectorMemory``,
``BTreeMap::init``, iterate and decode every entry, count. In order of preference:

* **native-walk** (``tools/native_walk``, built from the real crate's source by its ``build.sh``; or the
  binary named by ``$STABLE_INSPECT_NATIVE_WALK``): exactly that walk. It judges the rows when present.
* **readback-0.7.2** (``../shared/tools`` or ``$STABLE_INSPECT_READBACK``): the real crate too, but it
  opens maps through a MemoryManager (a raw map is first placed as MemoryId 0 of an image) and hashes
  every entry and the whole virtual memory, so it is several times slower than the bare walk. With
  native-walk present it is timed as a second, labelled reference row; without, it judges (as before).
* **the issue's fixed figure** (``NATIVE_WALK_S``) when neither binary is here, said so in the notes.

Each binary is first run untimed on the input and must give the expected count and entries digest;
one that cannot walk the input is dropped (with the reason in the notes), never trusted blindly.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.bench.model import NATIVE_WALK_S, PROJECT_ROOT, BenchError, Row, Timing
from inspector.bench.runner import ChildRun, run_child

NATIVE_WALK_ENV = "STABLE_INSPECT_NATIVE_WALK"
READBACK_ENV = "STABLE_INSPECT_READBACK"
# Where tools/native_walk/build.sh leaves the binary, relative to the checkout.
NATIVE_WALK_BUILT = Path("tools", "native_walk", "target", "release", "native-walk")
READBACK_NAME = "readback-0.7.2"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def native_walk_binary(env: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT) -> Path | None:
    """``$STABLE_INSPECT_NATIVE_WALK`` if set (None if it names no executable: a named binary is never
    silently swapped for another), else the one ``build.sh`` built in this checkout, if any."""
    env = os.environ if env is None else env
    named = env.get(NATIVE_WALK_ENV)
    path = Path(named) if named else root / NATIVE_WALK_BUILT
    return path if _executable(path) else None


def native_walk_missing(env: Mapping[str, str] | None = None) -> str:
    """Why there is no bare native walk, for the notes of rows judged against something else."""
    env = os.environ if env is None else env
    named = env.get(NATIVE_WALK_ENV)
    if named:
        return f"${NATIVE_WALK_ENV} names no executable ({named})"
    return "no bare native walk built here (tools/native_walk/build.sh)"


def readback_binary(env: Mapping[str, str] | None = None, roots: Sequence[Path] | None = None) -> Path | None:
    env = os.environ if env is None else env
    named = env.get(READBACK_ENV)
    if named:
        return Path(named) if Path(named).is_file() else None
    for base in roots if roots is not None else (PROJECT_ROOT, Path.cwd()):
        p = base.parent / "shared" / "tools" / READBACK_NAME  # ../shared beside the checkout or the cwd
        if _executable(p):
            return p
    return None


@dataclass(frozen=True)
class Reference:
    """One native reference: ``kind`` is "native-walk", "readback" or "fixed" (the issue's figure)."""

    kind: str
    binary: Path | None = None

    @property
    def short(self) -> str:
        """How a limit names it: "≤ 3× native walk (0.36 s)"."""
        return {"native-walk": "native walk", "readback": "readback"}.get(
            self.kind, f"the issue's native {NATIVE_WALK_S:g} s"
        )

    @property
    def what(self) -> str:
        """What the reference row's note says it measured."""
        if self.kind == "native-walk":
            return (
                "native-walk (real crate, tools/native_walk): read into a VectorMemory, BTreeMap::init, "
                "iterate and decode every entry, count"
            )
        if self.kind == "readback":
            return (
                f"{READBACK_NAME} (real crate): MemoryManager image, init, iterate, hash every entry and the "
                "whole memory (slower than a bare walk)"
            )
        return f"no native binary here: the issue's fixed {NATIVE_WALK_S:g} s (quiet machine)"

    def command(
        self, snap: Path, memory_id: object, workdir: Path, *, digest: bool = False
    ) -> list[str] | None:
        """The walk of the u64 → u64 map at ``memory_id`` ("raw" or a MemoryManager id) of ``snap``;
        None where this reference cannot open that map (a nested manager's id, the fixed figure)."""
        if self.binary is None:
            return None
        mid = _memory_id(memory_id)
        if mid is None:
            return None
        if self.kind == "native-walk":
            return [str(self.binary), str(snap), "--memory", str(mid), *(["--sha256"] if digest else [])]
        if mid == "raw":  # readback opens maps through a manager: place the raw map as MemoryId 0
            from inspector.forge import build_mm_image

            wrapped = workdir / f"native-{snap.stem}.mm.bin"
            if not wrapped.exists() or wrapped.stat().st_mtime < snap.stat().st_mtime:
                build_mm_image(128, [(0, snap.read_bytes())]).write_to(wrapped, sparse=True)
            return [str(self.binary), "--file", str(wrapped), "--map", "0:u64u64"]
        return [str(self.binary), "--file", str(snap), "--map", f"{mid}:u64u64"]

    def parse(self, stdout: str, memory_id: object) -> tuple[object, object]:
        """(count, entries_sha256) from the check run's output."""
        data = json.loads(stdout)
        if self.kind == "native-walk":
            return data["count"], data.get("entries_sha256")
        mid = _memory_id(memory_id)
        got = data["maps"]["0" if mid == "raw" else str(mid)]
        return got["count"], got["entries_sha256"]


FIXED = Reference("fixed")


def _memory_id(memory_id: object) -> str | int | None:
    if memory_id == "raw":
        return "raw"
    if isinstance(memory_id, int) and 0 <= memory_id < 255:
        return memory_id
    if isinstance(memory_id, str) and memory_id.isdigit() and int(memory_id) < 255:
        return int(memory_id)
    return None  # e.g. "5/1", a map inside a nested manager


def candidate_references(walk: Path | None, readback: Path | None) -> list[Reference]:
    """The references to time, the judging one first: the bare walk, then readback; the issue's fixed
    figure only when there is neither."""
    refs = [Reference(kind, p) for kind, p in (("native-walk", walk), ("readback", readback)) if p]
    return refs or [FIXED]


def usable_references(
    refs: Sequence[Reference], snap: Path, memory_id: object, workdir: Path, count: int, digest: str
) -> tuple[list[tuple[Reference, list[str]]], list[str]]:
    """The references that walk this map and agree with ``count`` and ``digest`` (each checked by one
    untimed run), with their timed command lines; and why any other was dropped."""
    usable: list[tuple[Reference, list[str]]] = []
    dropped: list[str] = []
    for ref in refs:
        cmd = ref.command(snap, memory_id, workdir)
        check = ref.command(snap, memory_id, workdir, digest=True)
        if cmd is None or check is None:
            if ref.binary is not None:
                dropped.append(f"{ref.short} cannot open memory {memory_id}")
            continue
        out = subprocess.run(check, capture_output=True, text=True, check=False)
        try:
            got = ref.parse(out.stdout, memory_id)
        except (ValueError, KeyError, TypeError):
            got = None
        if got != (count, digest):
            why = out.stderr.strip().splitlines()[-1:] or [f"gave {got}"]
            dropped.append(f"{ref.short} could not walk it ({why[0][:120]})")
            continue
        usable.append((ref, cmd))
    return usable, dropped


def time_interleaved(cmds: Mapping[str, Sequence[str]], runs: int, *, warm: bool = True) -> dict[str, Timing]:
    """Each command ``runs`` times, in turns (a, b, c, a, b, c, …), after one untimed warm run each: on a
    shared machine the load drifts, and a ratio must compare runs taken under the same load."""
    if warm:
        for cmd in cmds.values():
            run_child(cmd)  # page cache and bytecode
    got: dict[str, list[ChildRun]] = {k: [] for k in cmds}
    for _ in range(runs):
        for key, cmd in cmds.items():
            r = run_child(cmd)
            if r.rc != 0:
                raise BenchError(f"{key} ({Path(cmd[0]).name}) exited with {r.rc}: {r.stderr[-300:]}")
            got[key].append(r)
    return {k: Timing([r.wall for r in v], max(r.rss_kb for r in v), 0) for k, v in got.items()}


def reference_row(target: str, timing: Timing, note: str) -> Row:
    return Row(target, timing.median, "s", None, "", None, None, timing.rss_mb, timing.times, note=note)
