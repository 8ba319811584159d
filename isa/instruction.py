"""Instructions: the readable, typed view of one instruction, and building one from Python.

:class:`Instruction` holds an opcode, one access pattern (or ``None``) per operand slot of the opcode table,
the immediates by name, the stream (engine, core, queue) and the semaphore waits and signals by name. It is
what ``program[i]`` returns and what :meth:`~infsim.isa.program.Program.append` takes; programs store
instructions as records (``isa/records.py``), not as these objects.

:func:`make` builds an Instruction with short syntax (operands by position, immediates by keyword, enum
immediates by name); :func:`normalize_imms` fills defaults and checks each immediate's kind, raising
:class:`~infsim.isa.errors.OperandError` naming the opcode and the immediate.

Left out: chip-dependent checks (validation's job) and anything that needs the program's declarations
(undeclared tensors, groups and semaphores are found when the instruction is appended).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import OperandError
from .opcodes import MAX_FREE_DIMS, OPSPECS, Engine, Op, OpSpec
from .operand import AccessPattern
from .records import ENUM_KINDS

__all__ = ["Instruction", "make", "normalize_imms"]


@dataclass(frozen=True)
class Instruction:
    """A readable view of one instruction.

    ``operands`` has one entry per slot of ``OPSPECS[op].slots`` (``None`` for an absent optional
    slot); ``imms`` maps every immediate name of the opcode to its value (defaults filled in).
    """

    op: Op
    operands: tuple[AccessPattern | None, ...] = ()
    imms: dict[str, object] = field(default_factory=dict)
    engine: Engine | None = None
    core: int = 0
    queue: int = 0
    waits: tuple[tuple[str, int], ...] = ()
    signals: tuple[tuple[str, int], ...] = ()

    @property
    def spec(self) -> OpSpec:
        return OPSPECS[self.op]

    def operand(self, slot: str) -> AccessPattern | None:
        for s, ap in zip(self.spec.slots, self.operands):
            if s.name == slot:
                return ap
        raise KeyError(f"{self.op.name} has no operand slot '{slot}'")

    def imm(self, name: str) -> object:
        return self.imms[name]


def make(op: Op | str, /, *operands: AccessPattern | None, engine: Engine | str | None = None, core: int = 0,
         queue: int = 0, waits: Sequence[tuple[str, int]] = (), signals: Sequence[tuple[str, int]] = (),
         **imms: object) -> Instruction:
    """Convenience constructor: ``make('matmul', dst, stat, mov, accumulate=True, waits=[('ld', 1)])``.

    Missing optional operands may be omitted at the end or passed as ``None``; immediates may be given
    as enum members or their names.
    """
    op = Op[op] if isinstance(op, str) else op
    spec = OPSPECS[op]
    if len(operands) > len(spec.slots):
        raise OperandError(f"{op.name}: {len(operands)} operands given, at most {len(spec.slots)}")
    ops = tuple(operands) + (None,) * (len(spec.slots) - len(operands))
    eng = Engine[engine] if isinstance(engine, str) else engine
    return Instruction(op, ops, normalize_imms(spec, imms), eng if eng is not None else spec.engine, core,
                       queue, tuple((str(s), int(v)) for s, v in waits),
                       tuple((str(s), int(v)) for s, v in signals))


def normalize_imms(spec: OpSpec, imms: dict[str, object]) -> dict[str, object]:
    """Fill defaults, convert enum names to members and check immediates exist and have the right kind."""
    out: dict[str, object] = {}
    known = {i.name for i in spec.imms}
    for k in imms:
        if k not in known:
            raise OperandError(f"{spec.name}: unknown immediate '{k}' (expected {sorted(known) or 'none'})")
    for imm in spec.imms:
        v = imms.get(imm.name, imm.default)
        if v is None:
            raise OperandError(f"{spec.name}: immediate '{imm.name}' is required")
        if imm.kind in ENUM_KINDS:
            enum = ENUM_KINDS[imm.kind]
            if isinstance(v, str):
                try:
                    v = enum[v]
                except KeyError:
                    raise OperandError(
                        f"{spec.name}: immediate '{imm.name}': unknown {imm.kind} '{v}' "
                        f"(expected one of {', '.join(e.name for e in enum)})"
                    ) from None
            elif not isinstance(v, enum):
                try:
                    if not isinstance(v, (int, np.integer)):
                        raise ValueError(v)
                    v = enum(int(v))
                except ValueError:
                    raise OperandError(f"{spec.name}: immediate '{imm.name}': {v!r} is not a {imm.kind}") from None
        elif imm.kind == "bool":
            v = bool(v)
        elif imm.kind == "int":
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise OperandError(f"{spec.name}: immediate '{imm.name}' must be an integer, got {v!r}")
            v = int(v)
        elif imm.kind == "float":
            if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool):
                raise OperandError(f"{spec.name}: immediate '{imm.name}' must be a number, got {v!r}")
            v = float(v)
        elif imm.kind == "ints":
            if not isinstance(v, (list, tuple, np.ndarray)) or not all(
                    isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
                raise OperandError(f"{spec.name}: immediate '{imm.name}' must be a sequence of integers, got {v!r}")
            v = tuple(int(x) for x in v)
            if len(v) > MAX_FREE_DIMS:
                raise OperandError(f"{spec.name}: immediate '{imm.name}' has {len(v)} values, at most {MAX_FREE_DIMS}")
        elif imm.kind in ("sem", "group"):
            v = str(v)
        out[imm.name] = v
    return out
