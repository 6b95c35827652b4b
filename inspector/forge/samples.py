"""The shipped sample snapshots: the upgrade incident in three steps, plus a dfx-style snapshot folder.

The scenario mirrors the real-library fixtures (``../shared/fixtures/migration``), forged here:

* ``healthy``: MemoryManager (small buckets); ``StableCell<Data>`` at MemoryId 0 holding a Candid
  ``Data`` record; ``StableBTreeMap<String, Member>`` at MemoryId 4 whose values are Candid ``Member``
  records. Init order: the Cell first, so bucket 0 → memory 0 and the map's buckets follow.
* ``after_stable_save``: ``pre_upgrade`` also called ic-cdk ``stable_save((heap_data,))``; the Candid
  message lands at physical 0 and runs past the bucket table into bucket 0 (the Cell).
* ``post_upgrade``: the next ``MemoryManager::init`` found no "MGR" and started a fresh manager; the Cell
  was re-created with ``Data::default()``, the map re-created empty and given a few new members. The old
  map nodes are still in the bucket, unreachable (stale).
* ``snapshot_dir``: ``post_upgrade`` as ``dfx canister snapshot download`` lays it out.

Everything derives from a fixed seed: no clock, no dict-order or hash-seed dependence, so writing the
samples twice gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from inspector.forge.btree import ForgedBTreeMap, forge_btreemap
from inspector.forge.candid import (
    BOOL,
    INT32,
    NAT32,
    NAT64,
    NULL,
    PRINCIPAL,
    TEXT,
    CandidType,
    Opt,
    Record,
    Variant,
    VecOf,
    candid_message,
    stable_save_message,
)
from inspector.forge.image import MemoryManagerImage, apply_stable_save
from inspector.forge.structures import cell

SEED = 20240611
BUCKET_SIZE_PAGES = 1
STABLE_DATA_MEMORY_ID = 0
ENTRIES_MEMORY_ID = 4
HEALTHY_MEMBERS = 300
HEAP_AUDIT_EVENTS = 2_400  # makes the stable_save message ~100 KB: past the table, into bucket 0
NEW_MEMBERS = 3
MAP_FILL = 8  # entries per node, like a map grown by random inserts (not packed full)
MAP_FREE_CHUNKS = 2  # insert-only maps have a few free chunks too (overflow pages given back)
TAKEN_AT_NS = 1_718_100_000_000_000_000  # a fixed instant (2024-06-11), never the clock

# --- Candid schema (the same shape as the real-library fixtures) ---------------------------------------

ROLE = Variant.of({"Owner": NULL, "Admin": NULL, "Member": NULL, "Guest": NULL})
_MEMBER_FIELDS: dict[str, CandidType] = {
    "name": TEXT,
    "role": ROLE,
    "joined": NAT64,
    "email": Opt(TEXT),
    "tags": VecOf(TEXT),
    "active": BOOL,
    "score": INT32,
}
MEMBER = Record.of(_MEMBER_FIELDS)
SETTINGS = Record.of({"max_members": NAT32, "invite_only": BOOL, "motd": TEXT})
AUDIT_EVENT = Record.of({"at": NAT64, "actor": TEXT, "action": TEXT})
_DATA_FIELDS: dict[str, CandidType] = {
    "name": TEXT,
    "owner": Opt(PRINCIPAL),
    "version": NAT32,
    "next_member_id": NAT64,
    "settings": SETTINGS,
    "admins": VecOf(PRINCIPAL),
    "audit_log": VecOf(AUDIT_EVENT),
}
DATA = Record.of(_DATA_FIELDS)
DID = """type Role = variant { Owner; Admin; Member; Guest };
type Member = record { name : text; role : Role; joined : nat64; email : opt text; tags : vec text;
  active : bool; score : int32 };
type Settings = record { max_members : nat32; invite_only : bool; motd : text };
type AuditEvent = record { at : nat64; actor : text; action : text };
type Data = record { name : text; owner : opt principal; version : nat32; next_member_id : nat64;
  settings : Settings; admins : vec principal; audit_log : vec AuditEvent };
