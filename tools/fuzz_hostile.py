"""The second hostile-input round (issue 16), shared by ``tools/fuzz_cli.py --hostile N`` and the
hypothesis tests: hostile ``metadata.json`` keys and values, schema fields, ``-o`` target kinds, and a
snapshot that shrinks while a command reads it.

Each ``*_case`` function builds one input in a work directory from a random generator and returns the
command lines to run plus a check of what must hold afterwards (beyond "no traceback, no internal
error, status 0/1/2, status 2 in one line", which the caller checks for every invocation).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Characters that must never reach a terminal raw (C0 but tab/newline, DEL, C1, bidi, separators).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]")
NASTY = ["\x1b[5m", "\x1b]0;t\x07", "\x9b31m", "\u202e", "[red]", "\r", "\x00", "\ud800", "é", "\U0001f600"]

# The command running under the shrink hook: ``Snapshot.check_unchanged`` truncates the file on its
# N-th call and otherwise passes, so the next mapped read past the new end raises a real SIGBUS.
SHRINK_HOOK = """
import os, sys
from inspector import snapshot
after, to = int(os.environ["CUT_ON_CALL"]), int(os.environ["CUT_TO"])
calls = 0
def cut(self):
    global calls
    calls += 1
    if calls == after:
        os.truncate(self.file_path, to)
