"""The assembly printer: the canonical text (``.s``) of a :class:`~infsim.isa.program.Program`.

:func:`print_program` writes the ``.program`` line, the tensor, semaphore and group declarations, then one
``.stream`` directive per change of stream and one line per instruction: the opcode, its operands
(``slot=OPERAND``, canonical form of :func:`format_operand`), its immediates and its waits and signals.
Parsing the text back gives the same program (``parse(print_program(p)) == p`` for every program whose names
are printable identifiers; grammar in ``docs/asm-grammar.md``). Floats print as Python's ``repr`` (the shortest
text that reads back to the same value).

Left out: comments and any layout other than the canonical one.
"""

from __future__ import annotations

from collections.abc import Iterable

from .dtypes import DType
from .opcodes import OPSPECS, Engine, Op, Space
from .operand import AccessPattern
from .program import Program
from .records import ENUM_KINDS, IMM_FIELDS, INSTR_DTYPE, INTS_UNUSED

__all__ = ["print_program", "format_operand"]

_SEMS_PER_LINE = 16


def _operand_text(space: int, dtype: int, pstart: int, pcount: int, tensor: str | None, pstride: int, offset: int,
                  dims: Iterable[tuple[int, int]]) -> str:
    """The canonical operand text from an access pattern's fields (``dims``: (stride, size) pairs)."""
    d = "".join(f" ({st},{sz})" for st, sz in dims)
    if space == Space.hbm:
        return f"hbm.{tensor}[{pcount}@{pstride} +{offset}{d} {DType(dtype).name}]"
    return f"{Space(space).name}[{pstart}:{pstart + pcount} +{offset}{d} {DType(dtype).name}]"


def format_operand(ap: AccessPattern) -> str:
    """Canonical text of one access pattern (as it appears after ``slot=``)."""
    return _operand_text(ap.space, ap.dtype, ap.partition_start, ap.partitions, ap.tensor, ap.partition_stride,
                         ap.offset, ap.dims)


def _ap_texts(p: Program) -> list[str]:
    """The operand text of every entry of ``p``'s AP table."""
    tnames = list(p.tensors)
    cols = [p.aps[f].tolist() for f in ("space", "dtype", "ndims", "pstart", "pcount", "tensor", "pstride", "offset",
                                        "strides", "sizes")]
    return [_operand_text(sp, dt, ps, pc, tnames[tid] if sp == Space.hbm else None, pst, off,
                          zip(strides[:nd], sizes[:nd]))
            for sp, dt, nd, ps, pc, tid, pst, off, strides, sizes in zip(*cols)]


def _stream_name(core: int, engine: int, queue: int) -> str:
    e = Engine(engine)
    if queue or e in (Engine.dma, Engine.cc):
        return f"c{core}.{e.name}{queue}"
    return f"c{core}.{e.name}"


def print_program(p: Program) -> str:
    """The canonical text of ``p``: ``.program``, tensors, semaphores, groups, then the instructions."""
    lines = [f".program cores={p.num_cores} cores_per_chip={p.cores_per_chip}"]
    for t in p.tensors.values():
        shape = ",".join(str(s) for s in t.shape)
        chip = f" chip={t.chip}" if t.chip else ""
        lines.append(f".tensor {t.name} {t.dtype.name}[{shape}] {t.kind.name}{chip}")
    sems = p.semaphores
    for k in range(0, len(sems), _SEMS_PER_LINE):
        lines.append(".sem " + ", ".join(sems[k : k + _SEMS_PER_LINE]))
    for g, members in p.groups.items():
        lines.append(f".group {g} " + ",".join(str(c) for c in members))

    ins = p.instr
    if len(ins):
        apt = _ap_texts(p)
        gnames = list(p.groups)
        c = {f: ins[f].tolist() for f in INSTR_DTYPE.names or ()}
        # per-opcode format: slot names and (imm name, kind, field) triples
        fmts = {op: ([s.name for s in spec.slots], IMM_FIELDS[op]) for op, spec in OPSPECS.items()}
        enum_by_kind = ENUM_KINDS
        stream = None
        for i in range(len(ins)):
            key = (c["core"][i], c["engine"][i], c["queue"][i])
            if key != stream:
                lines.append(".stream " + _stream_name(*key))
                stream = key
            op = Op(c["op"][i])
            slots, imms = fmts[op]
            parts = [op.name]
            opnd = c["opnd"][i]
            for k, sname in enumerate(slots):
                if opnd[k] >= 0:
                    parts.append(f"{sname}={apt[opnd[k]]}")
            for name, kind, f in imms:
                if kind in enum_by_kind:
                    v = enum_by_kind[kind](c[f][i]).name
                elif kind == "sem":
                    v = sems[c[f][i]]
                elif kind == "group":
                    v = gnames[c[f][i]]
                elif kind == "bool":
                    v = "true" if (c["flags"][i] >> int(f[4:])) & 1 else "false"
                elif kind == "ints":
                    vals = [x for x in c[f][i] if x != INTS_UNUSED]
                    v = ",".join(str(x) for x in vals) if vals else "()"
                elif kind == "int":
                    v = str(c[f][i])
                else:
                    v = repr(float(c[f][i]))
                parts.append(f"{name}={v}")
            ws = [f"{sems[s]}>={v}" for s, v in zip(c["wsem"][i], c["wval"][i]) if s >= 0]
            if ws:
                parts.append("wait=" + ",".join(ws))
            ss = [f"{sems[s]}+{v}" for s, v in zip(c["ssem"][i], c["sval"][i]) if s >= 0]
            if ss:
                parts.append("signal=" + ",".join(ss))
            lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"
