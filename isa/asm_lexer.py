"""The assembly lexer: token patterns and :class:`Line`, a cursor over one source line.

The parser (``isa/asm.py``) reads a line at a time: :class:`Line` skips white space, matches a token pattern
at the cursor and, when the text does not match, raises :class:`~infsim.isa.errors.AsmParseError` naming
``file:line:column`` of the cursor, what was expected and what was found (the next token, shortened). Numbers
longer than Python converts (its 4,300-digit limit) are refused with their column.

Left out: tokens spanning lines (none exist: comments run from ``#`` to the end of the line and the parser
removes them before a line reaches the lexer).
"""

from __future__ import annotations

import re

from .errors import AsmParseError

__all__ = ["Line"]

WS = re.compile(r"[ \t\r\f\v]*")
NAME = re.compile(r"[\w.]+")
KEY = re.compile(r"[A-Za-z_]\w*")
INT = re.compile(r"[-+]?\d+")
UINT = re.compile(r"\d+")
VALUE = re.compile(r"\S+")
STREAM = re.compile(r"c(\d+)\.([a-z]+)(\d*)")
FLOAT = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan)", re.IGNORECASE)
DIM = re.compile(r"\([ \t]*([-+]?\d+)[ \t]*,[ \t]*(\d+)[ \t]*\)")
WAIT = re.compile(r"([\w.]+)>=(\d+)")
SIGNAL = re.compile(r"([\w.]+)\+(\d+)")
# canonical operands (what the printer writes), matched whole for the parser's operand cache
FAST_ONCHIP = re.compile(r"(sbuf|psum)\[(\d+):(\d+) \+(\d+)((?: \([-+]?\d+,\d+\))*) (\w+)\]")
FAST_HBM = re.compile(r"hbm\.([\w.]+)\[(\d+)@([-+]?\d+) \+(\d+)((?: \([-+]?\d+,\d+\))*) (\w+)\]")


class Line:
    """Cursor over one source line, producing AsmParseErrors at the right column."""

    __slots__ = ("text", "pos", "file", "lineno")

    def __init__(self, text: str, file: str, lineno: int):
        self.text = text
        self.pos = 0
        self.file = file
        self.lineno = lineno

    def error(self, message: str, pos: int | None = None) -> AsmParseError:
        """An error at ``pos`` (default: the cursor)."""
        col = (self.pos if pos is None else pos) + 1
        return AsmParseError(message, self.file, self.lineno, col)

    def ws(self) -> None:
        """Skip white space."""
        m = WS.match(self.text, self.pos)
        assert m is not None  # WS matches the empty string
        self.pos = m.end()

    def at_end(self) -> bool:
        """Skip white space; True at the end of the line."""
        self.ws()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        """The character at the cursor ('' at the end)."""
        return self.text[self.pos : self.pos + 1]

    def found(self) -> str:
        """The token at the cursor as an error message quotes it."""
        if self.pos >= len(self.text):
            return "end of line"
        m = VALUE.match(self.text, self.pos)
        tok = m.group(0) if m else self.text[self.pos]
        if len(tok) > 20:
            tok = tok[:20] + "..."
        return f"'{tok}'"

    def expect(self, s: str, what: str | None = None) -> None:
        """Consume the literal ``s`` or raise ``expected WHAT``."""
        if not self.text.startswith(s, self.pos):
            raise self.error(f"expected {what or repr(s)}, found {self.found()}")
        self.pos += len(s)

    def skip(self, m: re.Match[str] | None) -> None:
        """Move the cursor past ``m``, a match at the cursor the caller has already checked is there."""
        assert m is not None
        self.pos = m.end()

    def match(self, rx: re.Pattern[str], what: str) -> re.Match[str]:
        """Consume a non-empty match of ``rx`` or raise ``expected WHAT``."""
        m = rx.match(self.text, self.pos)
        if m is None or m.end() == self.pos:
            raise self.error(f"expected {what}, found {self.found()}")
        self.pos = m.end()
        return m

    def int_(self, what: str, signed: bool = False) -> int:
        """Consume a decimal integer (``signed``: with an optional sign)."""
        start = self.pos
        m = self.match(INT if signed else UINT, what)
        try:
            return int(m.group(0))
        except ValueError:
            raise self.error(f"{what}: number too long", start) from None

    def int_list(self, what: str) -> list[int]:
        """Consume one or more unsigned integers separated by commas (no white space around the commas)."""
        out = [self.int_(what)]
        while self.peek() == ",":
            self.pos += 1
            out.append(self.int_(what))
        return out