"""

FIRST = ["alice", "amir", "bea", "bob", "chen", "dara", "dave", "emeka", "farah", "frank", "goran", "grace"]
FIRST += ["heidi", "ivan", "julia", "kofi", "lena", "mateo", "nina", "olivia", "rupert", "sybil", "wendy"]
FIRST += ["yuri", "zoe"]
LAST = ["popescu", "haddad", "kim", "nakamura", "smith", "garcia", "osei", "okafor", "nguyen", "ivanova"]
LAST += ["larsen", "kowalski", "dubois", "silva", "müller"]
TAGS = ["ops", "qa", "research", "infra", "design", "core", "finance", "sales"]
ACTIONS = ["invite", "approve_proposal", "demote", "promote", "remove_member", "update_settings"]
ROLES = ["Owner", "Admin", "Member", "Guest"]


def _principal(rng: random.Random) -> bytes:
    # A self-authenticating principal: 28 hash bytes + the 0x02 class byte.
    return rng.randbytes(28) + b"\x02"


def _member(rng: random.Random) -> tuple[str, dict[str, Any]]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    key = f"{first}.{last}-{rng.randrange(10_000):04d}"
    member = {
        "name": f"{first.title()} {last.title()}",
        "role": {rng.choices(ROLES, weights=[1, 4, 12, 3])[0]: None},
        "joined": rng.randrange(1_672_531_200, 1_767_225_600) * 1_000_000_000,
        "email": f"{key}@example.org" if rng.random() < 0.6 else None,
        "tags": rng.sample(TAGS, rng.randrange(0, 4)),
        "active": rng.random() < 0.8,
        "score": rng.randrange(-500, 5_000),
    }
    return key, member


def members(rng: random.Random, n: int, taken: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """n members with unique keys (insertion order = generation order)."""
    taken = set() if taken is None else taken
    out: dict[str, dict[str, Any]] = {}
    while len(out) < n:
        key, member = _member(rng)
        if key not in taken and key not in out:
            out[key] = member
    return out


def heap_data(rng: random.Random, audit_events: int, admins: int) -> dict[str, Any]:
    t = 1_672_531_200_000_000_000
    log = []
    for i in range(audit_events):
        t += rng.randrange(60, 7_200) * 1_000_000_000
        actor = f"{rng.choice(FIRST)}.{rng.choice(LAST)}"
        log.append({"at": t, "actor": actor, "action": f"{rng.choice(ACTIONS)} #{i}"})
    return {
        "name": "DAO Members Registry",
        "owner": _principal(rng),
        "version": 23,
        "next_member_id": 15_000 + audit_events,
        "settings": {"max_members": 2_713, "invite_only": True, "motd": "Welcome to DAO Members Registry!"},
        "admins": [_principal(rng) for _ in range(admins)],
        "audit_log": log,
    }


def default_data() -> dict[str, Any]:
    """``Data::default()``: every field zero/empty."""
    return {
        "name": "",
        "owner": None,
        "version": 0,
        "next_member_id": 0,
        "settings": {"max_members": 0, "invite_only": False, "motd": ""},
        "admins": [],
        "audit_log": [],
    }


def member_map(entries: dict[str, dict[str, Any]], **kwargs: Any) -> ForgedBTreeMap:
    """``StableBTreeMap<String, Member>``: String keys (UTF-8, unbounded → page 1024), Candid values."""
    pairs = sorted((k.encode("utf-8"), candid_message([MEMBER], [m])) for k, m in entries.items())
    return forge_btreemap(pairs, **kwargs)


# --- The samples ---------------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_samples() -> tuple[dict[str, bytes], dict[str, Any]]:
    """All sample stable memories (name → bytes) and a manifest describing them."""
    rng = random.Random(SEED)
    cell_data = heap_data(rng, audit_events=5, admins=4)
    old_members = members(rng, HEALTHY_MEMBERS)
    big_heap = heap_data(rng, audit_events=HEAP_AUDIT_EVENTS, admins=40)
    new_members = members(rng, NEW_MEMBERS, taken=set(old_members))

    # 1. healthy (pre_upgrade): the Cell is initialised first, so it owns bucket 0.
    mm = MemoryManagerImage(BUCKET_SIZE_PAGES)
    cell_value = candid_message([DATA], [cell_data])
    mm.place(STABLE_DATA_MEMORY_ID, cell(cell_value))
    old_map = mm.place(ENTRIES_MEMORY_ID, member_map(old_members, fill=MAP_FILL, free_chunks=MAP_FREE_CHUNKS))
    healthy = mm.to_bytes()
    healthy_layout = _mm_layout(mm)

    # 2. stable_save((heap_data,)) in pre_upgrade: the message over physical 0, nothing cleared.
    message = stable_save_message([DATA], [big_heap])
    after = bytes(apply_stable_save(healthy, message))

    # 3. post_upgrade: fresh manager over the old bytes; structures re-created in the same order.
    mm2 = MemoryManagerImage(BUCKET_SIZE_PAGES, base=after)
    new_cell_value = candid_message([DATA], [default_data()])
    mm2.place(STABLE_DATA_MEMORY_ID, cell(new_cell_value))
    new_map = mm2.place(ENTRIES_MEMORY_ID, member_map(new_members))
    post = mm2.to_bytes()

    images = {
        "healthy/stable_memory.bin": healthy,
        "after_stable_save/stable_memory.bin": after,
        "post_upgrade/stable_memory.bin": post,
        "snapshot_dir/stable_memory.bin": post,
    }
    manifest: dict[str, Any] = {
        "generator": "python -m inspector.forge samples",
        "seed": SEED,
        "bucket_size_pages": BUCKET_SIZE_PAGES,
        "candid_types": DID,
        "samples": {
            "healthy": {
                "file": "healthy/stable_memory.bin",
                "memory_manager": healthy_layout,
                "cell": {"memory_id": STABLE_DATA_MEMORY_ID, "value_len": len(cell_value), "type": "Data"},
                "btreemap": _map_summary(old_map, ENTRIES_MEMORY_ID),
            },
            "after_stable_save": {
                "file": "after_stable_save/stable_memory.bin",
                "derived_from": "healthy",
                "stable_save": {"range": [0, len(message)], "length": len(message), "sha256": _sha(message)},
                "note": "The message covers the MemoryManager header, the bucket table, the rest of page 0 "
                "and the start of bucket 0 (the Cell); the map's buckets are untouched.",
            },
            "post_upgrade": {
                "file": "post_upgrade/stable_memory.bin",
                "derived_from": "after_stable_save",
                "memory_manager": _mm_layout(mm2),
                "cell": {
                    "memory_id": STABLE_DATA_MEMORY_ID,
                    "value_len": len(new_cell_value),
                    "type": "Data",
                },
                "btreemap": _map_summary(new_map, ENTRIES_MEMORY_ID),
                "stale": {
                    "old_map_nodes": old_map.node_count,
                    "old_map_entries": old_map.length,
                    "old_root_addr": old_map.root_addr,
                    "note": "The old nodes stay in the map's buckets, unreachable; the new root and "
                    "frontier overwrite old chunks 0 and 1.",
                },
            },
            "snapshot_dir": {
                "file": "snapshot_dir/stable_memory.bin",
                "same_bytes_as": "post_upgrade",
                "files": ["metadata.json", "stable_memory.bin", "wasm_memory.bin", "wasm_module.bin"],
            },
        },
    }
    for name, data in images.items():
        key = name.split("/")[0]
        manifest["samples"][key]["size"] = len(data)
        manifest["samples"][key]["sha256"] = _sha(data)
    return images, manifest


def _mm_layout(mm: MemoryManagerImage) -> dict[str, Any]:
    return {
        "bucket_size_pages": mm.bucket_size_pages,
        "num_allocated_buckets": mm.num_buckets,
        "bucket_owners": list(mm.owners),
        "memory_sizes_in_pages": {str(i): s for i, s in enumerate(mm.sizes) if s},
        "physical_pages": mm.physical_size // 65_536,
    }


def _map_summary(fm: ForgedBTreeMap, memory_id: int) -> dict[str, Any]:
    return {
        "memory_id": memory_id,
        "key_type": "String",
        "value_type": "Member (Candid)",
        "page_size": fm.allocation_size,
        "length": fm.length,
        "root_addr": fm.root_addr,
        "depth": fm.depth,
        "nodes": fm.node_count,
        "overflow_pages": fm.overflow_count,
        "num_allocated_chunks": fm.num_allocated_chunks,
        "free_list": fm.free_list,
        "first_key": fm.keys[0].decode() if fm.length else None,
        "last_key": fm.keys[-1].decode() if fm.length else None,
    }


def snapshot_metadata(stable_memory_size: int) -> dict[str, Any]:
    """metadata.json as dfx writes it beside a downloaded snapshot (sizes in bytes, time in ns)."""
    return {
        "source": "taken_from_canister",
        "taken_at_timestamp": TAKEN_AT_NS,
        "wasm_module_size": 0,
        "globals": [],
        "wasm_memory_size": 0,
        "stable_memory_size": stable_memory_size,
        "wasm_chunk_store": [],
        "canister_version": 42,
        "certified_data": "",
        "global_timer": None,
        "on_low_wasm_memory_hook_status": None,
    }


README = f"""# Sample stable-memory snapshots (forged)

