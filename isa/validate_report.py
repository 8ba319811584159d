"""Collecting validation problems: :class:`Problem` and the :class:`Reporter` the rule modules write to.

A problem names the instruction index (``None`` for a program-level problem), the stream (``where``), the
field and a message with the offending value and the limit. The reporter keeps them in a deterministic order:
program-level problems first, then by instruction index, and for one instruction in the order the rules
reported them. Rules find problems column-wise with numpy and report only the (rare) positions of a mask
(:meth:`Reporter.emit`), so building a message never costs anything on a clean program.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .opcodes import Engine, Op
from .program import Program

__all__ = ["Problem", "Reporter", "QUEUED"]

_N_OPS = len(Op)
_N_ENG = len(Engine)
QUEUED = np.zeros(256, bool)  # engine codes whose streams are numbered queues (DMA and collectives)
QUEUED[int(Engine.dma)] = QUEUED[int(Engine.cc)] = True


@dataclass(frozen=True)
class Problem:
    """One violation. ``index`` is the instruction index (``None`` for program-level problems)."""

    index: int | None
    field: str
    message: str
    where: str = ""  # "opcode, stream" of the instruction, e.g. "matmul, c0.tensor"

    def __str__(self) -> str:
        if self.index is None:
            return f"{self.field}: {self.message}"
        where = f" ({self.where})" if self.where else ""
        return f"instruction {self.index}{where}: {self.field}: {self.message}"


class Reporter:
    """The problems found so far in one program, each with the instruction's opcode and stream."""

    def __init__(self, program: Program):
        self.ins = program.instr
        self._out: list[tuple[int, int, Problem]] = []  # (sort index, sequence, problem)

    def where(self, i: int) -> str:
        """``"opcode, cC.engine[Q]"`` of instruction ``i`` (codes out of range are printed as numbers)."""
        r = self.ins[i]
        op, eng = int(r["op"]), int(r["engine"])
        opname = Op(op).name if op < _N_OPS else f"op{op}"
        ename = Engine(eng).name if eng < _N_ENG else f"engine{eng}"
        q = str(int(r["queue"])) if eng < 256 and QUEUED[eng] else ""
        return f"{opname}, c{int(r['core'])}.{ename}{q}"

    def add(self, index: int | None, field: str, message: str) -> None:
        """Report one problem of instruction ``index`` (``None``: of the program)."""
        where = self.where(index) if index is not None else ""
        self._out.append((-1 if index is None else index, len(self._out), Problem(index, field, message, where)))

    def emit(self, idx: np.ndarray, mask: np.ndarray, field: str | Callable[[int], str],
             message: Callable[..., str]) -> None:
        """Report ``field``/``message(k)`` for every position ``k`` where ``mask`` holds (``idx[k]`` = index).

        ``message`` is called as ``message(k)``; it is typed ``Callable[..., str]`` because callers bind loop
        values as lambda defaults (``lambda j, a=a: ...``), which mypy cannot infer against ``[int]``."""
        for k in np.flatnonzero(mask):
            f = field(int(k)) if callable(field) else field
            self.add(int(idx[k]), f, message(int(k)))

    def problems(self) -> list[Problem]:
        """Every problem reported, program-level first, then by instruction index, then in report order."""
        return [t[2] for t in sorted(self._out, key=lambda t: (t[0], t[1]))]
