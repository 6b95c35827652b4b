"""Shared helpers for the TUI tests: waiting for workers, finding tree nodes, forging small inputs."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

# Set before any app starts: no animations, so screenshots and cursor positions are deterministic.
os.environ["TEXTUAL_ANIMATIONS"] = "none"

SIZE = (200, 50)


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (the project has no asyncio pytest plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


async def settle(pilot: Any) -> None:
    """Wait until every worker (tree loading, decoding, scans) has finished and the screen caught up."""
    app = pilot.app
    for _ in range(8):
        await pilot.pause()
        await app.workers.wait_for_complete()
        if not any(w.is_running for w in app.workers):
            await pilot.pause()
            if not any(w.is_running for w in app.workers):
                break
    await pilot.pause()


def nodes_of_kind(app: Any, kind: str, memory_id: Any = None) -> list[Any]:
    from inspector.model import Region

    out = []
    stack = [app.region_tree.root]
    while stack:
        node = stack.pop()
        data = node.data
        if (
            isinstance(data, Region)
            and data.kind == kind
            and (memory_id is None or data.memory_id == memory_id)
        ):
            out.append(node)
        stack.extend(reversed(list(node.children)))
    return out


def move_tree_cursor(app: Any, node: Any) -> None:
    tree = app.region_tree
    tree.ensure_lines()
    tree.move_cursor(node)


def corrupt_copy(src: Path, dst: Path) -> Path:
    """pre_upgrade with two header bytes broken: the map's version and the bucket count (error findings)."""
    data = bytearray(src.read_bytes())
    data[0x90003] = 9  # BTreeMap layout version at memory 4's first byte + 3
    data[4] = 9  # num_allocated_buckets: the table claims buckets the file does not hold
    dst.write_bytes(bytes(data))
    return dst


HOSTILE_KEY = b"[red]X\x1b[2J"


def hostile_snapshot(dst: Path) -> Path:
    """A MemoryManager snapshot whose map key is Rich markup plus an ANSI 'clear screen' sequence."""
    from inspector.forge import build_mm_image, forge_btreemap

    fm = forge_btreemap([(HOSTILE_KEY, b"[bold]value\x1b]0;title\x07"), (b"plain", b"v")])
    image = build_mm_image(1, [(3, fm)])
    dst.write_bytes(image.to_bytes())
    return dst
