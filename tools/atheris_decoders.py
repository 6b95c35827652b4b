"""Coverage-guided fuzz targets (atheris / libFuzzer) for the decoders and walkers. Optional tool.

Each target feeds arbitrary bytes to one layer and allows only that layer's documented failure (e.g.
``CandidError`` from the Candid decoder); any other exception, a hang (``-timeout``) or a memory blow-up
(``-rss_limit_mb``) is a finding that libFuzzer saves as ``crash-*``/``timeout-*``/``oom-*``:

* ``candid``: ``decode_message`` plus both renderings (JSON-able and Candid text) of what decodes;
* ``cbor``: ``decode_cbor``;
* ``did``: the ``.did`` field-name extractor (text from the user, but a hostile file must not hang it);
* ``storable``: every Storable type guess and decoder (``guess_type`` + ``TypeExpr.decode``);
* ``btree``: the B-tree walker on the bytes as a raw memory (headers, validated walk, in-order entries);
* ``snapshot``: the whole analysis of the bytes as a snapshot (MemoryManager, detection, forensics, deep
  walks, JSON, region tree).

atheris is not a dependency of the project (``pip install atheris`` where a wheel exists)::

    python tools/atheris_decoders.py candid -max_total_time=300 -timeout=10 -rss_limit_mb=2048 CORPUS_DIR
    python tools/atheris_decoders.py snapshot --seed-corpus CORPUS_DIR -runs=100000

``--seed-corpus DIR`` first writes seed inputs there: the fixtures' Candid values and headers for the
byte-level targets, small fixture snapshots for ``btree``/``snapshot``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    import atheris
except ImportError:  # pragma: no cover - the tool explains itself instead of a traceback
    atheris = None

# Imported under atheris' instrumentation so that coverage guides the search inside these modules.
if atheris is not None:
    with atheris.instrument_imports(include=["inspector"]):
        from inspector.decode import candid, candid_render, cbor, did, valuetypes
        from inspector.memory import PhysicalMemory
        from inspector.structures.btreemap import BTreeMap
        from inspector.structures.btreemap.nodes import NodeError

# How much of a walk a single input may ask for; the walkers bound themselves, this bounds the harness.
MAX_ENTRIES = 10_000


def fuzz_candid(data: bytes) -> None:
    try:
        msg = candid.decode_message(data)
    except candid.CandidError:
        return
    for arg in msg.args:
        candid_render.to_json(arg)
        candid_render.to_text(arg)


def fuzz_cbor(data: bytes) -> None:
    try:
        cbor.decode_cbor(data)
    except cbor.CborError:
        return


def fuzz_did(data: bytes) -> None:
    did.names_from_did(data.decode("utf-8", "replace"))


def fuzz_storable(data: bytes) -> None:
    # The first byte picks a sample count: guessing looks at several samples, decoding at each.
    n = 1 + (data[0] % 4) if data else 1
    step = max(1, len(data) // n)
    samples = [data[i : i + step] for i in range(0, len(data), step)][:n] or [b""]
    for role in ("key", "value"):
        t = valuetypes.guess_type(samples, role)  # type: ignore[arg-type]
        for s in samples:
            t.decode(s)


def fuzz_btree(data: bytes) -> None:
    mem = PhysicalMemory(data, len(data))
    bt = BTreeMap(mem, memory_id="raw")
    _ = bt.header, bt.allocator, bt.key_layout
    bt.walk()
    for _entry in islice(bt.iter_entries(), MAX_ENTRIES):
        pass
    for _depth, _node in islice(bt.iter_nodes(), MAX_ENTRIES):
        pass
    if bt.root_addr:
        try:
            bt.node(bt.root_addr)
        except NodeError:
            pass
    bt.unreachable_nodes(beyond_frontier=True)


def fuzz_snapshot(data: bytes) -> None:
    from inspector.analysis.analyze import analyze
    from inspector.regions import build_tree
    from inspector.snapshot import Snapshot

    if not data:
        return
    snap = Snapshot(Path("fuzz.bin"), None, len(data), PhysicalMemory(data, len(data), "stable memory"))
    analysis = analyze(snap)
    analysis.deep()
    analysis.to_json(deep=True)
    for _ in islice(build_tree(analysis).walk(max_depth=6), MAX_ENTRIES):
        pass
    for s in analysis.structures:
        for _el in islice(s.elements(0), 200):
            pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "candid": fuzz_candid,
    "cbor": fuzz_cbor,
    "did": fuzz_did,
    "storable": fuzz_storable,
    "btree": fuzz_btree,
    "snapshot": fuzz_snapshot,
}


def write_seed_corpus(target: str, out: Path) -> int:
    """Seed inputs from the fixtures, so the search starts from real structures instead of nothing."""
    from tools.fuzz_cli import FIXTURES, SAMPLES, discover_seeds, find_targets

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in discover_seeds([FIXTURES, SAMPLES]):
        data = path.read_bytes()
        if target in ("btree", "snapshot"):
            if len(data) <= 1 << 20:
                (out / f"{n:04d}-{path.parent.name}-{path.stem}").write_bytes(data)
                n += 1
            continue
        for t in find_targets(path):
            if t.role == "candid" and target == "candid":
                blob = data[t.offset - 4 : t.offset + t.size + 4096]
                (out / f"{n:04d}-{t.name}").write_bytes(blob)
                n += 1
            elif target in ("storable", "cbor") and t.role in ("candid", "length"):
                (out / f"{n:04d}-{t.name}").write_bytes(data[t.offset : t.offset + 64])
                n += 1
    return n


def main(argv: list[str]) -> int:
    if atheris is None:
        print("atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(
            f"usage: {argv[0]} {{{','.join(TARGETS)}}} [--seed-corpus DIR] [libFuzzer options]",
            file=sys.stderr,
        )
        return 2
    target = argv[1]
    rest = argv[2:]
    if rest[:1] == ["--seed-corpus"] and len(rest) >= 2:
        corpus = Path(rest[1])
        print(f"wrote {write_seed_corpus(target, corpus)} seed inputs to {corpus}", file=sys.stderr)
        rest = [rest[1], *rest[2:]]
    atheris.Setup([argv[0], *rest], TARGETS[target])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
