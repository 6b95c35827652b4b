"""The timed targets: one ``Bench`` runs every row of the table on prepared inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from inspector.bench.inputs import Inputs, check_jsonl_output, check_map_input
from inspector.bench.model import (
    CHECK_LIMIT_S,
    DEEP_LIMIT_X,
    DIFF_LIMIT_X,
    FLAT_RSS_LIMIT_X,
    HOSTILE_DIFF_LIMIT_S,
    HOSTILE_DIFF_MIB,
    JSONL_LIMIT_X,
    NATIVE_WALK_S,
    SUMMARY_LIMIT_S,
    SUMMARY_RSS_LIMIT_MB,
    TUI_PAINT_LIMIT_S,
    TUI_STALL_LIMIT_S,
    BenchError,
    Config,
    GiB,
    MiB,
    Row,
    Timing,
)
from inspector.bench.native import (
    FIXED,
    Reference,
    candidate_references,
    native_walk_binary,
    native_walk_missing,
    reference_row,
    time_interleaved,
    usable_references,
)
from inspector.bench.runner import (
    ChildRun,
    _child_env,
    _log,
    command_available,
    inspector_cmd,
    run_child,
    time_command,
)
from inspector.bench.tui_probe import run_tui_probe

# --- targets --------------------------------------------------------------------------------------------


def _fmt_s(x: float) -> str:
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def timed_row(
    target: str,
    timing: Timing,
    *,
    limit: float,
    limit_text: str,
    reference: float | None = None,
    note: str = "",
) -> Row:
    fig = timing.median
    return Row(
        target=target,
        figure=fig,
        unit="s",
        limit=limit,
        limit_text=limit_text,
        ratio=fig / (reference if reference else limit),
        passed=fig <= limit,
        rss_mb=timing.rss_mb,
        samples=timing.times,
        note=note,
    )


def na_row(target: str, limit_text: str, why: str) -> Row:
    return Row(target, None, "s", None, limit_text, None, None, note=why)


class Bench:
    def __init__(self, cfg: Config, inputs: Inputs, workdir: Path) -> None:
        self.cfg = cfg
        self.inputs = inputs
        self.workdir = workdir
        self.rows: list[Row] = []
        self.deep_timings: dict[str, Timing] = {}  # summary --deep of the map, by "raw" / "MemoryManager"

    def _time(self, cmd: Sequence[str], *, ok: Sequence[int] = (0,), what: str = "") -> Timing:
        # The untimed first run warms the page cache and bytecode caches, as for a user's second try.
        if self.cfg.warmup:
            run_child(cmd)
        return time_command(cmd, self.cfg.runs, ok=ok, what=what)

    def _guard(self, target: str, limit_text: str, fn: Callable[[], list[Row]]) -> None:
        _log(f"{target} …")
        try:
            rows = fn()
        except BenchError as exc:
            rows = [Row(target, None, "s", None, limit_text, None, False, note=f"error: {exc}")]
        except Exception as exc:  # noqa: BLE001 - one broken target (a command in flux) must not end the run
            rows = [
                Row(
                    target,
                    None,
                    "s",
                    None,
                    limit_text,
                    None,
                    False,
                    note=f"error: {type(exc).__name__}: {exc}",
                )
            ]
        self.rows.extend(rows)
        for r in rows:
            fig = "—" if r.figure is None else f"{r.figure:.3f} {r.unit}"
            _log(f"  {r.target}: {fig} [{r.result}]")

    # -- summary --

    def summary(self) -> list[Row]:
        inp, cfg = self.inputs, self.cfg
        big = self._time(inspector_cmd("summary", str(inp.sparse_big)), what="summary")
        small = self._time(inspector_cmd("summary", str(inp.sparse_small)), what="summary")
        size = f"{cfg.sparse_gib:g} GiB sparse, 16 memories"
        return [
            timed_row(f"summary ({size})", big, limit=SUMMARY_LIMIT_S, limit_text=f"≤ {SUMMARY_LIMIT_S:g} s"),
            Row(
                f"summary peak RSS ({size})",
                big.rss_mb,
                "MB",
                SUMMARY_RSS_LIMIT_MB,
                f"≤ {SUMMARY_RSS_LIMIT_MB:g} MB",
                big.rss_mb / SUMMARY_RSS_LIMIT_MB,
                big.rss_mb <= SUMMARY_RSS_LIMIT_MB,
                big.rss_mb,
                note=f"{small.rss_mb:.0f} MB at {cfg.small_sparse_gib:g} GiB",
            ),
        ]

    def _native_walk(self, path: Path, memory_id: int | str) -> tuple[list[str] | None, str]:
        """The bare native walk of a forged map (checked once against the forge's count and digest), or
        None and the reference the rows fall back to: the issue's fixed figure, as before."""
        inp = self.inputs
        walk = native_walk_binary()
        refs = candidate_references(walk, None)  # readback is for the real inputs only
        usable, dropped = usable_references(
            refs, path, memory_id, self.workdir, inp.map_count, inp.map_sha256
        )
        if usable:
            return usable[0][1], "vs the native walk timed in this run"
        why = dropped if walk else [native_walk_missing()]
        return None, FIXED.what + "".join(f"; {d}" for d in why)

    def _judged(self, cli: Sequence[str], native: list[str], reference: str) -> tuple[Timing, float, Row]:
        """The command's timing, judged against the native walk timed interleaved with it in this run:
        (timing, the walk's median, the walk's reference row)."""
        t = time_interleaved({"cli": cli, "native": native}, self.cfg.interleaved_runs, warm=self.cfg.warmup)
        row = reference_row(reference, t["native"], f"{Reference('native-walk').what}; interleaved")
        return t["cli"], t["native"].median, row

    def deep(self) -> list[Row]:
        inp = self.inputs
        rows = []
        for label, path, mid in (("MemoryManager", inp.map_mm, 1), ("raw", inp.map_raw, "raw")):
            check_map_input(path, inp.map_count, inp.map_sha256)
            cli = inspector_cmd("summary", str(path), "--deep", "--json")
            native, judged_by = self._native_walk(path, mid)
            if native is None:
                t, ref = self._time(cli, what="summary --deep"), NATIVE_WALK_S
            else:
                t, ref, ref_row = self._judged(
                    cli, native, f"reference: native walk, {inp.map_count:,}-entry u64 map ({label})"
                )
                rows.append(ref_row)
            self.deep_timings[label] = t
            limit = DEEP_LIMIT_X * ref
            rows.append(
                timed_row(
                    f"summary --deep, {inp.map_count:,}-entry u64 map ({label})",
                    t,
                    limit=limit,
                    limit_text=f"≤ {DEEP_LIMIT_X:g}× native ({limit:.2f} s)",
                    reference=ref,
                    note=f"count and entries_sha256 match the forge; {judged_by}",
                )
            )
        return rows

    def jsonl(self) -> list[Row]:
        inp = self.inputs
        check_jsonl_output(inp.map_mm, self.workdir, inp.map_count, inp.map_sha256)
        cmd = inspector_cmd("entries", str(inp.map_mm), "--memory", "1", "--format", "jsonl")
        native, judged_by = self._native_walk(inp.map_mm, 1)
        rows = []
        if native is None:  # as before: no untimed first run
            t, ref = time_command(cmd, self.cfg.runs, what="entries --format jsonl"), NATIVE_WALK_S
        else:
            t, ref, ref_row = self._judged(
                cmd, native, f"reference: native walk, {inp.map_count:,}-entry u64 map (MemoryManager)"
            )
            rows.append(ref_row)
        limit = JSONL_LIMIT_X * ref
        return rows + [
            timed_row(
                f"entries --format jsonl, {inp.map_count:,} entries",
                t,
                limit=limit,
                limit_text=f"≤ {JSONL_LIMIT_X:g}× native ({limit:.2f} s)",
                reference=ref,
                note=f"to /dev/null; an untimed export checked against count and entries_sha256; {judged_by}",
            )
        ]

    # -- diff --

    def diff(self) -> list[Row]:
        inp, cfg = self.inputs, self.cfg
        a, a2, b = str(inp.dense_a), str(inp.dense_a2), str(inp.dense_b)
        size = inp.dense_a.stat().st_size
        label = f"{size / GiB:.2f} GiB" if size >= GiB // 2 else f"{size / MiB:.0f} MiB"
        engine_code = (
            "import sys\nfrom inspector.diff.byte_ranges import diff_files\n"
            "r = diff_files(sys.argv[1], sys.argv[2])\nprint(r.count, r.total_bytes)\n"
        )
        engine = [sys.executable, "-c", engine_code, a, b]
        out = subprocess.run(engine, capture_output=True, text=True, env=_child_env(), check=False)
        if out.stdout.split() != [str(cfg.patches), str(cfg.patches)]:
            raise BenchError(f"byte diff found {out.stdout.strip()!r}, expected {cfg.patches} 1-byte ranges")
        has_cli = command_available("diff")
        cli = inspector_cmd("diff", a, b, "--json")
        if has_cli:
            self._check_diff_cli(cli)
        # Everything is read once so every figure comes from the page cache, as the reference assumes.
        run_child(["cat", a, a2, b], timeout=1200.0)
        # Interleaved, not one command after the other: on a shared machine the load drifts, and the
        # diff/cmp ratio must compare like with like.
        cmds = {"cmp": ["cmp", "-s", a, a2], "cat": ["cat", a, a2], "engine": engine}
        if has_cli:
            cmds["cli"] = cli
        runs: dict[str, list[ChildRun]] = {k: [] for k in cmds}
        for _ in range(cfg.interleaved_runs):
            for key, cmd in cmds.items():
                r = run_child(cmd)
                if r.rc not in (0, 1):
                    raise BenchError(f"{' '.join(cmd[:3])} exited with {r.rc}: {r.stderr[-300:]}")
                runs[key].append(r)
        t = {k: Timing([r.wall for r in v], max(r.rss_kb for r in v), 0) for k, v in runs.items()}
        cmp_s = t["cmp"].median

        def ref(target: str, timing: Timing, note: str) -> Row:
            return Row(
                target, timing.median, "s", None, "", None, None, timing.rss_mb, timing.times, note=note
            )

        rows = [
            ref(
                f"reference: cmp -s, two identical {label} files",
                t["cmp"],
                f"{2 * size / cmp_s / 1e9:.1f} GB/s; measured interleaved with the diff",
            ),
            ref(
                "reference: cat of the same two files",
                t["cat"],
                f"{2 * size / t['cat'].median / 1e9:.1f} GB/s",
            ),
        ]
        limit = DIFF_LIMIT_X * cmp_s
        limit_text = f"≤ {DIFF_LIMIT_X:g}× cmp -s ({limit:.3f} s)"
        engine_target = (
            f"diff engine alone (diff.byte_ranges.diff_files), {label}, {cfg.patches:,} bytes differ"
        )
        engine_note = f"a process that only byte-diffs: {t['engine'].median / cmp_s:.2f}× cmp; ranges checked"
        if has_cli:
            rows.append(ref(engine_target, t["engine"], engine_note))
            rows.append(
                timed_row(
                    f"diff --json, {label} snapshots, {cfg.patches:,} scattered bytes differ",
                    t["cli"],
                    limit=limit,
                    limit_text=limit_text,
                    reference=cmp_s,
                    note="whole command: start-up, both analyses, byte diff, layout/entry attribution, JSON",
                )
            )
        else:
            rows.append(
                timed_row(
                    engine_target,
                    t["engine"],
                    limit=limit,
                    limit_text=limit_text,
                    reference=cmp_s,
                    note="the diff command is not in the tree yet: " + engine_note,
                )
            )
        return rows

    def _check_diff_cli(self, cmd: Sequence[str]) -> None:
        out = subprocess.run(list(cmd), capture_output=True, text=True, env=_child_env(), check=False)
        if out.returncode not in (0, 1):
            raise BenchError(f"diff --json exited with {out.returncode}: {out.stderr.strip()[-300:]}")
        try:
            report = json.loads(out.stdout)
        except ValueError as exc:
            raise BenchError(f"diff --json did not print JSON: {exc}") from None
        changed = report.get("changed_bytes") if isinstance(report, dict) else None
        if changed is not None and changed != self.cfg.patches:
            raise BenchError(
                f"diff --json reports {changed} changed bytes, the forge patched {self.cfg.patches}"
            )

    # -- check --

    def check(self) -> list[Row]:
        inp, cfg = self.inputs, self.cfg
        if command_available("check"):

            def cmd(p: Path) -> list[str]:
                return inspector_cmd("check", str(p), "--json")

            how = "check --json (orphan scan on)"
            ok: Sequence[int] = (0, 1)
        else:
            # Until the command exists: what it is specified to do, load with forensics (which runs the
            # orphan scan) and the validated walk of every structure.
            code = (
                "import sys\nfrom inspector.session import load\n"
                "s = load(sys.argv[1])\ns.analysis.deep()\nprint(len(s.analysis.all_findings()))\n"
            )

            def cmd(p: Path) -> list[str]:
                return [sys.executable, "-c", code, str(p)]

            how = "check is not in the tree yet: load + forensics orphan scan + deep walks, as a process"
            ok = (0,)
        big = self._time(cmd(inp.sparse_big), ok=ok, what="check")
        small = self._time(cmd(inp.sparse_small), ok=ok, what="check")
        name = f"check ({cfg.sparse_gib:g} GiB sparse, 16 memories)"
        flat = big.rss_mb / small.rss_mb if small.rss_kb else float("inf")
        return [
            timed_row(name, big, limit=CHECK_LIMIT_S, limit_text=f"≤ {CHECK_LIMIT_S:g} s", note=how),
            Row(
                f"check peak RSS, {cfg.sparse_gib:g} GiB vs {cfg.small_sparse_gib:g} GiB",
                big.rss_mb,
                "MB",
                small.rss_mb * FLAT_RSS_LIMIT_X,
                f"flat: ≤ {FLAT_RSS_LIMIT_X:g}× the {cfg.small_sparse_gib:g} GiB run",
                flat,
                flat <= FLAT_RSS_LIMIT_X,
                big.rss_mb,
                note=f"{small.rss_mb:.0f} MB at {cfg.small_sparse_gib:g} GiB",
            ),
        ]

    # -- no Textual on the CLI path --

    def no_textual(self) -> list[Row]:
        inp = self.inputs
        code = (
            "import contextlib, io, json, sys\n"
            "from inspector.cli import main\n"
            "sink = io.StringIO()\n"
            "with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):\n"
            "    rc = main(sys.argv[1:])\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')[:5]))\n"
        )
        commands: list[list[str]] = [
            ["summary", str(inp.sparse_big)],
            ["summary", str(inp.map_mm), "--deep", "--json"],
            ["entries", str(inp.map_mm), "--memory", "1", "--format", "jsonl", "--limit", "100"],
            [
                "extract",
                str(inp.sparse_small),
                "--memory",
                "3",
                "-o",
                str(self.workdir / "extract.bin"),
                "--force",
            ],
        ]
        if command_available("check"):
            commands.append(["check", str(inp.sparse_small), "--json"])
        if command_available("diff"):
            commands.append(["diff", str(inp.map_mm), str(inp.map_raw), "--json"])
        loaded: list[str] = []
        for args in commands:
            out = subprocess.run(
                [sys.executable, "-c", code, *args],
                capture_output=True,
                text=True,
                env=_child_env(),
                check=False,
            )
            if out.returncode != 0:
                raise BenchError(f"{args[0]} failed: {out.stderr.strip()[-300:]}")
            mods = json.loads(out.stdout.strip().splitlines()[-1])
            if mods:
                loaded.append(f"{args[0]}: {', '.join(mods)}")
        (self.workdir / "extract.bin").unlink(missing_ok=True)
        names = ", ".join(dict.fromkeys(a[0] for a in commands))
        return [
            Row(
                "CLI path never imports textual",
                float(len(loaded)),
                "cmds",
                0.0,
                "0 commands",
                None,
                not loaded,
                note="; ".join(loaded) or f"checked sys.modules after: {names}",
            )
        ]

    # -- TUI --

    def _sparse_8tib(self) -> Path | None:
        """The small sparse snapshot extended to 8 TiB of holes (no disk used), as a user's truncate;
        None where the filesystem cannot hold such a file."""
        path = self.workdir / "sparse-8tib.bin"
        try:
            if not path.exists():
                shutil.copyfile(self.inputs.sparse_small, path)
                os.truncate(path, 8 << 40)
        except OSError:
            path.unlink(missing_ok=True)
            return None
        return path

    def tui(self) -> list[Row]:
        inp, cfg = self.inputs, self.cfg
        candidates: list[tuple[str, Callable[[], Path | None]]] = [
            (f"{cfg.sparse_gib:g} GiB sparse", lambda: inp.sparse_big),
            (f"{inp.map_count:,}-entry map", lambda: inp.map_mm),
            ("map on raw memory", lambda: inp.map_raw),
            (f"{inp.dense_a.stat().st_size / MiB:,.0f} MiB dense", lambda: inp.dense_a),
            ("8 TiB sparse, truncate -s 8T", self._sparse_8tib),
        ]
        targets = [(label, p) for label, make in candidates[: cfg.tui_inputs] if (p := make()) is not None]
        rows: list[Row] = []
        limit_text = f"≤ {TUI_PAINT_LIMIT_S:g} s"
        for label, path in targets:
            paints: list[float] = []
            rss = 0
            detail = ""
            warm = 1 if cfg.warmup else 0
            failed = ""
            for _ in range(cfg.tui_runs + warm):  # a first run only warms caches
                data, child = run_tui_probe("paint", path, self.workdir)
                if "error" in data:
                    failed = data["error"]
                    break
                ready = data.get("ready") or data["settled"]
                paints.append(ready - child.spawn)
                rss = max(rss, child.rss_kb)
                detail = (
                    f"import {data['imported'] - data['t0']:.2f} s, load {data['created'] - data['imported']:.2f} s, "
                    f"app → first paint {ready - data['created']:.2f} s"
                )
            if failed:
                rows.append(na_row(f"TUI first screen ({label})", limit_text, failed))
                continue
            timing = Timing(paints[warm:], rss, 0)
            rows.append(
                timed_row(
                    f"TUI first screen ({label})",
                    timing,
                    limit=TUI_PAINT_LIMIT_S,
                    limit_text=limit_text,
                    note=f"process start → first paint (Ready); {detail}",
                )
            )
        data, child = run_tui_probe("scroll", inp.map_mm, self.workdir, keys=cfg.tui_keys)
        rss = child.rss_kb
        name = f"TUI scroll of the {inp.map_count:,}-entry map: longest stall"
        why = data.get("error") or data.get("scroll_error")
        if why:
            rows.append(na_row(name, f"≤ {TUI_STALL_LIMIT_S:g} s", why))
            return rows
        stall = float(data["stall_max_s"])
        rows.append(
            Row(
                name,
                stall,
                "s",
                TUI_STALL_LIMIT_S,
                f"≤ {TUI_STALL_LIMIT_S:g} s event-loop block",
                stall / TUI_STALL_LIMIT_S,
                stall <= TUI_STALL_LIMIT_S,
                rss / 1024,
                samples=[stall],
                note=(
                    f"{data['keys']} keys over {data['pages']} pages; pilot round trip per key: median "
                    f"{data['key_median_s'] * 1000:.0f} ms, max {data['key_max_s'] * 1000:.0f} ms; "
                    f"'{data['deep_page']}' built in {data['deep_page_load_s']:.2f} s (worker)"
                ),
            )
        )
        return rows

    # -- issue 16: hostile sizes --

    def hostile(self) -> list[Row]:
        """A diff where every other byte differs, a 15.7 MB metadata value, a TUI on 8 TiB of holes."""
        cfg, work = self.cfg, self.workdir
        mib = min(HOSTILE_DIFF_MIB, cfg.dense_mib)
        zero, pattern = work / f"zero-{mib}mib.bin", work / f"0001-{mib}mib.bin"
        for path, unit in ((zero, b"\x00\x00"), (pattern, b"\x00\x01")):
            if not path.exists() or path.stat().st_size != mib * MiB:
                with open(path, "wb") as fh:
                    for _ in range(mib):
                        fh.write(unit * (MiB // 2))
        rows = []
        what = f"{mib} MiB all-zero vs 00 01 repeated ({mib * MiB // 2:,} changed ranges)"
        for flag in ("--json", "--report"):
            timing = self._time(inspector_cmd("diff", str(zero), str(pattern), flag), what="diff")
            rows.append(
                timed_row(
                    f"diff {flag}, {what}",
                    timing,
                    limit=HOSTILE_DIFF_LIMIT_S,
                    limit_text=f"≤ {HOSTILE_DIFF_LIMIT_S:g} s",
                    note="ranges merged into runs past the cap; totals exact (issue: 240 s / killed at 64 MiB)",
                )
            )
        snapdir = work / "long-metadata"
        if not snapdir.exists():
            snapdir.mkdir()
            shutil.copyfile(self.inputs.sparse_small, snapdir / "stable_memory.bin")
            size = (snapdir / "stable_memory.bin").stat().st_size
            meta = {"stable_memory_size": size, "long_value": "é" + "x" * 15_700_000}
            (snapdir / "metadata.json").write_text(json.dumps(meta))
        timing = self._time(inspector_cmd("summary", str(snapdir)), what="summary")
        rows.append(
            timed_row(
                "summary, a 15.7 MB metadata.json value",
                timing,
                limit=SUMMARY_LIMIT_S,
                limit_text=f"≤ {SUMMARY_LIMIT_S:g} s",
                note="displayed strings capped at 4 KiB (issue: 129 s, 259 MB)",
            )
        )
        return rows

    def run_all(self) -> list[Row]:
        self._guard("summary", f"≤ {SUMMARY_LIMIT_S:g} s", self.summary)
        self._guard("summary --deep", "", self.deep)
        self._guard("entries --format jsonl", "", self.jsonl)
        self._guard("diff", "", self.diff)
        self._guard("check", f"≤ {CHECK_LIMIT_S:g} s", self.check)
        self._guard("no textual on the CLI path", "0 commands", self.no_textual)
        self._guard("TUI", f"≤ {TUI_PAINT_LIMIT_S:g} s", self.tui)
        self._guard("structure-filled diff pairs", "", self.structure_diff)
        if self.cfg.scale_entries:
            self._guard(f"{self.cfg.scale_entries:,}-entry map", "", self.scale)
        if self.inputs_dir is not None:
            self._guard(f"real inputs in {self.inputs_dir}", "", self.real_inputs)
        self._guard("hostile sizes", "", self.hostile)
        return self.rows

    # -- issue 13: library-shaped inputs (inspector.bench.real) --

    inputs_dir: Path | None = None

    def structure_diff(self) -> list[Row]:
        from inspector.bench.real import structure_diff_rows

        return structure_diff_rows(
            self.workdir, self.cfg.dense_mib, self.cfg.patches, self.cfg.interleaved_runs
        )

    def scale(self) -> list[Row]:
        from inspector.bench.scale import scale_rows

        return scale_rows(self)

    def real_inputs(self) -> list[Row]:
        from inspector.bench.real import real_input_rows

        assert self.inputs_dir is not None
        return real_input_rows(self.inputs_dir, self.workdir, self.cfg.interleaved_runs)
