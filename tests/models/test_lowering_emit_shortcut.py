"""The emitter's shortcut (an instruction like an earlier one appended as a copy of its record) gives what
``Program.append(make(...))`` gives, and raises what it raises: immediates equal in value but not in type or
sign (``1`` and ``True``, ``0.0`` and ``-0.0``) are told apart."""

from __future__ import annotations

import pytest

from infsim.isa import DType, Engine, Op, OperandError, Program, Space, make
from infsim.models.lower.emit import Buf, Emitter
from infsim.models.lower.tags import OpClass


def _pair() -> tuple[Emitter, Program, Buf]:
    em, ref = Emitter(Program(1, 1)), Program(1, 1)
    em.op_class = OpClass.setup
    return em, ref, Buf("b", Space.sbuf, 0, 0, 128, 0, 4096)


def test_shortcut_records_equal_append_of_make() -> None:
    em, ref, b = _pair()
    t, u = b.tile(DType.fp32, 4), b.tile(DType.fp32, 4, byte=64)
    for dst, imm in ((t, 0.0), (u, -0.0), (t, 0.0), (u, 2.5), (t, 1)):
        em.emit(Op.memset, 0, Engine.vector, dst=dst, value=imm)
        ref.append(make(Op.memset, dst.ap, engine=Engine.vector, signals=[("c0_vector", 1)], value=imm))
    for _ in range(4):
        em.emit(Op.tensor_reduce, 0, Engine.vector, dst=t, src=u, op="add", axes=1)
        ref.append(make(Op.tensor_reduce, t.ap, u.ap, engine=Engine.vector, signals=[("c0_vector", 1)], op="add",
                        axes=1))
    assert em.p.instr.tobytes() == ref.instr.tobytes() and em.p.aps.tobytes() == ref.aps.tobytes()
    assert em.p.instr["f0"].tolist()[:2] == [0.0, -0.0] and str(em.p.instr["f0"][1]) == "-0.0"


def test_shortcut_refuses_what_make_refuses() -> None:
    em, _, b = _pair()
    t = b.tile(DType.fp32, 4)
    em.emit(Op.tensor_reduce, 0, Engine.vector, dst=t, src=t, op="add", axes=1)
    with pytest.raises(OperandError):  # an int immediate given as a bool, equal to the earlier 1
        em.emit(Op.tensor_reduce, 0, Engine.vector, dst=t, src=t, op="add", axes=True)


def test_shortcut_refuses_a_wait_value_beyond_32_bits() -> None:
    """A wait the record cannot hold is refused by name on the shortcut path too (as ``Program.append``)."""
    em, _, b = _pair()
    t = b.tile(DType.fp32, 4)
    em.emit(Op.memset, 0, Engine.vector, dst=t, value=1.0)
    with pytest.raises(OperandError, match="wait value 4294967296"):
        em.emit(Op.memset, 0, Engine.vector, dst=t, value=1.0, extra_waits={"x": 2**32})
