"""The v2 key layout (length-prefixed or fixed-size keys), inferred from the bytes by probing nodes."""

from __future__ import annotations

from typing import Any

from inspector.structures.btreemap.headers import (
    MAX_FIXED_KEY_PROBE,
    PROBE_NODE_BUDGET,
    PROBE_V2_SAMPLE,
    KeyLayout,
)
from inspector.structures.btreemap.nodes import (
    INTERNAL,
    V2_PREFIX_SIZE,
    NodeError,
    overflow_pages_needed,
    parse_v1_body,
    prefixed_run,
    scan_prefixed,
    strictly_increasing,
)
from inspector.structures.btreemap.reading import _children, _NodeReading, _u32


class _KeyLayout(_NodeReading):
    """The v2 key layout (length-prefixed or fixed-size keys), inferred from the bytes by probing nodes."""

    # --- key layout --------------------------------------------------------------------------------------

    @property
    def key_layout(self) -> KeyLayout:
        """How v2 nodes store keys: "prefixed" (u32 LE length + bytes) or a fixed size N (no prefix)."""
        if self._kfix is None:
            self._probe()
            if self._kfix is None:  # no v2 node seen: the question does not arise; report the default
                return "prefixed"
        return "prefixed" if self._kfix == 0 else self._kfix

    def _resolve_key_layout(self, addr: int) -> int:
        """Called when a v2 node needs parsing and the layout is still open."""
        self._probe()
        if self._kfix is None:
            self._infer_key_layout([addr])
        assert self._kfix is not None
        return self._kfix

    def _probe(self) -> None:
        """Bounded pre-order probe from the root: notes v2 nodes and infers the key layout from them."""
        if self._probe_done:
            return
        self._probe_done = True
        if not self.walkable or not self.root_addr:
            return
        sample: list[int] = []
        reads: dict[int, tuple[Any, ...]] = {}  # the sampled nodes as read, for the inference below
        seen: set[int] = set()
        stack = [self.root_addr]
        budget = PROBE_NODE_BUDGET
        while stack and budget > 0 and len(sample) < PROBE_V2_SAMPLE:
            addr = stack.pop()
            if addr in seen:
                continue
            seen.add(addr)
            budget -= 1
            try:
                got = self._read_node(addr)
                nver, ntype, k, buf, base, end, _ovf = got
                if ntype == INTERNAL:
                    if nver == 2:
                        p = base + V2_PREFIX_SIZE
                        if p + 8 * (k + 1) > end:
                            continue
                        children = _children(k, buf, p)
                    else:
                        children = parse_v1_body(
                            buf, base, end, True, k, self.max_key_size or 0, self.max_value_size or 0
                        )[0]
                    stack.extend(reversed(children))
            except NodeError:
                continue
            if nver == 2:
                sample.append(addr)
                reads[addr] = got
        if sample:
            self._v2_seen = True
            if self._kfix is None:
                self._infer_key_layout(sample, reads)

    def _key_candidates(self) -> list[int]:
        """Fixed key sizes worth trying (0 stands for "prefixed", always tried first)."""
        if self._derived:
            # A migrated v1 map: the key type is the one whose max size the header stores.
            return [0, self.max_key_size] if self.max_key_size else [0]
        return [0, *range(1, MAX_FIXED_KEY_PROBE + 1)]

    def _infer_key_layout(self, addrs: list[int], reads: dict[int, tuple[Any, ...]] | None = None) -> None:
        """Pick the key layout under which every sampled v2 node parses consistently.

        A layout passes a node when its keys and values fit the stream, the stream length agrees with
        the overflow page count, keys are strictly increasing bytewise, and (header-v1 maps) key lengths
        respect max_key_size. Ties (tiny maps, e.g. one entry) go to the layout with fewer empty keys or
        values, then to "prefixed", then to the smaller size.
        """
        nodes = []
        for addr in addrs:
            try:
                # allow_free: the sample may be the node a salvage scan is parsing on request (its
                # caller has already validated it); the layout evidence is the same either way. A node
                # the probe has just read (a stricter read) is not read twice: with big values that
                # is megabytes each.
                got = (reads or {}).get(addr) or self._read_node(addr, allow_free=True)
                nver, ntype, k, buf, base, end, overflows = got
            except NodeError:
                continue
            if nver == 2:
                nodes.append((ntype, k, buf, base, end, overflows))
        if not nodes:
            self._kfix = 0
            return
        best: tuple[int, int, int, int] | None = None
        best_layout = 0
        for cand in self._key_candidates():
            failures = 0
            empties = 0
            for ntype, k, buf, base, end, overflows in nodes:
                result = self._try_layout(cand, ntype, k, buf, base, end, overflows)
                if result < 0:
                    failures += 1
                    if failures > (best[0] if best else len(nodes)):
                        break
                else:
                    empties += result
            score = (failures, empties, 0 if cand == 0 else 1, cand)
            if best is None or score < best:
                best, best_layout = score, cand
            if best[:2] == (0, 0):
                # Candidates come in increasing order, "prefixed" (0) first: every one still to try
                # could at best tie on failures and empties, then lose on its larger size. (A map of
                # u64 keys used to try all 4,096 sizes: ~3 ms at every open.)
                break
        self._kfix = best_layout

    def _try_layout(
        self, kfix: int, ntype: int, k: int, buf: Any, base: int, end: int, overflows: list[int]
    ) -> int:
        """-1 if the node does not parse consistently with this key layout, else its empty-item count."""
        p = base + V2_PREFIX_SIZE + (8 * (k + 1) if ntype == INTERNAL else 0)
        keys: list[bytes] = []
        if kfix:
            if p + kfix * k > end:
                return -1
            vstart = p + kfix * k
        else:
            vstart = scan_prefixed(buf, p, end, k)
            if vstart < 0:
                return -1
        vend = scan_prefixed(buf, vstart, end, k)
        if vend < 0:
            return -1
        if overflow_pages_needed(vend - base, self.page_size) != len(overflows):
            return -1
        empties = 0
        if kfix:
            keys = [buf[p + i * kfix : p + (i + 1) * kfix] for i in range(k)]
        else:
            keys, _p, _l = prefixed_run(buf, p, end, k)
            if self.max_key_size is not None and any(len(x) > self.max_key_size for x in keys):
                return -1
            empties += sum(1 for x in keys if not x)
        if not strictly_increasing(keys):
            return -1
        q = vstart
        for _ in range(k):
            (n,) = _u32(buf, q)
            empties += n == 0
            q += 4 + n
        return empties
