"""A loaded snapshot plus the user's decoding choices (.did names, schema): what every command works on."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspector.analysis.analyze import Analysis, analyze
from inspector.snapshot import InputError, Snapshot, open_snapshot, os_reason


@dataclass
class Session:
    snapshot: Snapshot
    analysis: Analysis
    names: dict[int, str] = field(default_factory=dict)  # Candid field-id hash → name, from --did
    schema: dict[str, dict[str, Any]] = field(default_factory=dict)  # memory id (str) → settings

    def close(self) -> None:
        self.snapshot.close()


# `--base OFFSET` of the command being run: where every snapshot it opens has its MemoryManager header
# (None: offset 0 or the page scan decides). Set once by the CLI for the whole command, so that every
# command (and the TUI's reload) honours it without threading it through each call.
BASE_OVERRIDE: int | None = None


# A .did or schema file is a few KiB: a FIFO given instead would block the read forever, and a huge file
# would be read whole, so both are refused up front.
MAX_TEXT_FILE_BYTES = 16 << 20


def _read_text(path: str, what: str) -> str:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: cannot read {what}: not a regular file")
        if st.st_size > MAX_TEXT_FILE_BYTES:
            raise InputError(f"{path}: cannot read {what}: {st.st_size:,} bytes is too big for one")
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read {what}: {os_reason(exc)}") from None


def load_did(path: str | None) -> dict[int, str]:
    if not path:
        return {}
    text = _read_text(path, ".did file")
    from inspector.decode.did import names_from_did
    from inspector.decode.did_check import DidSyntaxError, check_did

    try:
        check_did(text)
    except DidSyntaxError as exc:
        # Half-read names would leave some fields unnamed without a word: refuse, saying where.
        raise InputError(f"{path}: not a valid .did file: {exc}") from None
    return names_from_did(text)


def load_schema(path: str | None) -> dict[str, dict[str, Any]]:
    """A TOML file with one table per memory, e.g.::

    [memory.4]
    kind = "btreemap"
    key = "text"
    value = "candid"
    key_size = 8        # optional: fixed-size B-tree keys of 8 bytes (no length prefix)
    """
    if not path:
        return {}
    text = _read_text(path, "schema")
    import tomllib  # (here: only a schema needs it, and every command loads this module)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: schema is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nesting level of arrays and inline tables
        raise InputError(f"{path}: schema is not valid TOML: nested too deeply") from None
    memories = data.get("memory", {})
    if not isinstance(memories, dict):
        raise InputError(f"{path}: schema needs [memory.ID] tables")
    out: dict[str, dict[str, Any]] = {}
    for mid, settings in memories.items():
        if not isinstance(settings, dict):
            raise InputError(f"{path}: [memory.{mid}] must be a table")
        out[str(mid)] = dict(settings)
    problems = schema_problems(out)
    if problems:
        raise InputError(f"{path}: schema: " + "; ".join(problems))
    return out


# A fixed key size beyond this is no B-tree key (the library's bounded keys are u32-sized, but a
# node must fit in memory); it would only make the walker allocate.
MAX_KEY_SIZE = 1 << 24


def schema_problems(settings: dict[str, dict[str, Any]]) -> list[str]:
    """Every field of a schema checked once at the boundary, each problem naming the field, so every
    command (summary, check, entries, salvage, diff, the TUI) accepts and rejects the same schemas."""
    from inspector.decode.values import validate_schema_types

    problems: list[str] = []
    for mid, s in settings.items():
        for role in ("kind", "key", "value"):
            v = s.get(role)
            if v is not None and not isinstance(v, str):
                problems.append(f"[memory.{mid}] {role} must be a string, not {v!r}")
        ks = s.get("key_size")
        if ks is not None and ks != "auto":
            if isinstance(ks, bool) or not isinstance(ks, int):
                problems.append(
                    f"[memory.{mid}] key_size must be a whole number of bytes or 'auto', not {ks!r}"
                )
            elif not 1 <= ks <= MAX_KEY_SIZE:
                problems.append(f"[memory.{mid}] key_size must be 1 to {MAX_KEY_SIZE:,} bytes, not {ks}")
    typed = {m: {r: s[r] for r in ("key", "value") if isinstance(s.get(r), str)} for m, s in settings.items()}
    problems += validate_schema_types(typed)
    return problems


def load(
    path: str | Path,
    *,
    did: str | None = None,
    schema: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    forensics: bool = True,
    base: int | None = None,
    orphan_scan: bool = True,
) -> Session:
    names = load_did(did)
    settings = load_schema(schema)
    for mid, extra in (overrides or {}).items():
        settings.setdefault(mid, {}).update(extra)
    snapshot = open_snapshot(path)
    try:
        analysis = analyze(
            snapshot,
            options=settings,
            forensics=forensics,
            base=BASE_OVERRIDE if base is None else base,
            orphan_scan=orphan_scan,
        )
    except InputError:
        snapshot.close()
        raise
    session = Session(snapshot, analysis, names, settings)
    for s in analysis.structures:
        ids = s.memory_id if isinstance(s.memory_id, list) else [s.memory_id]
        s.settings = next((settings[str(i)] for i in ids if str(i) in settings), {})
        s.names = names
    return session