snapshot.Snapshot.check_unchanged = cut
from inspector.cli import main
sys.argv = ["stable-inspect", *sys.argv[1:]]
sys.exit(main())
"""


@dataclass
class Case:
    name: str
    runs: list[list[str]]  # argv after the program name
    env: dict[str, str] = field(default_factory=dict)
    prefix: list[str] | None = None  # run ``python PREFIX… argv`` instead of ``python -m inspector``
    check: Callable[[list[tuple[int | None, str, str]]], str | None] = lambda outs: None


def hostile_text(rng: random.Random, long: bool = False) -> str:
    parts = [rng.choice(NASTY) for _ in range(rng.randint(1, 5))]
    if long:
        parts.append("x" * rng.choice([5_000, 100_000, 1_000_000]))
    return "".join(parts)


def hostile_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            hostile_text(rng),
            hostile_text(rng, long=True),
            10 ** rng.randint(1, 4000),
            -(2**63),
            1e308,
            None,
            True,
            [hostile_text(rng)],
            {hostile_text(rng): hostile_text(rng)},
        ]
    )


def _stdout_safe(outs: list[tuple[int | None, str, str]]) -> str | None:
    for _status, out, err in outs:
        m = UNSAFE.search(out + err)
        if m is not None:
            return f"raw {m.group()!r} reached the output"
    return None


def metadata_case(seed: Path, work: Path, rng: random.Random) -> Case:
    d = work / "snapdir"
    d.mkdir()
    shutil.copyfile(seed, d / "stable_memory.bin")
    meta: dict[str, Any] = {"stable_memory_size": seed.stat().st_size, "canister_version": 1}
    for _ in range(rng.randint(1, 6)):
        meta[hostile_text(rng)] = hostile_value(rng)
    if rng.random() < 0.3:
        meta["stable_memory_size"] = hostile_value(rng)
    text = json.dumps(meta, ensure_ascii=rng.random() < 0.5)
    (d / "metadata.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    p = str(d)
    runs = [["summary", p], ["summary", p, "--json"], ["check", p], ["check", p, "--json"]]
    return Case("metadata", runs, check=_stdout_safe)


SCHEMA_VALUES = [
    "0",
    "-1",
    '"abc"',
    "true",
    "1.5",
    "1e100",
    "99999999999999999999999999",
    '"auto"',
    "8",
    "[1, 2]",
    "{a = 1}",
    '"\\u001b[5m"',
]
SCHEMA_TYPES = ['"text"', '"candid"', '"u64"', '"nosuchtype"', "5", '"vec<"', '"record { a : nat }"', '""']


def schema_case(seed: Path, work: Path, rng: random.Random, memory_ids: list[str]) -> Case:
    mid = rng.choice(memory_ids or ["raw"])
    lines = [
        f"[memory.{rng.choice([mid, '4', 'raw', '?b1', hostile_text(rng).encode('unicode_escape').decode()])}]"
    ]
    lines[0] = lines[0] if rng.random() < 0.9 else f'[memory."{mid}"]'
    for name, pool in (("key_size", SCHEMA_VALUES), ("key", SCHEMA_TYPES), ("value", SCHEMA_TYPES)):
        if rng.random() < 0.7:
            lines.append(f"{name} = {rng.choice(pool)}")
    if rng.random() < 0.3:
        lines.append("kind = " + rng.choice(['"btreemap"', '"cell"', "5", '"x"']))
    schema = work / "schema.toml"
    schema.write_text("\n".join(lines) + "\n")
    p, s = str(seed), str(schema)
    runs = [
        ["summary", p, "--schema", s],
        ["check", p, "--schema", s],
        ["entries", p, "--memory", mid, "--schema", s, "--format", "jsonl"],
    ]
    return Case("schema", runs)


OUTPUT_KINDS = (
    "stdout_dash",
    "dev_stdout",
    "dev_null",
    "fifo",
    "link_to_file",
    "link_to_dir",
    "link_dangling",
    "link_to_null",
    "directory",
    "empty",
    "under_a_file",
    "the_input",
    "existing_file",
    "new_file",
)


def _kind(path: str) -> str:
    try:
        m = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    for test, name in (
        (stat.S_ISLNK, "link"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISREG, "file"),
    ):
        if test(m):
            return name
    return "other"


def output_case(seed: Path, work: Path, rng: random.Random, memory_ids: list[str]) -> Case:
    kind = rng.choice(OUTPUT_KINDS)
    snap = work / "in.bin"
    shutil.copyfile(seed, snap)
    before = snap.read_bytes()
    target: str
    if kind == "stdout_dash":
        target = "-"
    elif kind == "dev_stdout":
        target = "/dev/stdout"
    elif kind == "dev_null":
        target = "/dev/null"
    elif kind == "fifo":
        target = str(work / "fifo")
        os.mkfifo(target)
        # A reader, so the writer does not block forever; released in ``check`` if nobody wrote.
        import threading

        def drain(path: str = target) -> None:
            with open(path, "rb") as fh:
                while fh.read(1 << 16):
                    pass

        threading.Thread(target=drain, daemon=True).start()
    elif kind.startswith("link_"):
        target = str(work / "link")
        dest = {
            "link_to_file": work / "real.bin",
            "link_to_dir": work,
            "link_dangling": work / "nowhere",
            "link_to_null": Path("/dev/null"),
        }[kind]
        if kind == "link_to_file":
            dest.write_bytes(b"old")
        os.symlink(dest, target)
    elif kind == "directory":
        target = str(work / "dir")
        os.mkdir(target)
    elif kind == "empty":
        target = ""
    elif kind == "under_a_file":
        target = str(snap / "x")
    elif kind == "the_input":
        target = str(snap)
    elif kind == "existing_file":
        target = str(work / "exists.bin")
        Path(target).write_bytes(b"old")
    else:
        target = str(work / "new.bin")
    kinds_before = {p: _kind(p) for p in (target, "/dev/stdout", "/dev/null") if p not in ("", "-")}
    mid = rng.choice(memory_ids or ["raw"])
    runs = [
        ["extract", str(snap), "--memory", mid, "-o", target, *(["--force"] if rng.random() < 0.7 else [])]
    ]

    def check(outs: list[tuple[int | None, str, str]]) -> str | None:
        if kind == "fifo":  # a reader still waiting for a writer: open and close once to release it
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        if snap.read_bytes() != before:
            return "the input snapshot changed"
        for p, k in kinds_before.items():
            if _kind(p) != k:
                return f"{kind}: {p} turned from {k} into {_kind(p)}"
        if kind in (
            "link_to_dir",
            "link_dangling",
            "link_to_null",
            "directory",
            "empty",
            "under_a_file",
            "the_input",
        ):
            if outs[0][0] != 2:
                return f"{kind}: status {outs[0][0]}, expected a refusal (2)"
        return None

    return Case(f"output:{kind}", runs, check=check)


def shrink_case(seed: Path, work: Path, rng: random.Random, memory_ids: list[str]) -> Case:
    snap = work / "shrinking.bin"
    shutil.copyfile(seed, snap)
    size = snap.stat().st_size
    hook = work / "shrink_hook.py"
    hook.write_text(SHRINK_HOOK)
    mid = rng.choice(memory_ids or ["raw"])
    p = str(snap)
    argv = rng.choice(
        [
            ["entries", p, "--memory", mid, "--format", "jsonl"],
            ["summary", p, "--deep"],
            ["summary", p, "--deep", "--json"],
            ["check", p],
            ["salvage", p, "--memory", mid],
        ]
    )
    env = {"CUT_ON_CALL": str(rng.randint(1, 3)), "CUT_TO": str(rng.choice([0, 4096, size // 2, size - 1]))}
    return Case("shrink", [argv], env=env, prefix=[str(hook)])


def interpreter() -> str:
    return sys.executable