Written by `python -m inspector.forge samples` (inspector/forge/samples.py); do not edit by hand, re-run
the command instead (a test checks these files are up to date). Deterministic: seed {SEED}, no clock.
These were written by this project's forge, not by the real library; the real-library fixtures live in
../shared/fixtures. Details (bucket owners, map shape, sha256 of each file) are in MANIFEST.json.

MemoryManager with {BUCKET_SIZE_PAGES}-page buckets.
MemoryId {STABLE_DATA_MEMORY_ID}: `StableCell<Data>` holding a Candid record.
MemoryId {ENTRIES_MEMORY_ID}: `StableBTreeMap<String, Member>` (Candid `Member` values, v2 nodes, page 1024).

* `healthy/`: the canister before the upgrade, {HEALTHY_MEMBERS} members.
  Buckets: 0 → memory {STABLE_DATA_MEMORY_ID}, 1 and 2 → memory {ENTRIES_MEMORY_ID}.
* `after_stable_save/`: `healthy` after ic-cdk `stable_save((heap_data,))`. A ~90 KB Candid message
  sits at physical 0, over the MemoryManager header, the bucket table, the rest of page 0 and
  bucket 0 (the Cell). The map's buckets are untouched.
* `post_upgrade/`: then `MemoryManager::init` found no "MGR" and started a fresh manager; the Cell was
  re-created with `Data::default()` and the map re-created with {NEW_MEMBERS} new members. Old map nodes
  remain, stale, in bucket 1 and in bucket 2 (now unallocated, 0xFF); the middle of the message is
  still visible in page 0 after byte 34,848.
* `snapshot_dir/`: `post_upgrade` laid out like `dfx canister snapshot download`: `metadata.json`,
  `stable_memory.bin`, and empty `wasm_memory.bin` / `wasm_module.bin` placeholders.
"""


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_samples(out_dir: str | Path) -> list[Path]:
    """Write every sample under out_dir; returns the files written."""
    out = Path(out_dir)
    images, manifest = build_samples()
    written: list[Path] = []
    for name, data in images.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    snap = out / "snapshot_dir"
    for placeholder in ("wasm_memory.bin", "wasm_module.bin"):
        (snap / placeholder).write_bytes(b"")
        written.append(snap / placeholder)
    meta = snap / "metadata.json"
    meta.write_text(
        _dump_json(snapshot_metadata(len(images["snapshot_dir/stable_memory.bin"]))), encoding="utf-8"
    )
    written.append(meta)
    readme = out / "README.md"
    readme.write_text(README, encoding="utf-8")
    written.append(readme)
    man = out / "MANIFEST.json"
    man.write_text(_dump_json(manifest), encoding="utf-8")
    written.append(man)
    return written
