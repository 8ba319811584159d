"""Record layouts of a program's columnar tables, which are also the binary encoding, and the place of each
immediate in an instruction record.

* :data:`AP_DTYPE`: one access pattern (space, dtype, partitions, HBM tensor index and row stride, byte offset,
  up to ``MAX_FREE_DIMS`` (stride, size) pairs);
* :data:`INSTR_DTYPE`: one instruction (opcode, engine, queue, core; immediates; operand indices into the AP
  table, ``-1`` = absent; semaphore waits and signals, semaphore ``-1`` = unused).

Immediates are stored by kind, in the order the opcode table lists them (:data:`IMM_FIELDS`): enums in ``e0``
``e1``, integers and semaphore/group indices in ``i0`` ``i1``, floats in ``f0`` ``f1``, booleans as bits of
``flags`` (field names ``flag0``, ``flag1``...), the integer list in ``ints`` (:data:`INTS_UNUSED` pads it).
:func:`decode_imms` reads them back; ``Program.append`` packs records with :data:`REC_STRUCT`, the same layout
as a flat ``struct`` (checked against :data:`INSTR_DTYPE` at import).

Left out: validation of field values (``isa/validate.py`` for chip rules, ``isa/encoding.py`` for decoded
bytes); the records hold whatever a generator writes into them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from typing import Any, Protocol, TypeVar

import numpy as np

from .opcodes import MAX_FREE_DIMS, MAX_OPERANDS, MAX_SIGNALS, MAX_WAITS, OPSPECS, ActFunc, AluOp, Op, OpSpec, ReduceOp

__all__ = ["AP_DTYPE", "INSTR_DTYPE", "INTS_UNUSED", "REC_STRUCT", "ENUM_KINDS", "IMM_FIELDS", "IMM_PLAN",
           "copy_records", "decode_imms", "imm_int", "imm_float", "imm_ints", "imm_enum", "read_fields"]

ENUM_KINDS: dict[str, type[IntEnum]] = {"AluOp": AluOp, "ReduceOp": ReduceOp, "ActFunc": ActFunc}

AP_DTYPE = np.dtype(
    [
        ("space", "u1"),
        ("dtype", "u1"),
        ("ndims", "u1"),
        ("pstart", "<u2"),
        ("pcount", "<u2"),
        ("tensor", "<i4"),
        ("pstride", "<i4"),
        ("offset", "<i8"),
        ("strides", "<i4", (MAX_FREE_DIMS,)),
        ("sizes", "<u4", (MAX_FREE_DIMS,)),
    ]
)

INSTR_DTYPE = np.dtype(
    [
        ("op", "u1"),
        ("engine", "u1"),
        ("queue", "u1"),
        ("flags", "u1"),
        ("core", "<u2"),
        ("e0", "u1"),  # first enum immediate
        ("e1", "u1"),  # second enum immediate
        ("i0", "<i8"),  # first int immediate (or semaphore / group index)
        ("i1", "<i8"),
        ("f0", "<f8"),  # first float immediate
        ("f1", "<f8"),
        ("ints", "<i4", (MAX_FREE_DIMS,)),  # int-list immediate (iota multipliers), -2^31 = unused
        ("opnd", "<i4", (MAX_OPERANDS,)),  # indices into the AP table, -1 = absent
        ("wsem", "<i4", (MAX_WAITS,)),
        ("wval", "<u4", (MAX_WAITS,)),
        ("ssem", "<i4", (MAX_SIGNALS,)),
        ("sval", "<u4", (MAX_SIGNALS,)),
    ]
)


def read_fields(records: np.ndarray, *names: str) -> tuple[np.ndarray, ...]:
    """The fields ``names`` of every record of ``records`` (a 1-D array of a record dtype), each as an array
    of its own dtype (``(n,)``, or ``(n, *shape)`` for a subarray field), copied in one strided pass over the
    bytes that span them. numpy copies each field of a structured array in a pass of its own, a few times
    slower on wide records (an instruction is 108 bytes): reading the four semaphore fields this way takes
    ~2.8 ms on 632k instructions instead of ~10.6. The arrays are views into one fresh block (writable; a
    field whose offset in the span is not a multiple of its itemsize is unaligned: numpy handles that), or
    per-field copies when ``records`` is not contiguous."""
    dt = records.dtype
    assert dt.fields is not None, "read_fields reads a record dtype"
    spans = [dt.fields[name][:2] for name in names]  # (field dtype, offset)
    lo = min(off for _, off in spans)
    hi = max(off + d.itemsize for d, off in spans)
    n = len(records)
    if records.ndim != 1 or not records.flags.c_contiguous or n == 0:
        return tuple(np.array(records[name]) for name in names)
    raw = np.ndarray((n, hi - lo), np.uint8, buffer=records, offset=lo, strides=(dt.itemsize, 1)).copy()
    out = []
    for d, off in spans:
        v = raw[:, off - lo : off - lo + d.itemsize].view(d.base)  # (n, elements of the field)
        out.append(v[:, 0] if d.shape == () else v.reshape(n, *d.shape))
    return tuple(out)


def copy_records(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[:] = src`` for 1-D arrays of one record dtype, as a copy of their bytes where both are contiguous.
    numpy assigns a structured array field by field (it does not see that the layouts match), ~6x slower than
    copying the bytes on 108-byte instructions: ~14 ms vs ~2 ms per 300k records."""
    if dst.dtype == src.dtype and dst.shape == src.shape and dst.flags.c_contiguous and src.flags.c_contiguous:
        dst.view(np.uint8)[:] = src.view(np.uint8)
    else:
        dst[:] = src


