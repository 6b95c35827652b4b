"""The TUI's first paint and scrolling, measured by a probe that drives the app in a child process (so the
benchmark itself never imports Textual).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from inspector.bench.runner import ChildRun, run_child

# --- the TUI, driven in a child ---------------------------------------------------------------------------

# Runs in a child (``python -c``) so this module never imports Textual. It only uses the app factory
# and the widgets' duck-typed Tree API, so it keeps working while the TUI evolves; anything missing
# comes back as {"error": …}. Times are perf_counter values, which on Linux are CLOCK_MONOTONIC and so
# comparable with the parent's. First paint = the app receiving ``Ready``, which Textual posts right
# after the first compositor refresh of the first screen.
TUI_PROBE = r"""
import asyncio, json, statistics, sys, time
T0 = time.perf_counter()
mode, path, keys = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"t0": T0}
def emit():
    print(json.dumps(out), flush=True)
try:
    from inspector.tui.app import create_app
except Exception as exc:
    out["error"] = f"inspector.tui.app.create_app unavailable: {type(exc).__name__}: {exc}"
    emit(); sys.exit(0)
out["imported"] = time.perf_counter()
app = create_app(path)
out["created"] = time.perf_counter()
seen = {}
def hook(msg):
    seen.setdefault(type(msg).__name__, time.perf_counter())
gaps = []
async def heartbeat():
    # The longest gap between 5 ms ticks is the longest time the UI could not react to anything.
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        gaps.append(time.perf_counter() - t - 0.005)
def find_tree():
    for w in app.screen.walk_children():
        if hasattr(w, "cursor_node") and hasattr(w, "root") and hasattr(w, "move_cursor"):
            return w
    return None
def tree_nodes(root):
    stack = [root]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children)
def loaded(node):
    kids = list(node.children)
    return bool(kids) and kids[0].data is not None
async def press_until_loaded(pilot, node, lat, limit=60.0):
    t = time.perf_counter()
    while not loaded(node) and time.perf_counter() - t < limit:
        s = time.perf_counter()
        await pilot.press("down")
        lat.append(time.perf_counter() - s)
    return time.perf_counter() - t
async def scroll(pilot):
    tree = find_tree()
    if tree is None:
        out["scroll_error"] = "no tree widget on the first screen"; return
    cands = [n for n in tree_nodes(tree.root) if getattr(n.data, "kind", None) == "entries"]
    if not cands:
        out["scroll_error"] = "no 'entries' node on the first screen"; return
    node = max(cands, key=lambda n: getattr(n.data, "child_count_hint", 0) or 0)
    out["entries_node"] = str(getattr(node.data, "name", ""))
    lat = []
    gaps.clear()
    tree.move_cursor(node); await pilot.pause()
    node.expand()
    out["pages_load_s"] = await press_until_loaded(pilot, node, lat)
    for key in ["down"] * (keys // 2) + ["pagedown"] * keys + ["end"] + ["up"] * (keys // 4):
        s = time.perf_counter(); await pilot.press(key); lat.append(time.perf_counter() - s)
    pages = [c for c in node.children if c.data is not None]
    out["pages"] = len(pages)
    last = pages[-1]
    load_s = 0.0
    while True:  # down to the last page of entries (a long map groups its pages)
        tree.move_cursor(last); await pilot.pause()
        last.expand()
        load_s += await press_until_loaded(pilot, last, lat)
        kids = [c for c in last.children if c.data is not None]
        if not kids or getattr(kids[-1].data, "kind", None) != "group":
            break
        last = kids[-1]
    out["deep_page"] = str(getattr(last.data, "name", ""))
    out["deep_page_load_s"] = load_s
    for key in ["down"] * keys + ["pagedown"] * (keys // 2):
        s = time.perf_counter(); await pilot.press(key); lat.append(time.perf_counter() - s)
    out["keys"] = len(lat)
    out["key_median_s"] = statistics.median(lat)
    out["key_max_s"] = max(lat)
    out["stall_max_s"] = max(gaps, default=0.0)
async def main():
    async with app.run_test(size=(160, 48), message_hook=hook) as pilot:
        hb = asyncio.create_task(heartbeat())
        await pilot.pause()
        out["settled"] = time.perf_counter()
        out["mount"] = seen.get("Mount")
        out["ready"] = seen.get("Ready")
        if mode == "scroll":
            try:
                await scroll(pilot)
            except Exception as exc:
                out["scroll_error"] = f"{type(exc).__name__}: {exc}"
        hb.cancel()
asyncio.run(main())
emit()
"""


def run_tui_probe(
    mode: str, path: Path, workdir: Path, keys: int = 40, timeout: float = 300.0
) -> tuple[dict[str, Any], ChildRun]:
    """(probe JSON, the child's run) of one TUI probe; ``keys`` scales the scroll test's key presses."""
    out = workdir / "tui-probe.json"
    cmd = [sys.executable, "-c", TUI_PROBE, mode, str(path), str(keys)]
    try:
        r = run_child(cmd, stdout=out, timeout=timeout)
        text = out.read_text(encoding="utf-8", errors="replace").strip() if out.exists() else ""
    finally:
        out.unlink(missing_ok=True)
    if r.rc != 0 or not text:
        return {"error": f"TUI probe exited with {r.rc}: {r.stderr.splitlines()[-1:] or ''}"}, r
    try:
        return json.loads(text.splitlines()[-1]), r
    except ValueError:
        return {"error": f"TUI probe printed {text[-200:]!r}"}, r
