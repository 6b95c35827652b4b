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
from typing import Any, NoReturn

from inspector import __version__
from inspector.errors import UsageProblem
from inspector.jsonout import json_default

# inspector.memory and inspector.snapshot (construct, rich…) are imported only after the SIGBUS
# supervisor has forked (see main): the waiting parent stays small, and the child does not pay a
# copy-on-write fault for every page of an interpreter heap it shares with it.

COMMANDS = ("summary", "extract", "entries", "check", "salvage", "repair", "diff", "open", "bench")


class UsageError(UsageProblem):
    """Bad arguments that argparse cannot see (unknown memory id, output would overwrite input…)."""


class _Parser(argparse.ArgumentParser):
    """argparse quotes the user's arguments in its errors ("unrecognized arguments: …"): escape them,
    so an ESC typed or pasted into argv is shown, never sent to the terminal."""

    def error(self, message: str) -> NoReturn:
        from inspector.safe_text import cap_text, escape_control

        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {escape_control(cap_text(message, 500))}\n")


def _add_decoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--did", metavar="FILE", help="a .did file: show field names for Candid hashes")
    p.add_argument("--schema", metavar="FILE", help="a TOML schema that names each memory's key/value types")
    _add_base_option(p)


def _add_base_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base",
        metavar="OFFSET",
        default=None,
        help="physical offset of the MemoryManager header (a multiple of 65536, e.g. 0x10000 for "
        "RestrictedMemory 1..): overrides the search",
    )


def _parse_base(text: str) -> int:
    try:
        value = int(text.strip().replace("_", ""), 0)
    except ValueError:
        raise UsageError(f"--base must be a byte offset such as 65536 or 0x10000, not {text!r}") from None
    if value < 0 or value % 65_536:
        raise UsageError(
            f"--base {value:,} is not a multiple of 65,536: a MemoryManager base is page-aligned"
        )
    return value


