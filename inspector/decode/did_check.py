"""Syntax check of a Candid interface (``.did``) text: the first error with its line and column.

The name scanner (``did.py``) is tolerant on purpose and would quietly take half the names of a broken
file, leaving some fields unnamed without a word. Loading a ``.did`` therefore checks it first against
the Candid grammar (the IDL spec's ``<prog>``), and a file with a syntax error is refused, saying where.
"""

from __future__ import annotations

from inspector.decode.did import DidToken, tokenize_did
from inspector.errors import BadFormat

PRIMITIVES = frozenset(
    "nat nat8 nat16 nat32 nat64 int int8 int16 int32 int64 float32 float64 bool text null reserved empty "
    "principal blob".split()
)
FUNC_ANNOTATIONS = frozenset({"oneway", "query", "composite_query"})


class DidSyntaxError(BadFormat, ValueError):
    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line, self.column = line, column


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[DidToken] = list(tokenize_did(text))
        self.i = 0

    # -- helpers
    def peek(self, k: int = 0) -> DidToken | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def fail(self, expected: str) -> DidSyntaxError:
        tok = self.peek()
        pos = tok.pos if tok is not None else len(self.text)
        found = "the end of the file" if tok is None else f"{_show(tok)}"
        return DidSyntaxError(f"expected {expected}, found {found}", *_line_col(self.text, pos))

    def is_sym(self, s: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok is not None and tok.kind == "sym" and tok.value == s

    def is_word(self, w: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok is not None and tok.kind == "id" and tok.value == w

    def sym(self, s: str) -> None:
        if not self.is_sym(s):
            raise self.fail(f"'{s}'")
        self.i += 1

    def name(self, what: str = "a name") -> None:
        tok = self.peek()
        if tok is None or tok.kind not in ("id", "text"):
            raise self.fail(what)
        self.i += 1

    # -- grammar
    def prog(self) -> None:
        while self.is_word("type") or self.is_word("import"):
            if self.is_word("import"):
                self.i += 1
                if self.is_word("service"):
                    self.i += 1
                tok = self.peek()
                if tok is None or tok.kind != "text":
                    raise self.fail("a quoted file name after 'import'")
                self.i += 1
            else:
                self.i += 1
                tok = self.peek()
                if tok is None or tok.kind != "id":
                    raise self.fail("a type name after 'type'")
                self.i += 1
                self.sym("=")
                self.datatype()
            self.sym(";")
        if self.is_word("service"):
            self.actor()
        if self.peek() is not None:
            raise self.fail("'type', 'import' or 'service'")

    def actor(self) -> None:
        self.i += 1  # service
        if (tok := self.peek()) is not None and tok.kind == "id" and self.is_sym(":", 1):
            self.i += 1
        self.sym(":")
        if self.is_sym("("):
            self.tuptype()
            self.sym("->")
        if self.is_sym("{"):
            self.actortype()
        else:
            self.name("a service type")
        if self.is_sym(";"):
            self.i += 1

    def actortype(self) -> None:
        self.sym("{")
        while not self.is_sym("}"):
            self.name("a method name")
            self.sym(":")
            if self.is_sym("("):
                self.functype()
            else:
                self.name("a function type")
            if self.is_sym(";"):
                self.i += 1
            elif not self.is_sym("}"):
                raise self.fail("';' or '}'")
        self.sym("}")

    def functype(self) -> None:
        self.tuptype()
        self.sym("->")
        self.tuptype()
        while (tok := self.peek()) is not None and tok.kind == "id" and str(tok.value) in FUNC_ANNOTATIONS:
            self.i += 1

    def tuptype(self) -> None:
        self.sym("(")
        while not self.is_sym(")"):
            if (tok := self.peek()) is not None and tok.kind in ("id", "text") and self.is_sym(":", 1):
                self.i += 2
            self.datatype()
            if self.is_sym(","):
                self.i += 1
            elif not self.is_sym(")"):
                raise self.fail("',' or ')'")
        self.sym(")")

    def datatype(self) -> None:
        tok = self.peek()
        if tok is None or tok.kind != "id":
            raise self.fail("a type")
        word = str(tok.value)
        self.i += 1
        if word in ("opt", "vec"):
            self.datatype()
        elif word in ("record", "variant"):
            self.fields(word)
        elif word == "func":
            self.functype()
        elif word == "service":
            self.actortype()
        # a primitive or a type name: nothing more

    def fields(self, kind: str) -> None:
        self.sym("{")
        while not self.is_sym("}"):
            tok = self.peek()
            if tok is not None and tok.kind in ("id", "text", "nat") and self.is_sym(":", 1):
                self.i += 2
                self.datatype()
            elif kind == "variant":
                if tok is None or tok.kind not in ("id", "text", "nat"):
                    raise self.fail("a variant case")
                self.i += 1
            else:
                self.datatype()  # a tuple field: `record { text; nat }`
            if self.is_sym(";"):
                self.i += 1
            elif not self.is_sym("}"):
                raise self.fail("';' or '}'")
        self.sym("}")


def _show(tok: DidToken) -> str:
    if tok.kind == "text":
        return "a quoted name"
    if tok.kind == "nat":
        return f"the number {tok.value!s}"
    return f"'{tok.value!s}'"


def check_did(text: str) -> None:
    """Raise ``DidSyntaxError`` (with line and column) at the first syntax error of a .did text."""
    _unterminated(text)
    _Parser(text).prog()


def _unterminated(text: str) -> None:
    """Strings and block comments that never end (the tokenizer quietly runs them to the end)."""
    from inspector.decode.did import _read_string, _skip_block_comment

    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = _skip_block_comment(text, i)
            if j >= n and not _closes(text, i):
                raise DidSyntaxError("unterminated comment", *_line_col(text, i))
            i = j
        elif text[i] == '"':
            _value, j = _read_string(text, i + 1)
            if j >= n and not text.endswith('"') or j > n:
                raise DidSyntaxError("unterminated string", *_line_col(text, i))
            i = j
        else:
            i += 1


def _closes(text: str, i: int) -> bool:
    """Whether the (nesting) block comment opened at ``i`` is closed by the end of the text."""
    depth, n = 0, len(text)
    while i < n:
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return True
        else:
            i += 1
    return False
