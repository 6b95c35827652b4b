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


def test_import_linter_contracts_are_kept() -> None:
    """The layer contracts in pyproject.toml ([tool.importlinter]): no Textual in the core, no view in the
    analysis, nothing above the decoders. import-linter reads every import statement, lazy ones inside
    functions included (which a grep for top-level imports missed)."""
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(ROOT.parent / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, "import-linter reported a broken contract (run `lint-imports` for the chain)"


def test_the_textual_contract_covers_every_core_module() -> None:
    """A new core module must be named in the contract, or import-linter would not look at it."""
    import tomllib

    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    contract = next(
        c for c in config["tool"]["importlinter"]["contracts"] if "never imports Textual" in c["name"]
    )
    sources = tuple(contract["source_modules"])
    # __main__ only calls the CLI; the commands package's __init__ is empty (its open/diff modules differ).
    exempt = ("inspector.__main__", "inspector.commands")
    # A package covers its submodules; a plain string prefix would let "inspector.diff" cover
    # a sibling "inspector.diff_x", which import-linter does not check.
    missed = [
        m
        for m in core_modules()
        if m not in exempt and not any(m == s or m.startswith(s + ".") for s in sources)
    ]
    assert missed == [], f"add these to the contract's source_modules in pyproject.toml: {missed}"
