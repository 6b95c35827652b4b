"""Issue 14's CLI points: the diff as a CI gate, summary --deep text, salvage's unrecovered keys, .did
syntax errors, plurals, --help. Snapshots are forged here or taken from the bundled samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT

from inspector.cli import build_parser, main
from inspector.forge import build_mm_image, forge_btreemap
from inspector.words import plural

SAMPLES = ROOT / "snapshots" / "samples"


def _map_snapshot(path: Path, n: int, *, skip: set[int] | None = None) -> Path:
    entries = [(f"key-{i:04d}".encode(), f"value {i}".encode()) for i in range(n) if i not in (skip or set())]
    path.write_bytes(build_mm_image(1, [(3, forge_btreemap(entries))]).to_bytes())
    return path


# --------------------------------------------------------------------------- diff --fail-on


def test_diff_fail_on_loss_incident_any(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _map_snapshot(tmp_path / "old.bin", 40)
    same = _map_snapshot(tmp_path / "same.bin", 40)
    lost = _map_snapshot(tmp_path / "lost.bin", 40, skip={7, 8})
    grown = _map_snapshot(tmp_path / "grown.bin", 41)
    for mode in ("loss", "incident", "any"):
        assert main(["diff", str(old), str(same), "--fail-on", mode]) == 0, mode
    capsys.readouterr()
    assert main(["diff", str(old), str(lost), "--fail-on", "loss"]) == 1
    err = capsys.readouterr().err
    assert "--fail-on loss" in err and "memory 3: 2 entries removed" in err
    assert main(["diff", str(old), str(lost), "--fail-on", "incident"]) == 0, "losing entries is no incident"
    assert main(["diff", str(old), str(grown), "--fail-on", "loss"]) == 0, "an added entry is no loss"
    assert main(["diff", str(old), str(grown), "--fail-on", "any"]) == 1
    out = capsys.readouterr()
    assert "changed byte range" in out.err and out.out, "the gate prints the report too"
    with pytest.raises(SystemExit) as bad:
        main(["diff", str(old), str(same), "--fail-on", "everything"])
    assert bad.value.code == 2


def test_diff_fail_on_incident_on_the_bundled_incident(capsys: pytest.CaptureFixture[str]) -> None:
    healthy, incident = SAMPLES / "healthy", SAMPLES / "after_stable_save"
    assert main(["diff", str(healthy), str(incident), "--fail-on", "incident"]) == 1
    assert "incident detected" in capsys.readouterr().err


# --------------------------------------------------------------------------- summary --deep


def test_summary_deep_text_has_the_json_figures(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(SAMPLES / "healthy")
    assert main(["summary", "--deep", "--json", path]) == 0
    (deep,) = [s for s in json.loads(capsys.readouterr().out)["structures"] if "nodes" in s]
    assert main(["summary", "--deep", path]) == 0
    text = capsys.readouterr().out
    nodes = deep["nodes"]
    assert f"nodes: {plural(nodes['count'], 'node')} ({nodes['internal_count']:,} internal" in text
    assert f"depth {nodes['depth']:,}" in text
    assert f"overflow pages: {nodes['overflow_page_count']:,}" in text
    assert f"free list {plural(deep['allocator']['free_list_len'], 'chunk')}" in text
    assert f"entries_sha256: {deep['entries_sha256']}" in text
    assert main(["summary", path]) == 0
    assert "entries_sha256" not in capsys.readouterr().out, "only with --deep"


# --------------------------------------------------------------------------- salvage --reference


def test_salvage_lists_reference_keys_not_recovered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = _map_snapshot(tmp_path / "now.bin", 30, skip={3, 17})
    before = _map_snapshot(tmp_path / "before.bin", 30)
    assert main(["salvage", str(now), "--memory", "3", "--reference", str(before)]) == 0
    err = capsys.readouterr().err
    assert "2 keys of the reference not recovered (nor in the live map):" in err
    listed = [
        line.split(": ", 1)[1].strip() for line in err.splitlines() if line.startswith("stable-inspect:   ")
    ]
    assert len(listed) == 2 and all("key-0003" in x or "key-0017" in x for x in listed)


# --------------------------------------------------------------------------- .did syntax errors


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("type T = record { name : text; age : };\n", "line 1, column 38"),
        ("type T = record {\n  a : text\n  b : nat };\n", "line 3, column 3"),
        ('type T = variant { "open ;\n', "line 1, column 20"),
        ("service : { get : (nat) -> (text) \n", "line 2, column 1"),
    ],
)
def test_did_with_syntax_error_is_refused_with_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    did = tmp_path / "broken.did"
    did.write_text(text)
    assert main(["summary", str(SAMPLES / "healthy"), "--did", str(did)]) == 2
    err = capsys.readouterr().err
    assert where in err and "broken.did" in err and len(err.strip().splitlines()) == 1


def test_valid_did_forms_are_accepted() -> None:
    from inspector.decode.did_check import check_did

    check_did(
        '// comment with a " quote\n/* nested /* block */ comment */\n'
        "type HeaderField = record { text; text; };\n"
        'type V = variant { a; b : nat; "c d" : text; 3 : null };\n'
        "type S = variant { Callback : record { callback : func (T) -> (R) query; token : T } };\n"
        "type M = vec record { text; variant { map : M; string : text; bytes : vec nat8 } };\n"
        'import "other.did";\n'
        "service : (init : opt nat) -> {\n  get : (key : text) -> (opt blob) query;\n  put : F;\n}\n"
    )


# --------------------------------------------------------------------------- words


def test_plurals_and_help_of_every_positional() -> None:
    assert plural(1, "entry") == "1 entry" and plural(2, "entry") == "2 entries"
    assert plural(1, "allocated chunk") == "1 allocated chunk"
    assert plural(1_000, "allocated chunk") == "1,000 allocated chunks"
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        for action in p._actions:
            if not action.option_strings:
                assert action.help, f"{name} {action.dest}: no --help text"


def test_one_entry_map_says_one_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(_map_snapshot(tmp_path / "one.bin", 1))]) == 0
    out = capsys.readouterr().out
    assert "1 entry" in out and "1 entries" not in out
    assert "1 allocated chunk " in out or "1 allocated chunk\n" in out
