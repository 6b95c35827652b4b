"""One root for every error the inspector raises on purpose, so callers can tell "the input is bad" from
"the inspector has a bug" without listing a dozen classes.

    InspectorError
    ├── UnreadableInput   the input cannot be opened or read as a snapshot (InputError)
    ├── BadFormat         bytes that do not follow the format (NodeError, OutOfBounds, CandidError,
    │   │                 CborError, StorableError, TypeSyntaxError, DidSyntaxError)
    │   └── LimitExceeded input that claims more than a hard limit allows (sizes, counts, nesting depth)
    └── UsageProblem      a request that cannot be done as asked (UsageError, GotoError,
                          BenchError, OutputError, RepairError)

The decoders' classes keep their names and their ``ValueError`` base where they had one; they only gain
a place in this tree. A blind ``except Exception`` belongs at the CLI/TUI boundary alone (and in the
forked children and the bench's runner, which hand the work back); everything below it catches
``InspectorError``, the narrower class it means, or ``READ_ERRORS`` where bytes are read that may be
short or junk. ``tests/test_error_boundary.py`` enforces this with an AST scan.
"""

from __future__ import annotations

import struct


class InspectorError(Exception):
    """Root of every error the inspector raises on purpose."""


class UnreadableInput(InspectorError):
    """The input cannot be opened or read (missing, unreadable, not a snapshot)."""


class InputError(UnreadableInput):
    """The input cannot be read as a snapshot. The message is one plain line for the user. (Declared
    here, not in ``inspector.snapshot``, so the CLI can catch it before the layouts are imported: the
    children of ``diff`` and ``summary --deep`` are forked before that import.)"""


class BadFormat(InspectorError):
    """Bytes that do not follow the on-disk or wire format they are read as."""


class LimitExceeded(BadFormat):
    """Input that claims more than a hard limit allows (a size, a count, a nesting depth)."""


class UsageProblem(InspectorError):
    """A request that cannot be done as asked (bad argument, output over the input, unknown offset)."""


#: What reading hostile bytes may raise below the CLI/TUI boundary: the inspector's own errors, plus the
#: standard library's answers to a short or malformed buffer that a reader did not wrap (``struct.error``
#: from ``unpack_from`` on too few bytes, ``ValueError`` from converting junk). Code that shows "less"
#: for a broken structure catches this tuple, never ``Exception``, so a product bug (AttributeError,
#: TypeError, KeyError, IndexError ...) still surfaces instead of being dropped as "bad input".
READ_ERRORS: tuple[type[Exception], ...] = (InspectorError, struct.error, ValueError)
