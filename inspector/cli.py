"""Command line: ``stable-inspect COMMAND PATH …`` (and plain ``stable-inspect PATH`` for the TUI).

Exit status: 0 success (for ``check``: no error finding), 1 ``check`` found an error finding, 2 the
input cannot be read (one line on stderr, never a traceback). The non-interactive commands never
import Textual, so they start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inspector import __version__
from inspector.memory import OutOfBounds
from inspector.snapshot import InputError

COMMANDS = ("summary", "extract", "entries", "check", "salvage", "diff", "open", "bench")


class UsageError(Exception):
    """Bad arguments that argparse cannot see (unknown memory id, output would overwrite input…)."""


def _add_decoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--did", metavar="FILE", help="a .did file: show field names for Candid hashes")
    p.add_argument("--schema", metavar="FILE", help="a TOML schema that names each memory's key/value types")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stable-inspect",
        description="Inspect stable-memory snapshots of Internet Computer canisters (ic-stable-structures layouts).",
    )
    parser.add_argument("--version", action="version", version=f"stable-inspect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("summary", help="print the decoded layout (MemoryManager, memories, structures)")
    p.add_argument("path", help="stable_memory.bin, any raw stable-memory file, or a snapshot directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a tree")
    p.add_argument(
        "--deep", action="store_true", help="walk every structure fully (node and allocator figures)"
    )
    _add_decoder_options(p)

    p = sub.add_parser("extract", help="write one memory's virtual bytes to a file")
    p.add_argument("path")
    p.add_argument(
        "--memory", required=True, help="MemoryId (0-254), or 'raw' for a snapshot without a MemoryManager"
    )
    p.add_argument("-o", "--output", required=True, help="output file (never the input; see --force)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")

    p = sub.add_parser("entries", help="list the entries of one structure")
    p.add_argument("path")
    p.add_argument("--memory", required=True, help="MemoryId or 'raw' (for a log, either half)")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--limit", type=int, default=None, help="stop after N entries")
    p.add_argument(
        "--key-size", type=int, default=None, help="B-tree keys are fixed-size N bytes (no length prefix)"
    )
    _add_decoder_options(p)

    p = sub.add_parser("check", help="diagnose corruption; exit 1 when there is an error finding")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the summary JSON object with findings")
    p.add_argument("--no-scan", action="store_true", help="skip the orphan scan of unowned buckets")
    _add_decoder_options(p)

    p = sub.add_parser("salvage", help="recover map entries that are no longer reachable")
    p.add_argument("path")
    p.add_argument("--memory", required=True, help="MemoryId of the map (or 'raw')")
    p.add_argument("--reference", metavar="OLDPATH", help="an earlier snapshot to compare entries with")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    _add_decoder_options(p)

    p = sub.add_parser("diff", help="compare two snapshots (TUI unless --json or --report)")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--report", action="store_true", help="print a text report instead of opening the TUI")
    _add_decoder_options(p)

    p = sub.add_parser("open", help="open the terminal UI (the default command)")
    p.add_argument("path")
    _add_decoder_options(p)

    p = sub.add_parser("bench", help="run the performance benchmark")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="smaller inputs, fewer runs")
    p.add_argument("--workdir", default=None, help="where to build benchmark inputs (default: a temp dir)")
    p.add_argument(
        "--inputs", metavar="DIR", help="also time real snapshots in DIR that have an expected.json"
    )
    return parser


# A memory of a reconstructed layout whose MemoryId was lost is named by its first bucket: "?b1".
_BUCKET_KEY = re.compile(r"^\??b(?:ucket:)?(\d+)$")


def _parse_memory_id(text: str) -> int | str:
    t = text.strip()
    if t == "raw":
        return "raw"
    m = _BUCKET_KEY.match(t)
    if m:
        return f"?b{int(m.group(1))}"
    try:
        value = int(t, 0)
    except ValueError:
        raise UsageError(
            f"--memory must be a MemoryId (0-254), 'raw' or '?b<bucket>', not {text!r}"
        ) from None
    if not 0 <= value <= 254:
        raise UsageError(f"--memory {value} is out of range: MemoryIds are 0-254")
    return value


def _write_output(
    out: Path, inputs: Sequence[Path | None], force: bool, writer: Callable[[Any], None]
) -> None:
    """Write an output file without ever touching an input, and without clobbering unless --force."""
    for src in inputs:
        if src is not None and out.exists() and os.path.samefile(out, src):
            raise UsageError(f"{out}: refusing to overwrite the input snapshot")
        if src is not None and out.resolve() == src.resolve():
            raise UsageError(f"{out}: refusing to overwrite the input snapshot")
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists (use --force to overwrite)")
    tmp = out.with_name(out.name + ".partial")
    try:
        # A leftover (or planted) OUT.partial may be a symlink or hard link to the input: unlink the name
        # and create afresh ("x": O_EXCL), so opening it can never truncate some other file.
        tmp.unlink(missing_ok=True)
        with open(tmp, "xb") as fh:
            writer(fh)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cmd_summary(args: argparse.Namespace) -> int:
    from inspector.session import load

    session = load(args.path, did=args.did, schema=args.schema)
    try:
        session.snapshot.check_unchanged()
        if args.json:
            print(json.dumps(session.analysis.to_json(deep=args.deep), indent=2, default=_json_default))
        else:
            from inspector.render import print_summary

            print_summary(session, deep=args.deep)
        return 0
    finally:
        session.close()


def cmd_extract(args: argparse.Namespace) -> int:
    from inspector.session import load

    memory_id = _parse_memory_id(args.memory)
    session = load(args.path)
    try:
        mem = session.analysis.memory(memory_id)
        if mem is None:
            known = ", ".join(str(m) for m, _ in session.analysis.memory_refs) or "none"
            raise UsageError(f"memory {args.memory} is not in this snapshot (memories: {known})")
        total = mem.size

        def write(fh: Any) -> None:
            step = 1 << 22
            pos = 0
            while pos < total:
                # A file that shrank while mapped would kill the process on the next read (SIGBUS).
                session.snapshot.check_unchanged()
                n = min(step, total - pos)
                try:
                    data = mem.read(pos, n)
                except OutOfBounds as exc:
                    raise InputError(
                        f"memory {memory_id} is cut off by the end of the snapshot (truncated?): {exc}"
                    ) from None
                fh.write(data)
                pos += n

        _write_output(Path(args.output), [session.snapshot.file_path], args.force, write)
    finally:
        session.close()
    print(f"wrote {total:,} bytes of memory {memory_id} to {args.output}", file=sys.stderr)
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    if isinstance(o, set | tuple):
        return list(o)
    return str(o)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "summary": cmd_summary,
    "extract": cmd_extract,
}


def _lazy_handler(name: str) -> Callable[[argparse.Namespace], int]:
    """Commands that live in their own modules, imported only when used."""
    module = {
        "entries": "inspector.commands.entries",
        "check": "inspector.commands.check",
        "salvage": "inspector.commands.salvage",
        "diff": "inspector.commands.diff",
        "open": "inspector.commands.open",
        "bench": "inspector.bench",
    }[name]
    import importlib

    return importlib.import_module(module).run  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `stable-inspect PATH` is `stable-inspect open PATH`.
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv = ["open", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    try:
        # Inside the try: a command module that fails to import is an internal error, not a traceback.
        if args.command == "diff" and (args.json or args.report):
            # Start the byte compare in a child before the heavy imports, so they overlap with it.
            from inspector.diff_prefetch import start_byte_diff

            args.pending_bytes = start_byte_diff(args.old, args.new)
        handler = HANDLERS.get(args.command) or _lazy_handler(args.command)
        from inspector.slow_progress import for_command

        tui = args.command == "diff" and not (args.json or args.report)
        with for_command("open" if tui else args.command):  # a line on stderr after 2 s (terminal only)
            return handler(args)
    except (InputError, UsageError) as exc:
        from inspector.safe_text import escape_control

        # One line, whatever the path or the data in the message holds (newlines, escape sequences).
        print(f"stable-inspect: {escape_control(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stable-inspect: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `stable-inspect entries … | head` closes the pipe early: not an error.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except Exception as exc:
        if os.environ.get("STABLE_INSPECT_DEBUG"):
            raise
        from inspector.safe_text import escape_control

        print(
            f"stable-inspect: internal error: {type(exc).__name__}: {escape_control(str(exc))} "
            "(set STABLE_INSPECT_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
