"""Error types of the ISA layer.

Every error raised on bad input derives from :class:`IsaError` and carries a message that names what
is wrong and where (file:line:column for text, instruction index and field for programs).
"""

from __future__ import annotations

from typing import Any

from infsim.errors import InfsimError


class IsaError(InfsimError):
    """Base class of every ISA-level error (bad program, bad operand, bad text or binary)."""


class OperandError(IsaError):
    """An access pattern or immediate is malformed or out of the encodable range."""


class AsmParseError(IsaError):
    """Text assembly could not be parsed; ``str(err)`` is ``file:line:column: message``."""

    def __init__(self, message: str, file: str = "<string>", line: int = 0, column: int = 0):
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        super().__init__(f"{file}:{line}:{column}: {message}")


class EncodingError(IsaError):
    """Binary encoding or decoding failed (field out of range, corrupt or truncated input)."""


class ValidationError(IsaError):
    """A program violates a constraint of the chip it is validated against.

    ``problems`` lists every violation found (each one names the instruction index, field and limit);
    ``items`` the structured :class:`~infsim.isa.validate.Problem` records when the validator raised it.
    """

    def __init__(self, problems: list[str], items: list[Any] | None = None):
        self.problems = list(problems)
        self.items: list[Any] = list(items) if items is not None else []
        head = problems[0] if problems else "invalid program"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(head + more)


class DeadlockError(IsaError):
    """A program can never finish: some stream waits on a semaphore nobody will signal enough.

    ``blocked`` has one line per blocked stream (its instruction and what it waits for).
    """

    def __init__(self, message: str, blocked: list[str] | None = None):
        self.blocked: list[str] = list(blocked) if blocked is not None else []
        super().__init__(message)
