"""Hypothesis strategies that build random, structurally valid ISA programs through the Python API
(``infsim.isa.strategies``: property tests of the ISA, in infsim's test suite and in users' own).

What they generate is *encodable* (every field within the ranges the records hold, every name
declared), not *legal* for any chip: sizes, bounds, spaces and dtypes per slot are drawn from the
opcode table but nothing checks them against a chip config (validation's job). Reusable pieces:

* :func:`names` -- identifiers (plain and dotted);
* :func:`access_patterns` -- AccessPatterns over a space, dtype and tensor choice;
* :func:`instructions` -- one Instruction given the declarations it may refer to;
* :func:`programs` -- whole Programs (declarations plus up to ``max_instructions`` instructions).

Needs ``hypothesis`` (``pip install hypothesis``; the ``dev`` extra has it); infsim imports it only here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

try:
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("infsim.isa.strategies needs hypothesis, which is not installed: pip install hypothesis") from e

from .dtypes import DType
from .opcodes import MAX_FREE_DIMS, MAX_SIGNALS, MAX_WAITS, OPSPECS, Engine, Op, Space
from .operand import I32_MAX, I32_MIN, I64_MAX, U16_MAX, U32_MAX, AccessPattern
from .program import ENUM_KINDS, Instruction, Program, TensorKind, normalize_imms

__all__ = ["access_patterns", "instructions", "names", "programs"]

ALL_OPS = tuple(Op)


def names() -> st.SearchStrategy[str]:
    """Identifiers such as ``w0``, ``_x``, ``layer.3.q`` (what Program accepts as a name)."""
    return st.from_regex(r"[a-z_][a-z0-9_]{0,5}(\.[a-z0-9_]{1,4}){0,2}", fullmatch=True)


def _small_or_any(lo: int, hi: int, small: int = 8) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(max(lo, -small), min(hi, small)), st.integers(lo, hi), st.sampled_from([lo, hi]))


@st.composite
def access_patterns(draw: st.DrawFn, spaces: Sequence[Space] = tuple(Space),
                    dtypes: Sequence[DType] = tuple(DType), tensors: Sequence[str] = ()) -> AccessPattern:
    """A random access pattern; HBM is only drawn when ``tensors`` names some tensor."""
    choices = [s for s in spaces if s != Space.hbm or tensors]
    if not choices:
        choices = [Space.sbuf]
    space = draw(st.sampled_from(choices))
    dtype = draw(st.sampled_from(list(dtypes)))
    ndims = draw(st.integers(0, MAX_FREE_DIMS))
    dims = tuple(
        (draw(_small_or_any(I32_MIN, I32_MAX, 256)), draw(_small_or_any(1, U32_MAX, 512))) for _ in range(ndims)
    )
    offset = draw(_small_or_any(0, I64_MAX, 1 << 16))
    if space == Space.hbm:
        tensor = draw(st.sampled_from(list(tensors)))
        rows = draw(_small_or_any(1, U16_MAX, 128))
        return AccessPattern(space, dtype, 0, rows, offset, dims, tensor, draw(_small_or_any(I32_MIN, I32_MAX, 4096)))
    start = draw(_small_or_any(0, U16_MAX - 1, 128))
    count = draw(_small_or_any(1, U16_MAX, 128))
    return AccessPattern(space, dtype, start, count, offset, dims)


_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-05, math.nan, math.inf, -math.inf]),
)


def _imm_value(kind: str, semaphores: Sequence[str], groups: Sequence[str]) -> st.SearchStrategy[object]:
    if kind in ENUM_KINDS:
        return st.sampled_from(list(ENUM_KINDS[kind]))
    if kind == "int":
        return _small_or_any(-(2**63), 2**63 - 1, 16)
    if kind == "float":
        return _floats
    if kind == "bool":
        return st.booleans()
    if kind == "ints":
        return st.lists(_small_or_any(I32_MIN + 1, I32_MAX, 16), max_size=MAX_FREE_DIMS).map(tuple)
    if kind == "sem":
        return st.sampled_from(list(semaphores))
    if kind == "group":
        return st.sampled_from(list(groups))
    raise AssertionError(kind)


@st.composite
def instructions(draw: st.DrawFn, *, tensors: Sequence[str] = (), semaphores: Sequence[str] = ("s0",),
                 groups: Sequence[str] = ("g0",), num_cores: int = 1, ops: Sequence[Op] = ALL_OPS) -> Instruction:
    """One instruction (any opcode of ``ops``) referring only to the given declared names.

    ``semaphores`` and ``groups`` must be non-empty when ``ops`` includes barrier / collectives.
    """
    op = draw(st.sampled_from(list(ops)))
    spec = OPSPECS[op]
    engine = draw(st.sampled_from(list(spec.engines)))
    queue = draw(st.integers(0, 3)) if engine in (Engine.dma, Engine.cc) else draw(st.sampled_from([0, 0, 0, 1]))
    core = draw(st.integers(0, num_cores - 1))
    operands: list[AccessPattern | None] = []
    for slot in spec.slots:
        if slot.optional and draw(st.booleans()):
            operands.append(None)
            continue
        operands.append(draw(access_patterns(sorted(slot.spaces), sorted(slot.dtypes), tensors)))
    imms = {}
    for imm in spec.imms:
        if imm.default is not None and draw(st.integers(0, 3)) == 0:
            continue  # leave the default
        imms[imm.name] = draw(_imm_value(imm.kind, semaphores, groups))
    sync = st.tuples(st.sampled_from(list(semaphores)), _small_or_any(0, U32_MAX, 8)) if semaphores else st.nothing()
    waits = tuple(draw(st.lists(sync, max_size=MAX_WAITS if semaphores else 0)))
    signals = tuple(draw(st.lists(sync, max_size=MAX_SIGNALS if semaphores else 0)))
    return Instruction(op, tuple(operands), normalize_imms(spec, imms), engine, core, queue, waits, signals)


@st.composite
def programs(draw: st.DrawFn, max_instructions: int = 12, ops: Sequence[Op] = ALL_OPS,
             max_cores: int = 4) -> Program:
    """A random structurally valid Program (declarations, then up to ``max_instructions`` instructions)."""
    num_cores = draw(st.integers(1, max_cores))
    cores_per_chip = draw(st.integers(1, num_cores))
    p = Program(num_cores, cores_per_chip)
    all_names = draw(st.lists(names(), min_size=2, max_size=12, unique=True))
    n_t = draw(st.integers(0, len(all_names) - 2))
    tnames = all_names[:n_t]
    rest = all_names[n_t:]
    n_s = draw(st.integers(1, len(rest) - 1))
    snames, gnames = rest[:n_s], rest[n_s:]
    for t in tnames:
        shape = draw(st.lists(st.integers(1, 4096), min_size=1, max_size=4))
        p.add_tensor(t, draw(st.sampled_from(list(DType))), shape, draw(st.sampled_from(list(TensorKind))),
                     draw(st.integers(0, p.num_chips - 1)))
    for s in snames:
        p.add_semaphore(s)
    for g in gnames:
        members = draw(st.lists(st.integers(0, num_cores - 1), min_size=1, max_size=num_cores, unique=True))
        p.add_group(g, members)
    n = draw(st.integers(0, max_instructions))
    usable_ops = [o for o in ops if gnames or o not in (Op.all_reduce, Op.all_gather, Op.reduce_scatter)]
    if not usable_ops:
        return p
    for _ in range(n):
        p.append(draw(instructions(tensors=tnames, semaphores=snames, groups=gnames, num_cores=num_cores,
                                   ops=usable_ops)))
    return p
