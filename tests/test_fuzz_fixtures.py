"""Property-based fuzzing of the real-library fixtures: mutated headers, Candid bytes and truncation.

Every example copies a fixture, corrupts it, and runs commands in-process (``STABLE_INSPECT_DEBUG=1``, so
any exception fails the example). Properties:

* no exception escapes, and the exit status is 0, 1 or 2 (2 only as one line on stderr);
* a mutated header is *reported*: a finding that names the structure or header (e.g. a bad "MGR" →
  memory manager absent or clobbered; a bad "BTR"/"SCL" → ``structure_bad_magic`` or a different kind
  detected; garbage in a node header → ``btree_node_invalid``…).

The mutation catalogue (where the headers are, which values are invalid there) is the one the outside
harness ``tools/fuzz_cli.py`` uses. The default run is short (CI budget). For a long run set
``STABLE_INSPECT_FUZZ_EXAMPLES`` (examples per property), e.g.::

    STABLE_INSPECT_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz_fixtures.py -q
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES, require_fixtures, run_cli
from tools.fuzz_cli import TARGET_MUTATORS, Target, blind_mutation, find_targets, mutate_target

LONG_RUN = int(os.environ.get("STABLE_INSPECT_FUZZ_EXAMPLES", "0") or 0)

# Small fixtures that between them hold every structure kind, both B-tree layouts, overflow pages, a
# MemoryManager with scattered buckets, and the stable_save incident (a Candid message over page 0).
SEEDS = [
    "btree_v1/stable_memory.bin",
    "btree_v1_migrated/stable_memory.bin",
    "btree_big_values/stable_memory.bin",
    "vec_log_heap/stable_memory.bin",
    "many_memories/stable_memory.bin",
    "migration/pre_upgrade/stable_memory.bin",
    "migration/after_stable_save/stable_memory.bin",
    "migration/post_upgrade/stable_memory.bin",
    "standalone/v0.6.0/cell_string.bin",
    "standalone/v0.7.2/btree_u64_string.bin",
    "standalone/v0.6.0/log_index.bin",
    "upstream/btreemap_v1_packed_headers.dump",
]
LONG_SEEDS = ["btree_u64_many/stable_memory.bin", "cell_and_map/stable_memory.bin"]


def _examples(default: int) -> int:
    return LONG_RUN or default


def _settings(default: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=_examples(default),
        deadline=None,  # timing is checked per command below, with a generous bound
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        derandomize=not LONG_RUN,  # a fixed default run in CI; a long run explores new ground each time
        database=None if not LONG_RUN else settings.default.database,
    )


# --- seeds and their baselines ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    targets: tuple[Target, ...]
    memory_ids: tuple[str, ...]
    baseline: dict[str, Any]


def _seed_names() -> list[str]:
    names = SEEDS + (LONG_SEEDS if LONG_RUN else [])
    return [n for n in names if (FIXTURES / n).is_file()]


@functools.cache
def _seed(name: str) -> Seed:
    path = FIXTURES / name
    status, out, err = run_cli(["summary", str(path), "--deep", "--json"])
    assert status == 0, err
    doc = json.loads(out)
    ids = tuple(
        str(s["memory_id"][0] if isinstance(s["memory_id"], list) else s["memory_id"])
        for s in doc["structures"]
    )
    return Seed(name, path.read_bytes(), tuple(find_targets(path)), ids, doc)


@functools.lru_cache(maxsize=1)
def _workdir() -> Path:
    # One directory for the whole module: hypothesis examples cannot use function-scoped tmp_path.
    return Path(tempfile.mkdtemp(prefix="stable_inspect_fuzz_"))


@pytest.fixture(autouse=True, scope="module")
def _need_fixtures() -> Iterator[None]:
    require_fixtures()
    if not _seed_names():
        pytest.skip("none of the fuzz seed fixtures is present")
    yield
    shutil.rmtree(_workdir(), ignore_errors=True)
    _workdir.cache_clear()


def _other_commands(path: str, memory_ids: tuple[str, ...], original: str) -> list[list[str]]:
    mid = next((m for m in memory_ids if not m.startswith("?")), "raw")
    out = str(_workdir() / "extract.bin")
    argvs = [
        ["summary", path],
        ["summary", path, "--deep"],
        ["entries", path, "--memory", mid, "--format", "jsonl"],
        ["entries", path, "--memory", mid, "--format", "table", "--limit", "100"],
        ["extract", path, "--memory", mid, "-o", out, "--force"],
    ]
    argvs += [["check", path], ["check", path, "--json"]]
    argvs.append(["salvage", path, "--memory", memory_ids[0] if memory_ids else "raw", "--format", "jsonl"])
    argvs.append(["diff", original, path, "--json"])
    return argvs


def _run_checked(argv: list[str]) -> tuple[int, str]:
    status, out, err = run_cli(argv)
    assert status in (0, 1, 2), (argv, status, err)
    if status == 2:
        # Readable input: only a usage problem (no such memory, not a map…) may end like this.
        assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, (argv, err)
    return status, out


def _write(data: bytes | bytearray) -> Path:
    path = _workdir() / "stable_memory.bin"
    path.write_bytes(data)
    return path


# --- what "reported" means per header ----------------------------------------------------------------

BTREE_WALK = {"btree_node_invalid", "btree_cycle", "btree_length_mismatch"}
ALLOCATOR = {"allocator_free_list_broken", "allocator_count_mismatch"}


def _expected_codes(t: Target) -> set[str] | None:
    """Finding codes of which one must appear for this target (None: any change of the report)."""
    field = t.name.rsplit(".", 1)[-1]
    if t.structure == "memory_manager":
        if field == "size" or t.name.startswith("mm.size"):
            return {"memory_size_mismatch"}
        # A version byte other than 1 is a layout we cannot read, not damage (issue 11).
        return {
            "memory_manager_clobbered",
            "bucket_table_mismatch",
            "bucket_table_holes",
            "physical_size_mismatch",
            "unsupported_version",
        }
    if t.structure == "bucket_table":
        # An owner turned into 0xFF below num_allocated_buckets reads as a 0.7.1 reclaim hole.
        return {"memory_size_mismatch", "bucket_table_mismatch", "bucket_table_holes", "bucket_out_of_range"}
    if field in ("magic", "layout_version", "version") and t.structure in (
        "btreemap",
        "cell",
        "vec",
        "minheap",
        "log",
    ):
        return {"structure_bad_magic"}  # or the memory is detected as another kind (checked separately)
    if t.structure in ("btree_node", "btree_overflow") or field == "root_addr":
        return BTREE_WALK
    return {
        "length": {"btree_length_mismatch", "vec_out_of_bounds", "log_index_invalid"},
        "allocation_size": {"btree_allocation_size_mismatch"},
        "page_size": {"btree_allocation_size_mismatch", "btree_node_invalid"},
        # A free-list link moved to another valid chunk makes a consistent but different list: then the
        # counts of free chunks and list entries disagree instead.
        "free_list_head": ALLOCATOR,
        "num_allocated_chunks": {"allocator_count_mismatch"},
        "next": ALLOCATOR,
        "allocated": ALLOCATOR,
        "value_length": {"cell_value_out_of_bounds"},
        "is_fixed_size": {"structure_header_invalid"},
        "reserved": {"structure_header_invalid"},
        "index_length": {"log_index_invalid"},
    }.get(field) or ({"log_index_invalid"} if t.name.startswith("log.index[") else None)


def _kinds(doc: dict[str, Any]) -> dict[str, str]:
    return {str(s["memory_id"]): s["kind"] for s in doc["structures"]}


def _codes(doc: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in doc["findings"]:
        out[f["code"]] = out.get(f["code"], 0) + 1
    return out


def _assert_reported(seed: Seed, t: Target, doc: dict[str, Any]) -> None:
    base = seed.baseline
    before, after = _codes(base), _codes(doc)
    new = {c for c, n in after.items() if n > before.get(c, 0)}
    kinds_changed = _kinds(doc) != _kinds(base)
    mm_changed = doc["memory_manager"].get("present") != base["memory_manager"].get("present")
    where = f"{seed.name}: {t.name}"
    if t.name == "mm.magic":
        # No "MGR": the manager is absent (or rebuilt by the forensics), or reported clobbered.
        assert (
            mm_changed or "memory_manager_clobbered" in new or doc["memory_manager"].get("reconstructed")
        ), where
        return
    expected = _expected_codes(t)
    if expected is not None and new & expected:
        return
    if t.structure in ("btreemap", "cell", "vec", "minheap", "log") and kinds_changed:
        return  # a bad magic: the memory is no longer detected as that structure
    if expected is None:
        assert new or kinds_changed or mm_changed, f"{where}: mutation not reported"
        return
    raise AssertionError(f"{where}: expected one of {sorted(expected)}, new findings {sorted(new)}")


# --- properties ------------------------------------------------------------------------------------------


@_settings(120)
@given(data=st.data())
def test_mutated_header_is_reported(data: st.DataObject) -> None:
    seed = _seed(data.draw(st.sampled_from(_seed_names()), label="seed"))
    targets = [t for t in seed.targets if t.must_report]
    if not targets:
        return
    target = data.draw(st.sampled_from(targets), label="target")
    rng = random.Random(data.draw(st.integers(0, 2**32), label="rng"))
    mutated = bytearray(seed.data)
    written = mutate_target(mutated, target, rng)
    note(f"{target.name} := {written.hex()}")
    path = _write(mutated)
    status, out = _run_checked(["summary", str(path), "--deep", "--json"])
    assert status == 0
    _assert_reported(seed, target, json.loads(out))
    # And one other command, chosen by the example, behaves too.
    argv = data.draw(st.sampled_from(_other_commands(str(path), seed.memory_ids, str(FIXTURES / seed.name))))
    _run_checked(argv)


@_settings(100)
@given(data=st.data())
def test_blind_mutation_never_crashes(data: st.DataObject) -> None:
    seed = _seed(data.draw(st.sampled_from(_seed_names()), label="seed"))
    rng = random.Random(data.draw(st.integers(0, 2**32), label="rng"))
    mutated, what = blind_mutation(bytearray(seed.data), seed.targets, rng)
    note(what)
    path = _write(mutated)
    status, _out = _run_checked(["summary", str(path), "--deep", "--json"])
    assert status == 0
    commands = _other_commands(str(path), seed.memory_ids, str(FIXTURES / seed.name))
    _run_checked(data.draw(st.sampled_from(commands), label="command"))


@_settings(25)
@given(data=st.data())
def test_mutated_candid_never_crashes(data: st.DataObject) -> None:
    """Candid values inside map/cell/vec values, and the stable_save message at physical 0."""
    names = [n for n in _seed_names() if any(t.role == "candid" for t in _seed(n).targets)]
    if not names:
        return
    seed = _seed(data.draw(st.sampled_from(names), label="seed"))
    target = data.draw(st.sampled_from([t for t in seed.targets if t.role == "candid"]), label="target")
    mutated = bytearray(seed.data)
    patch = data.draw(st.binary(min_size=1, max_size=16), label="patch")
    at = data.draw(st.integers(0, max(0, target.size - 1)), label="at")
    if data.draw(st.booleans(), label="structured"):
        mutate_target(mutated, target, random.Random(data.draw(st.integers(0, 2**32))))
    else:
        end = min(target.offset + target.size, target.offset + at + len(patch))
        mutated[target.offset + at : end] = patch[: end - target.offset - at]
    path = _write(mutated)
    _run_checked(["summary", str(path), "--deep", "--json"])
    mid = str(target.memory_id) if target.memory_id is not None else "raw"
    for fmt in ("jsonl", "table"):
        _run_checked(["entries", str(path), "--memory", mid, "--format", fmt, "--limit", "50"])
    _run_checked(["check", str(path), "--json"])


@_settings(40)
@given(data=st.data())
def test_truncation_is_reported(data: st.DataObject) -> None:
    seed = _seed(data.draw(st.sampled_from(_seed_names()), label="seed"))
    size = len(seed.data)
    cut = data.draw(
        st.one_of(st.integers(1, size - 1), st.sampled_from([1, 2, 3, 4, 52, 100, 2080, 34_848])), label="cut"
    )
    cut = min(cut, size - 1)
    path = _write(seed.data[:cut])
    status, out = _run_checked(["summary", str(path), "--deep", "--json"])
    assert status == 0
    doc = json.loads(out)
    if cut % 65_536:
        # Not a whole number of pages: a snapshot cut short, which must be said.
        assert "size_not_page_multiple" in _codes(doc), cut
    commands = _other_commands(str(path), seed.memory_ids, str(FIXTURES / seed.name))
    _run_checked(data.draw(st.sampled_from(commands)))


def test_every_mutator_role_is_exercised() -> None:
    """Keeps the catalogue honest: each role has targets in the seeds (so each kind of header is fuzzed)."""
    roles = {t.role for n in _seed_names() for t in _seed(n).targets}
    missing = set(TARGET_MUTATORS) - roles
    assert not missing, f"no seed has targets for {sorted(missing)}"