SNAPSHOT_FORMS = "stable_memory.bin, any raw stable-memory file, or a snapshot directory"
SNAPSHOT_HELP = "the snapshot to read: " + SNAPSHOT_FORMS


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    p.add_argument("path", help=SNAPSHOT_HELP)
    p.add_argument(
        "--memory", required=True, help="MemoryId (0-254), or 'raw' for a snapshot without a MemoryManager"
    )
    p.add_argument(
        "-o", "--output", required=True, help="output file, or - for stdout (never the input; see --force)"
    )
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    _add_base_option(p)

    p = sub.add_parser("entries", help="list the entries of one structure")
    p.add_argument("path", help=SNAPSHOT_HELP)
    p.add_argument("--memory", required=True, help="MemoryId or 'raw' (for a log, either half)")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--limit", type=_count(0), default=None, help="stop after N entries")
    p.add_argument(
        "--key-size",
        type=_count(1),
        default=None,
        help="B-tree keys are fixed-size N bytes (no length prefix)",
    )
    _add_decoder_options(p)

    p = sub.add_parser("check", help="diagnose corruption; exit 1 when there is an error finding")
    p.add_argument("path", help=SNAPSHOT_HELP)
    p.add_argument("--json", action="store_true", help="print the summary JSON object with findings")
    p.add_argument("--no-scan", action="store_true", help="skip the orphan scan of unowned buckets")
    _add_decoder_options(p)

    p = sub.add_parser("salvage", help="recover map entries that are no longer reachable")
    p.add_argument("path", help=SNAPSHOT_HELP)
    p.add_argument("--memory", required=True, help="MemoryId of the map (or 'raw')")
    p.add_argument("--reference", metavar="OLDPATH", help="an earlier snapshot to compare entries with")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    _add_decoder_options(p)

    p = sub.add_parser("repair", help="write a new snapshot in which the library finds the data again")
    p.add_argument("path", help=SNAPSHOT_HELP)
    p.add_argument(
        "-o", "--output", required=True, help="the repaired snapshot (a .bin, or a folder for a folder)"
    )
    p.add_argument(
        "--reference", metavar="OLD", help="an earlier snapshot: MemoryIds and sizes of a lost table"
    )
    p.add_argument("--assign", action="append", metavar="?bN=ID", help="MemoryId of a memory of unknown id")
    p.add_argument(
        "--prefer", choices=("live", "salvaged"), default="live", help="which value a conflict keeps"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.add_argument("--json", action="store_true", help="print the plan and the proof as JSON")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument(
        "--export-stable-save", metavar="FILE", help="write the stable_save message's bytes to FILE"
    )

    p = sub.add_parser("diff", help="compare two snapshots (TUI unless --json or --report)")
    p.add_argument("old", help="the earlier snapshot (e.g. taken before the upgrade); " + SNAPSHOT_FORMS)
    p.add_argument("new", help="the later snapshot (e.g. taken after the upgrade); " + SNAPSHOT_FORMS)
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--report", action="store_true", help="print a text report instead of opening the TUI")
    p.add_argument(
        "--fail-on",
        choices=("loss", "incident", "any"),
        help="CI gate: print the report and exit 1 when entries were lost, an incident was detected, "
        "or anything differs",
    )
    _add_decoder_options(p)

    p = sub.add_parser("open", help="open the terminal UI (the default command)")
    p.add_argument("path", help=SNAPSHOT_HELP)
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
    nested = _parse_nested_id(t)
    if nested is not None:
        return nested
    m = _BUCKET_KEY.match(t)
    if m:
        digits = m.group(1).lstrip("0") or "0"
        if len(digits) > 6:  # no snapshot has a million buckets; int() of 5,000 digits would raise
            raise UsageError(f"--memory {escape_arg(text)}: bucket number out of range")
        return f"?b{int(digits)}"
    try:
        value = int(t, 0) if len(t) <= 32 else -1
    except ValueError:
        raise UsageError(
            f"--memory must be a MemoryId (0-254), 'raw', '?b<bucket>' or outer/inner like '5/1', not {escape_arg(text)!r}"
        ) from None
    if not 0 <= value <= 254:
        raise UsageError(f"--memory {escape_arg(t)} is out of range: MemoryIds are 0-254")
    return value


def _parse_nested_id(text: str) -> str | None:
    """'5/1' (memory 1 of the manager nested in memory 5), any depth; None if ``text`` is not that form."""
    parts = text.strip().split("/")
    if len(parts) < 2:
        return None
    ids = []
    for part in parts:
        try:
            value = int(part, 0)
        except ValueError:
            raise UsageError(
                f"--memory {escape_arg(text)!r}: nested ids are MemoryIds joined by '/', like '5/1'"
            ) from None
        if not 0 <= value <= 254:
            raise UsageError(f"--memory {escape_arg(text)!r}: {value} is out of range (MemoryIds are 0-254)")
        ids.append(str(value))
    return "/".join(ids)


def escape_arg(text: str, limit: int = 80) -> str:
    """A command-line argument quoted in a message: escaped and shortened (it may hold anything)."""
    from inspector.safe_text import cap_text, escape_control

    return escape_control(cap_text(text, limit))


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= minimum (argparse names the option in its message)."""

    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) <= 20 else None
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, not {escape_arg(text)!r}")
        return value

    parse.__name__ = "count"
    return parse


def _write_output(
    out: str | Path, inputs: Sequence[Path | None], force: bool, writer: Callable[[Any], None]
) -> str:
    """Write a user-named output by the rules of ``inspector.output`` (never an input, never a device
    replaced, ``-`` is stdout); returns where it went, for the message."""
    from inspector.output import OutputError, write_output

    try:
        return str(write_output(out, writer, inputs=inputs, force=force))
    except OutputError as exc:
        raise UsageError(str(exc)) from None


def cmd_summary(args: argparse.Namespace) -> int:
    from inspector.session import load

    session = load(args.path, did=args.did, schema=args.schema)
    try:
        session.snapshot.check_unchanged()
        if args.json:
            print(json.dumps(session.analysis.to_json(deep=args.deep), indent=2, default=json_default))
        else:
            from inspector.render import print_summary

            print_summary(session, deep=args.deep)
        return 0
    finally:
        session.close()


def cmd_extract(args: argparse.Namespace) -> int:
    from inspector.memory import OutOfBounds
    from inspector.session import load
    from inspector.snapshot import InputError

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

        where = _write_output(args.output, [session.snapshot.file_path], args.force, write)
    finally:
        session.close()
    print(f"wrote {total:,} bytes of memory {memory_id} to {where}", file=sys.stderr)
    return 0


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
        "repair": "inspector.commands.repair",
        "diff": "inspector.commands.diff",
        "open": "inspector.commands.open",
        "bench": "inspector.bench.command",
    }[name]
    import importlib

    return importlib.import_module(module).run


def _supervised(args: argparse.Namespace) -> int | None:
    """Run the rest of the command in a child (see inspector.supervise); the parent's status, or None
    in the child. Only when run as the program: ``main(argv)`` from Python never forks."""
    if args.command == "bench":
        return None
    from inspector.supervise import supervise

    paths = [getattr(args, k, None) for k in ("path", "old", "new", "reference")]
    return supervise([p for p in paths if isinstance(p, str)], interactive=_interactive(args))


def main(argv: Sequence[str] | None = None) -> int:
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    # `stable-inspect PATH` is `stable-inspect open PATH`.
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv = ["open", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    if as_program and (status := _supervised(args)) is not None:
        # The supervising parent only waited: leave without the interpreter's teardown (~0.1 s).
        _flush_streams()
        os._exit(status)
    status = _run(args)
    if as_program and not _interactive(args) and args.command != "bench":
        _leave(status)
    return status


def _interactive(args: argparse.Namespace) -> bool:
    return bool(args.command == "open" or (args.command == "diff" and not (args.json or args.report)))


def _leave(status: int) -> NoReturn:
    """End a headless command without the interpreter's teardown, which frees every object of the
    loaded snapshots one by one after the output is complete: ``summary --deep`` of a 1,000,000-entry
    map took 0.06 s less this way (median of 8 runs each). The exit handlers still run and the output
    is flushed; only module and object finalisation is skipped (nothing here needs it: files are
    written and closed by the commands themselves)."""
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        _flush_streams()
        os._exit(status)


def _flush_streams() -> None:
    """Flush stdout and stderr before ``os._exit`` (which does not), whatever state they are in."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _run(args: argparse.Namespace) -> int:
    from inspector.errors import InputError

    try:
        # Inside the try: a command module that fails to import is an internal error, not a traceback.
        if args.command == "diff" and (args.json or args.report):
            # Start the byte compare in a child before the heavy imports, so they overlap with it.
            from inspector.diff.prefetch import start_byte_diff

            args.pending_bytes = start_byte_diff(args.old, args.new)
        elif args.command == "summary" and args.deep:
            # The deep walk of a map on the raw memory starts in a child, before the heavy imports too.
            from inspector import walk_prefetch

            walk_prefetch.start(args.path)
        from inspector import session as _session

        _session.BASE_OVERRIDE = _parse_base(args.base) if getattr(args, "base", None) is not None else None
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
        from inspector.safe_text import cap_text, escape_control

        if isinstance(exc, OSError) and exc.strerror:
            # The system refused something (disk full, I/O error): say what, without "[Errno N]".
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"stable-inspect: {escape_control(str(where))}{exc.strerror}", file=sys.stderr)
            return 2
        # Anything else is a bug in this tool, never the user's fault: say so, never disguise it.
        print(
            f"stable-inspect: internal error, please report: {type(exc).__name__}: "
            f"{escape_control(cap_text(str(exc), 500))} (set STABLE_INSPECT_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
