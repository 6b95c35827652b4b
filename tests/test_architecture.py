"""The headless core never imports Textual; the non-interactive commands stay light."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import inspector

ROOT = Path(inspector.__file__).resolve().parent
# Only the TUI package and the command that launches it may import Textual.
UI_MODULES = ("inspector.tui", "inspector.commands.open")


def core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(ROOT)], prefix="inspector."):
        if not info.name.startswith(UI_MODULES):
            names.append(info.name)
    return sorted(names)


def test_core_modules_never_import_textual() -> None:
    mods = core_modules()
    assert "inspector.layouts" in mods and "inspector.cli" in mods
    code = (
        "import importlib, sys\n"
        f"mods = {mods!r}\n"
        "for m in mods:\n"
        "    if m in ('inspector.__main__',):\n"
        "        continue\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k == 'textual' or k.startswith('textual.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core modules pulled in Textual: {out.stdout.strip()}"


def test_no_core_source_mentions_textual_imports() -> None:
    """A static check too, so a lazy import inside a function cannot slip through."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        dotted = ".".join(rel.parts)
        if dotted.startswith(UI_MODULES):
            continue
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import textual", "from textual")):
                offenders.append(f"{dotted}: {s}")
    assert offenders == []