INTS_UNUSED = -(2**31)
INTS_ALL_UNUSED = (INTS_UNUSED,) * MAX_FREE_DIMS
# INSTR_DTYPE as a flat struct layout: Program.append packs records straight into the table's buffer
# (several times faster than numpy record assignment); checked against INSTR_DTYPE below.
REC_STRUCT = struct.Struct(
    f"<BBBBHBBqqdd{MAX_FREE_DIMS}i{MAX_OPERANDS}i{MAX_WAITS}i{MAX_WAITS}I{MAX_SIGNALS}i{MAX_SIGNALS}I"
)
assert REC_STRUCT.size == INSTR_DTYPE.itemsize, "INSTR_DTYPE and REC_STRUCT disagree"


def _imm_fields(spec: OpSpec) -> list[tuple[str, str, str]]:
    """(imm name, kind, record field) for every immediate of ``spec``; assigned by kind, in order."""
    counters = {"enum": 0, "int": 0, "float": 0, "bool": 0}
    out = []
    for imm in spec.imms:
        if imm.kind in ENUM_KINDS:
            f = f"e{counters['enum']}"
            counters["enum"] += 1
        elif imm.kind in ("int", "sem", "group"):
            f = f"i{counters['int']}"
            counters["int"] += 1
        elif imm.kind == "float":
            f = f"f{counters['float']}"
            counters["float"] += 1
        elif imm.kind == "bool":
            f = f"flag{counters['bool']}"
            counters["bool"] += 1
        elif imm.kind == "ints":
            f = "ints"
        else:  # pragma: no cover - table error
            raise AssertionError(imm.kind)
        out.append((imm.name, imm.kind, f))
    return out


IMM_FIELDS: dict[Op, list[tuple[str, str, str]]] = {op: _imm_fields(s) for op, s in OPSPECS.items()}
_FIELD_POS = {"e0": 0, "e1": 1, "i0": 2, "i1": 3, "f0": 4, "f1": 5}
# per opcode: (imm name, kind, record field, position among e0 e1 i0 i1 f0 f1 or -1) for packing records
IMM_PLAN: dict[Op, tuple[tuple[str, str, str, int], ...]] = {
    op: tuple((n, k, f, _FIELD_POS.get(f, -1)) for n, k, f in fields) for op, fields in IMM_FIELDS.items()
}


class Record(Protocol):
    """One instruction record read by field name: a numpy record of INSTR_DTYPE or a dict of its fields."""

    def __getitem__(self, field: str, /) -> Any: ...


def decode_imms(op: Op, r: Record, sem: Callable[[int], object], groups: Sequence[str]) -> dict[str, object]:
    """The immediates of one instruction record ``r`` (a numpy record or a mapping of field -> Python value),
    typed by kind: enum members, ``bool``, ``int``, ``float``, a tuple of ints; a semaphore as ``sem(index)``;
    a replica group by its name in ``groups``."""
    imms: dict[str, object] = {}
    for name, kind, f in IMM_FIELDS[op]:
        if kind in ENUM_KINDS:
            imms[name] = ENUM_KINDS[kind](int(r[f]))
        elif kind == "sem":
            imms[name] = sem(int(r[f]))
        elif kind == "group":
            imms[name] = groups[int(r[f])]
        elif kind == "bool":
            imms[name] = bool((int(r["flags"]) >> int(f[4:])) & 1)
        elif kind == "ints":
            imms[name] = tuple(int(x) for x in r[f] if int(x) != INTS_UNUSED)
        elif kind == "int":
            imms[name] = int(r[f])
        else:
            imms[name] = float(r[f])
    return imms


_E = TypeVar("_E", bound=IntEnum)


def imm_int(imms: Mapping[str, object], name: str) -> int:
    """Immediate ``name`` of a decoded/normalized instruction as an ``int`` (kinds int, sem index, bool)."""
    v = imms[name]
    if not isinstance(v, int):
        raise TypeError(f"immediate '{name}' is {v!r}, not an integer")
    return v


def imm_float(imms: Mapping[str, object], name: str) -> float:
    """Immediate ``name`` as a ``float`` (kind float; an int is accepted)."""
    v = imms[name]
    if not isinstance(v, (int, float)):
        raise TypeError(f"immediate '{name}' is {v!r}, not a number")
    return float(v)


def imm_ints(imms: Mapping[str, object], name: str) -> tuple[int, ...]:
    """Immediate ``name`` as a tuple of ints (kind ints)."""
    v = imms[name]
    if not isinstance(v, tuple):
        raise TypeError(f"immediate '{name}' is {v!r}, not a tuple of integers")
    return tuple(int(x) for x in v)


def imm_enum(imms: Mapping[str, object], name: str, enum: type[_E]) -> _E:
    """Immediate ``name`` as a member of ``enum`` (kinds AluOp, ReduceOp, ActFunc)."""
    v = imms[name]
    if not isinstance(v, enum):
        raise TypeError(f"immediate '{name}' is {v!r}, not a {enum.__name__}")
    return v
