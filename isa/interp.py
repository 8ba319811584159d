"""The reference interpreter: the executable definition of the ISA's semantics (numpy).

:func:`run` executes a :class:`~infsim.isa.program.Program` on given HBM inputs and returns the
final memory state (:class:`InterpResult`). It models *what* a program computes, not *when*: there is
no notion of time, bandwidth or engine occupancy (that is the simulator's job).

What is modelled
----------------
Memory
    HBM is per chip, one zero-initialised byte buffer per declared tensor (``input``/``weight``
    tensors are filled from ``inputs``; ``output``/``scratch`` start zeroed). A core may only address
    tensors on its own chip (``program.chip_of_core``); data crosses chips only through collectives
    and send/recv. SBUF and PSUM are per core, ``uint8[partitions, bytes_per_partition]`` sized
    from the chip config, zero-initialised. Operands address memory by the access-pattern rules of
    :mod:`infsim.isa.operand` (vectorised: every operand becomes one strided numpy view); every
    access is bounds-checked and an out-of-range one raises :class:`InterpError` naming the
    instruction index, the slot and the overflow. Unaligned byte offsets are allowed.
Shapes
    Element-wise operands are matched by partitions and free-element count, elements taken in
    row-major access-pattern order (the validator further demands identical shapes). Per-partition
    operands (``scalar0``/``scalar1``, ``scale``/``bias``, ``reduce_dst``) have exactly one element per
    partition. ``matmul``: K = partitions of both inputs, M = stationary free size, N = moving free size,
    dst is M partitions x N elements (free dims flattened); hardware limits on K, M, N are the
    validator's. ``tensor_reduce`` reduces the innermost ``axes`` free dims; dst holds the product of
    the remaining sizes per partition. ``dma_copy`` / collectives match total element counts.
Reads before writes
    An instruction reads all its inputs before it writes any output, so in-place and overlapping
    operands are well defined. An output whose elements alias each other (a zero or overlapping
    stride) gets, for each aliased address, the value of the last element in access-pattern
    (row-major) order. ``activate`` writes ``dst`` before ``reduce_dst``.
Arithmetic
    Engines convert inputs to fp32, compute in fp32 and convert results with
    :func:`infsim.isa.dtypes.cast` (round to nearest even, saturating; fp32 outputs saturate too, so
    +-inf is stored as +-FLT_MAX). Float immediates are rounded to fp32 first. Precisely:

    * ``matmul``: the K products of each output are formed and summed in float64 and the sum is
      rounded once to fp32 (products of any two ISA dtypes are exact in float64; the float64
      summation order is numpy's and may differ in the last float64 bit between BLAS builds, which
      changes the fp32 result only for sums within ~1e-16 relative of an fp32 rounding boundary).
      ``accumulate=true`` then adds that fp32 value to the fp32 value already in ``dst`` (one fp32
      addition); ``accumulate=false`` overwrites. ``transpose`` is exact (a matmul with the
      identity: every output is one input times 1).
    * ``tensor_tensor`` / ``tensor_scalar``: one IEEE fp32 operation per ALU op (add, sub, mul, div;
      x/0 gives +-inf or NaN, then the saturating cast); max/min propagate NaN; compare ops give
      1.0 / 0.0 (NaN compares unequal to everything); ``bypass`` returns its left operand.
      ``tensor_scalar`` computes ``(src op0 s0) op1 s1`` with ``src`` on the left.
    * ``tensor_reduce`` add and ``activate``'s ``reduce_dst``: summed in float64, rounded once to
      fp32; max/min are exact and propagate NaN.
    * ``activate``: ``x = src * scale + bias`` as two fp32 operations (no fused multiply-add), then
      ``f(x)`` evaluated in float64 and rounded once to fp32: identity, relu ``max(x, 0)``, exp,
      tanh, sigmoid ``1/(1+exp(-x))``, silu ``x*sigmoid(x)``, gelu ``0.5x(1+erf(x/sqrt 2))`` (the exact
      erf form, evaluated as ``0.5x*erfc(-x/sqrt 2)`` so the negative tail keeps its relative precision;
      erfc to ~1e-15 relative), gelu_tanh ``0.5x(1+tanh(u))`` with ``u = sqrt(2/pi)(x+0.044715x^3)``,
      evaluated as the identical ``x*sigmoid(2u)`` (no cancellation for negative x), rsqrt
      ``1/sqrt(x)``, sqrt, square, reciprocal ``1/x``. ``reduce_dst[p, 0]`` is the sum over the free
      axis of the fp32 function outputs *before* they are cast to ``dst``'s dtype (the accumulator
      sits in front of the output converter, as in the ScalarE's ActReadAccumulator).
    * ``iota``: exact integer arithmetic wrapped to int32 (two's complement), then cast.
    * ``select``: ``pred != 0`` (NaN counts as true).
    * ``tensor_copy`` and ``dma_copy`` (and send/recv, all_gather): a bit-exact copy when source and
      destination dtypes are equal, else a cast through fp32.
    * collectives ``all_reduce`` / ``reduce_scatter``: element-wise over members in rank order (rank
      = position in the group tuple), add in float64 rounded once to fp32, max/min exact.
Scheduling
    Deterministic: repeatedly execute the head of the lowest runnable stream key (core, engine,
    queue), then start again from the lowest key. A head is runnable when all its waits hold
    (``sem >= value``); its signals are applied when it completes. ``barrier`` arrives (adds 1 to its
    semaphore) as soon as its waits hold and completes once ``sem >= k * count`` for the stream's k-th
    barrier on that semaphore. A group collective at the head of ``(core, cc, q)`` runs together with
    the heads of ``(member, cc, q)`` of every member once all of them are that collective with their
    waits satisfied (the same queue number on every member); a head that is a collective of another
    group just waits, while one of the same group with a different opcode, reduce op or element count
    is an error. ``send``/``recv`` are a rendezvous: a send at a cc stream head of core s (peer d, tag
    t) completes together with a recv at a cc stream head of core d (peer s, tag t); in order within
    a stream, and among several candidate heads the lowest stream key wins. If nothing is runnable
    while a stream is unfinished, :class:`~infsim.isa.errors.DeadlockError` names every blocked
    stream with its instruction, opcode and what it waits for. ``InterpResult.steps`` counts executed
    instructions; ``max_steps`` bounds it.
Cost
    Every operand is one cached strided numpy view and every instruction a handful of whole-tile
    numpy operations; about 40 us per 128x64 element-wise instruction (instruction records are
    decoded in chunks of 1024 per stream).

What is left out
    Timing of any kind; engine-specific restrictions that only the validator enforces (which spaces an
    engine may touch, partition-start alignment, free-size limits, legal dtypes per engine: the
    interpreter executes whatever it can compute and checks only what it needs: element counts,
    bounds, chip locality); PSUM bank structure; NaN payloads through arithmetic.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .dtypes import DType, cast
from .errors import DeadlockError, IsaError
from .opcodes import COLLECTIVE_OPS, OPSPECS, ActFunc, AluOp, Engine, Op, ReduceOp, Space
from .operand import AccessPattern
from .program import Program, TensorKind
from .records import INSTR_DTYPE, decode_imms, imm_enum, imm_float, imm_int, imm_ints

if TYPE_CHECKING:  # pragma: no cover
    from infsim.config.schema import ChipConfig

__all__ = ["InterpError", "InterpResult", "run"]

_GROUP_COLLECTIVES = frozenset({Op.all_reduce, Op.all_gather, Op.reduce_scatter})
_FIELDS: tuple[str, ...] = INSTR_DTYPE.names or ()
_CHUNK = 1024
_RAW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


class InterpError(IsaError):
    """A program cannot be executed as given (bad inputs, out-of-bounds access, mismatched shapes or
    collectives, step limit). The message names the instruction index, the operand slot and the cause."""


@functools.lru_cache(maxsize=4)
def _default_chip() -> ChipConfig:
    from infsim.config import load_chip

    return load_chip("inf2")


def _convert(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Engine output conversion: :func:`cast`, with the saturation rule applied also when the values
    already have the target dtype (``cast`` returns same-dtype input unchanged, keeping +-inf)."""
    v = np.asarray(values)
    if dtype.is_float and v.dtype == np.float32:  # fast path, same result as cast: every float max is an fp32
        mx = np.float32(dtype.max_finite)
        c = np.clip(v, -mx, mx)  # NaN stays NaN
        return c if dtype == DType.fp32 else c.astype(dtype.np)
    if dtype.is_float and v.dtype == dtype.np:
        mx = v.dtype.type(dtype.max_finite)
        return np.clip(v, -mx, mx)
    return cast(v, dtype)


# ---- float64 math helpers ---------------------------------------------------------------------------

def _erfc(x: np.ndarray) -> np.ndarray:
    """erfc in float64, accurate to ~1e-15 relative in both tails (no ``1 - erf`` cancellation).

    |x| <= 2.5: ``1 - erf(|x|)`` from the positive series ``erf(x) = 2/sqrt(pi) e^{-x^2} sum 2^n x^{2n+1}
    / (2n+1)!!``; |x| > 2.5: the continued fraction ``erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x +
    (3/2)/(x + ...))))``; negative x via ``erfc(-x) = 2 - erfc(x)``.
    """
    a = np.abs(x)
    tail = np.empty_like(a)  # erfc(|x|)
    small = a <= 2.5
    xs = a[small]
    if xs.size:
        x2 = xs * xs
        term = xs.copy()
        s = xs.copy()
        for n in range(40):
            term *= (2.0 * x2) / (2 * n + 3)
            s += term
        tail[small] = 1.0 - (2.0 / np.sqrt(np.pi)) * np.exp(-x2) * s
    xl = a[~small]
    if xl.size:
        f = xl.copy()
        for k in range(60, 0, -1):
            f = xl + (k / 2.0) / f
        tail[~small] = np.exp(-xl * xl) / np.sqrt(np.pi) / f
    out = np.where(x < 0, 2.0 - tail, tail)
    return np.where(np.isnan(x), np.nan, out)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _activation(func: ActFunc, x32: np.ndarray) -> np.ndarray:
    """f(x) for fp32 ``x32``: evaluated in float64, rounded once to fp32."""
    if func == ActFunc.identity:
        return x32
    x = x32.astype(np.float64)
    if func == ActFunc.relu:
        y = np.where(np.isnan(x), x, np.maximum(x, 0.0))
    elif func == ActFunc.exp:
        y = np.exp(x)
    elif func == ActFunc.tanh:
        y = np.tanh(x)
    elif func == ActFunc.sigmoid:
        y = _sigmoid(x)
    elif func == ActFunc.silu:
        y = x * _sigmoid(x)
    elif func == ActFunc.gelu:
        y = 0.5 * x * _erfc(-x / np.sqrt(2.0))
    elif func == ActFunc.gelu_tanh:  # 0.5x(1 + tanh(u)) == x * sigmoid(2u), the cancellation-free form
        y = x * _sigmoid(2.0 * np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3))
    elif func == ActFunc.rsqrt:
        y = 1.0 / np.sqrt(x)
    elif func == ActFunc.sqrt:
        y = np.sqrt(x)
    elif func == ActFunc.square:
        y = x * x
    elif func == ActFunc.reciprocal:
        y = 1.0 / x
    else:  # pragma: no cover - table error
        raise AssertionError(func)
    return y.astype(np.float32)


def _alu(op: AluOp, a: np.ndarray, b: np.ndarray | np.float32) -> np.ndarray:
    """One fp32 ALU operation (IEEE; compare ops give 1.0/0.0)."""
    if op == AluOp.add:
        return a + b
    if op == AluOp.sub:
        return a - b
    if op == AluOp.mul:
        return a * b
    if op == AluOp.div:
        return a / b
    if op == AluOp.max:
        return np.maximum(a, b)
    if op == AluOp.min:
        return np.minimum(a, b)
    if op == AluOp.bypass:
        return a
    cmp = {AluOp.eq: np.equal, AluOp.ne: np.not_equal, AluOp.lt: np.less, AluOp.le: np.less_equal,
           AluOp.gt: np.greater, AluOp.ge: np.greater_equal}[op]
    return cmp(a, b).astype(np.float32)


def _reduce(op: ReduceOp, x: np.ndarray, axis: int) -> np.ndarray:
    """Reduce fp32 ``x`` along ``axis``: add in float64 rounded once to fp32; max/min exact."""
    if op == ReduceOp.add:
        return x.astype(np.float64).sum(axis=axis).astype(np.float32)
    if op == ReduceOp.max:
        return np.max(x, axis=axis)
    return np.min(x, axis=axis)


def _flat_offsets(ap: AccessPattern) -> np.ndarray:
    """Element offsets of every element of ``ap`` in row-major order (partitions kept apart on-chip)."""
    if ap.space == Space.hbm:
        pstride = ap.partition_stride
    else:  # partitions never alias each other: separate them by more than any in-partition span
        pstride = 1 + sum(abs(st) * (sz - 1) for st, sz in ap.dims)
    off = np.zeros(ap.shape, np.int64)
    strides = (pstride, *ap.strides)
    for k, (st, sz) in enumerate(zip(strides, ap.shape)):
        shp = [1] * len(ap.shape)
        shp[k] = sz
        off = off + (np.arange(sz, dtype=np.int64) * st).reshape(shp)
    return off.reshape(-1)


@functools.lru_cache(maxsize=1 << 16)
def _may_alias(ap: AccessPattern) -> bool:
    """Cheap sufficient test: False when no two elements of ``ap`` can share an address."""
    dims = [(abs(st), sz) for st, sz in ap.dims if sz > 1]
    if ap.space == Space.hbm and ap.partitions > 1:
        dims.append((abs(ap.partition_stride), ap.partitions))
    dims.sort()
    extent = 1
    for st, sz in dims:
        if st < extent:
            return True
        extent += st * (sz - 1)
    return False


# ---- instruction view ---------------------------------------------------------------------------------

@dataclass
class _Ins:
    """Decoded instruction as the interpreter needs it (operands by slot name, AP-table indices)."""

    index: int
    op: Op
    engine: Engine
    core: int
    queue: int
    operands: dict[str, tuple[int, AccessPattern]]
    imms: dict[str, object]
    waits: list[tuple[int, int]]
    signals: list[tuple[int, int]]

    def where(self) -> str:
        return f"instruction {self.index} ({self.op.name} on core {self.core} {self.engine.name}[{self.queue}])"


def _collective_desc(ins: _Ins) -> str:
    """``all_reduce op=add``: a collective's opcode and reduction, for mismatch messages."""
    return ins.op.name + (f" op={imm_enum(ins.imms, 'op', ReduceOp).name}" if "op" in ins.imms else "")


@dataclass
class _Stream:
    key: tuple[int, int, int]
    indices: np.ndarray
    pos: int = 0
    head: _Ins | None = None
    arrived: bool = False  # barrier at the head has arrived
    barriers: dict[int, int] = field(default_factory=dict)  # sem -> barriers completed on it
    buf: list[tuple] = field(default_factory=list)  # records pos .. pos+len(buf)-1 as Python tuples
    buf_start: int = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.indices)

    def name(self) -> str:
        c, e, q = self.key
        return f"core {c} {Engine(e).name}[{q}]"


# ---- memory -------------------------------------------------------------------------------------------

class _Memory:
    """HBM tensors (per chip), SBUF and PSUM (per core) and the AP -> numpy view machinery."""

    def __init__(self, program: Program, chip: ChipConfig, inputs: Mapping[str, np.ndarray]):
        self.program = program
        self.sbuf_shape = (int(chip.sbuf.partitions), int(chip.sbuf.bytes_per_partition))
        self.psum_shape = (int(chip.psum.partitions), int(chip.psum.bytes_per_partition))
        self.sbuf: dict[int, np.ndarray] = {}
        self.psum: dict[int, np.ndarray] = {}
        self.hbm: dict[str, np.ndarray] = {}
        for name in inputs:
            if name not in program.tensors:
                declared = ", ".join(program.tensors) or "none"
                raise InterpError(f"input '{name}' is not a declared tensor (declared: {declared})")
        for t in program.tensors.values():
            if not (0 <= t.chip < program.num_chips):
                raise InterpError(f"tensor '{t.name}' is on chip {t.chip} but the program has "
                                  f"{program.num_chips} chip(s)")
            desc = f"{t.kind.name} {t.dtype.name}[{','.join(map(str, t.shape))}]"
            if t.kind in (TensorKind.input, TensorKind.weight):
                if t.name not in inputs:
                    raise InterpError(f"missing input for tensor '{t.name}' ({desc})")
                arr = np.asarray(inputs[t.name])
                if arr.shape != t.shape:
                    raise InterpError(f"input '{t.name}': shape {arr.shape} does not match the declared {desc}")
                if arr.dtype != t.dtype.np:
                    raise InterpError(f"input '{t.name}': dtype {arr.dtype} does not match the declared {desc} "
                                      f"(convert with infsim.isa.cast(x, DType.{t.dtype.name}))")
                self.hbm[t.name] = np.ascontiguousarray(arr).view(np.uint8).reshape(-1).copy()
            else:
                if t.name in inputs:
                    raise InterpError(f"input given for tensor '{t.name}' ({desc}); only input and weight "
                                      f"tensors take initial values")
                self.hbm[t.name] = np.zeros(t.num_bytes, np.uint8)
        self._views: dict[tuple[AccessPattern, int, bool], np.ndarray] = {}

    def onchip(self, space: Space, core: int) -> np.ndarray:
        store, shape = (self.sbuf, self.sbuf_shape) if space == Space.sbuf else (self.psum, self.psum_shape)
        mem = store.get(core)
        if mem is None:
            mem = store[core] = np.zeros(shape, np.uint8)
        return mem

    def view(self, ap: AccessPattern, core: int, raw: bool = False, ctx: _Ins | None = None,
             slot: str = "") -> np.ndarray:
        """A numpy view of ``ap`` (shape ``ap.shape``) over the memory ``core`` sees; bounds-checked.

        ``ctx`` (the executing instruction) and ``slot`` only serve error messages."""
        key = (ap, core, raw)
        v = self._views.get(key)
        if v is None:
            v = self._views[key] = self._make_view(ap, core, raw, ctx, slot)
        return v

    def _make_view(self, ap: AccessPattern, core: int, raw: bool, ctx: _Ins | None, slot: str) -> np.ndarray:
        isz = ap.dtype.itemsize
        what = f"{ctx.where()}: operand '{slot}'" if ctx is not None else "access pattern"
        lo, hi = ap.byte_extent()
        if ap.space == Space.hbm:
            t = self.program.tensors.get(ap.tensor or "")
            if t is None:
                raise InterpError(f"{what}: undeclared HBM tensor '{ap.tensor}'")
            chip = self.program.chip_of_core(core)
            if t.chip != chip:
                raise InterpError(f"{what}: core {core} is on chip {chip} and cannot address HBM tensor "
                                  f"'{t.name}' on chip {t.chip}")
            if lo < 0 or hi > t.num_bytes:
                over = -lo if lo < 0 else hi - t.num_bytes
                side = "before the start" if lo < 0 else "past the end"
                raise InterpError(f"{what}: hbm.{t.name} bytes [{lo}, {hi}) run {over} bytes {side} of the "
                                  f"tensor ({t.num_bytes} bytes)")
            buf = self.hbm[t.name]
            base = ap.offset
            strides = (ap.partition_stride * isz, *(st * isz for st in ap.strides))
        else:
            mem = self.onchip(ap.space, core)
            npart, nbytes = mem.shape
            sp = ap.space.name
            if ap.partition_start + ap.partitions > npart:
                raise InterpError(f"{what}: {sp} partitions [{ap.partition_start}, "
                                  f"{ap.partition_start + ap.partitions}) exceed the {npart} partitions by "
                                  f"{ap.partition_start + ap.partitions - npart}")
            if lo < 0 or hi > nbytes:
                over = -lo if lo < 0 else hi - nbytes
                side = "before the start" if lo < 0 else "past the end"
                raise InterpError(f"{what}: {sp} bytes [{lo}, {hi}) of each partition run {over} bytes {side} "
                                  f"of the partition ({nbytes} bytes)")
            buf = mem
            base = ap.partition_start * nbytes + ap.offset
            strides = (nbytes, *(st * isz for st in ap.strides))
        dt = _RAW[isz] if raw else ap.dtype.np
        try:
            return np.ndarray(ap.shape, dtype=dt, buffer=buf, offset=base, strides=strides)
        except ValueError as e:  # pragma: no cover - the checks above should make this unreachable
            raise InterpError(f"{what}: cannot address {ap}: {e}") from None

    def read(self, ap: AccessPattern, core: int, raw: bool = False, ctx: _Ins | None = None,
             slot: str = "") -> np.ndarray:
        return np.array(self.view(ap, core, raw, ctx, slot), order="C")

    def write(self, ap: AccessPattern, core: int, values: np.ndarray, raw: bool = False, ctx: _Ins | None = None,
              slot: str = "") -> None:
        v = self.view(ap, core, raw, ctx, slot)
        values = np.asarray(values).reshape(ap.shape)
        if _may_alias(ap):
            off = _flat_offsets(ap)
            _, first_rev = np.unique(off[::-1], return_index=True)
            if len(first_rev) < off.size:
                last = np.sort(off.size - 1 - first_rev)
                v[np.unravel_index(last, ap.shape)] = values.reshape(-1)[last]
                return
        v[...] = values


# ---- result -------------------------------------------------------------------------------------------

class InterpResult:
    """Final machine state of a run: HBM tensors, SBUF/PSUM per core, semaphores and the step count."""

    def __init__(self, program: Program, memory: _Memory, semaphores: dict[str, int], steps: int):
        self.program = program
        self._mem = memory
        self.semaphores: dict[str, int] = semaphores
        self.steps: int = steps

    def hbm(self, name: str) -> np.ndarray:
        """The final value of HBM tensor ``name`` with its declared dtype and shape (a copy)."""
        t = self.program.tensors.get(name)
        if t is None:
            raise InterpError(f"no HBM tensor '{name}' (declared: {', '.join(self.program.tensors) or 'none'})")
        return self._mem.hbm[name].view(t.dtype.np).reshape(t.shape).copy()

    def outputs(self) -> dict[str, np.ndarray]:
        """Every ``output`` tensor by name."""
        return {n: self.hbm(n) for n, t in self.program.tensors.items() if t.kind == TensorKind.output}

    def sbuf(self, core: int = 0) -> np.ndarray:
        """Raw SBUF bytes of ``core``: ``uint8[partitions, bytes_per_partition]``."""
        return self._mem.onchip(Space.sbuf, core)

    def psum(self, core: int = 0) -> np.ndarray:
        """Raw PSUM bytes of ``core``: ``uint8[partitions, bytes_per_partition]``."""
        return self._mem.onchip(Space.psum, core)

    def read(self, ap: AccessPattern, core: int = 0) -> np.ndarray:
        """The elements ``ap`` selects in the memory ``core`` sees, shape ``ap.shape``, dtype ``ap.dtype``."""
        return self._mem.read(ap, core)


# ---- the machine --------------------------------------------------------------------------------------

class _Machine:
    def __init__(self, program: Program, chip: ChipConfig, inputs: Mapping[str, np.ndarray]):
        self.p = program
        self.mem = _Memory(program, chip, inputs)
        self.sems = [0] * len(program.semaphores)
        self.steps = 0
        self._aps: dict[int, AccessPattern] = {}
        self._tensor_names = list(program.tensors)
        self._group_names = list(program.groups)
        self.streams: dict[tuple[int, int, int], _Stream] = {}
        for key, idx in program.streams().items():
            if key[0] >= program.num_cores:
                raise InterpError(f"instruction {int(idx[0])} runs on core {key[0]} but the program has "
                                  f"{program.num_cores} core(s)")
            s = _Stream(key, idx)
            self._load_head(s)
            self.streams[key] = s
        self.order = sorted(self.streams)

    # -- decoding --
    def _ap(self, idx: int) -> AccessPattern:
        ap = self._aps.get(idx)
        if ap is None:
            ap = self._aps[idx] = self.p.ap(idx)
        return ap

    def _decode(self, i: int, rec: tuple) -> _Ins:
        r = dict(zip(_FIELDS, rec))
        op = Op(r["op"])
        spec = OPSPECS[op]
        operands = {}
        opnd = r["opnd"]
        for k, slot in enumerate(spec.slots):
            a = opnd[k]
            if a >= 0:
                operands[slot.name] = (a, self._ap(a))
        imms = decode_imms(op, r, int, self._group_names)
        waits = [(s, v) for s, v in zip(r["wsem"], r["wval"]) if s >= 0]
        signals = [(s, v) for s, v in zip(r["ssem"], r["sval"]) if s >= 0]
        return _Ins(i, op, Engine(r["engine"]), r["core"], r["queue"], operands, imms, waits, signals)

    def _load_head(self, s: _Stream) -> None:
        if s.done:
            s.head = None
        else:
            k = s.pos - s.buf_start
            if k >= len(s.buf):  # decode the stream's records in chunks (Python tuples are cheap to read)
                s.buf_start, k = s.pos, 0
                chunk = self.p.instr[s.indices[s.pos:s.pos + _CHUNK]]
                s.buf = list(zip(*(chunk[f].tolist() for f in _FIELDS)))
            s.head = self._decode(int(s.indices[s.pos]), s.buf[k])
        s.arrived = False

    # -- operand helpers --
    def _rd(self, ins: _Ins, slot: str, raw: bool = False) -> np.ndarray:
        _, ap = ins.operands[slot]
        return self.mem.read(ap, ins.core, raw, ins, slot)

    def _f32(self, ins: _Ins, slot: str) -> np.ndarray:
        _, ap = ins.operands[slot]
        return self.mem.view(ap, ins.core, False, ins, slot).astype(np.float32, order="C")

    def _wr(self, ins: _Ins, slot: str, values32: np.ndarray) -> None:
        _, ap = ins.operands[slot]
        self.mem.write(ap, ins.core, _convert(values32, ap.dtype), False, ins, slot)

    def _wr_raw(self, ins: _Ins, slot: str, raw: np.ndarray) -> None:
        _, ap = ins.operands[slot]
        self.mem.write(ap, ins.core, raw, True, ins, slot)

    @staticmethod
    def _pf(ap: AccessPattern) -> tuple[int, int]:
        return ap.partitions, ap.free_size

    def _same_pf(self, ins: _Ins, ref: str, *slots: str) -> tuple[int, int]:
        pf = self._pf(ins.operands[ref][1])
        for s in slots:
            if s in ins.operands:
                q = self._pf(ins.operands[s][1])
                if q != pf:
                    raise InterpError(f"{ins.where()}: operand '{s}' is {q[0]} partitions x {q[1]} elements but "
                                      f"'{ref}' is {pf[0]} x {pf[1]}")
        return pf

    def _per_partition(self, ins: _Ins, slot: str, partitions: int) -> np.ndarray:
        ap = ins.operands[slot][1]
        if ap.partitions != partitions or ap.free_size != 1:
            raise InterpError(f"{ins.where()}: operand '{slot}' must be one element per partition "
                              f"({partitions} x 1), got {ap.partitions} x {ap.free_size}")
        return self._f32(ins, slot).reshape(partitions, 1)

    def _per_partition_or_imm(self, ins: _Ins, slot: str, imm: str, partitions: int) -> np.ndarray | np.float32:
        """The per-partition operand ``slot`` if the instruction has it, else the immediate ``imm`` (fp32)."""
        if slot in ins.operands:
            return self._per_partition(ins, slot, partitions)
        return np.float32(imm_float(ins.imms, imm))

    # -- execution of one (non-communicating) instruction --
    def execute(self, ins: _Ins) -> None:
        try:
            with np.errstate(all="ignore"):
                getattr(self, f"_op_{ins.op.name}")(ins)
        except MemoryError:
            sizes = ", ".join(f"{k}: {ap.num_elements} elements" for k, (_, ap) in ins.operands.items())
            raise InterpError(f"{ins.where()}: operands too large for the reference interpreter ({sizes})") from None

    def _op_matmul(self, ins: _Ins) -> None:
        st_ap, mv_ap, dst_ap = ins.operands["stationary"][1], ins.operands["moving"][1], ins.operands["dst"][1]
        k, m = self._pf(st_ap)
        k2, n = self._pf(mv_ap)
        if k != k2:
            raise InterpError(f"{ins.where()}: contraction mismatch: stationary has {k} partitions, moving {k2}")
        if self._pf(dst_ap) != (m, n):
            raise InterpError(f"{ins.where()}: operand 'dst' is {dst_ap.partitions} x {dst_ap.free_size}, "
                              f"expected M x N = {m} x {n}")
        a = self._f32(ins, "stationary").reshape(k, m).astype(np.float64)
        b = self._f32(ins, "moving").reshape(k, n).astype(np.float64)
        res = (a.T @ b).astype(np.float32)
        if ins.imms["accumulate"]:
            res = self._f32(ins, "dst").reshape(m, n) + res
        self._wr(ins, "dst", res)

    def _op_transpose(self, ins: _Ins) -> None:
        src_ap, dst_ap = ins.operands["src"][1], ins.operands["dst"][1]
        p, f = self._pf(src_ap)
        if self._pf(dst_ap) != (f, p):
            raise InterpError(f"{ins.where()}: operand 'dst' is {dst_ap.partitions} x {dst_ap.free_size}, "
                              f"expected the transpose {f} x {p}")
        self._wr(ins, "dst", np.ascontiguousarray(self._f32(ins, "src").reshape(p, f).T))

    def _op_tensor_tensor(self, ins: _Ins) -> None:
        p, f = self._same_pf(ins, "dst", "in0", "in1")
        a = self._f32(ins, "in0").reshape(p, f)
        b = self._f32(ins, "in1").reshape(p, f)
        self._wr(ins, "dst", _alu(imm_enum(ins.imms, "op", AluOp), a, b))

    def _op_tensor_scalar(self, ins: _Ins) -> None:
        p, f = self._same_pf(ins, "dst", "src")
        x = self._f32(ins, "src").reshape(p, f)
        s0 = self._per_partition_or_imm(ins, "scalar0", "imm0", p)
        s1 = self._per_partition_or_imm(ins, "scalar1", "imm1", p)
        y = _alu(imm_enum(ins.imms, "op0", AluOp), x, s0)
        y = _alu(imm_enum(ins.imms, "op1", AluOp), y, s1)
        self._wr(ins, "dst", y)

    def _op_tensor_reduce(self, ins: _Ins) -> None:
        src_ap, dst_ap = ins.operands["src"][1], ins.operands["dst"][1]
        axes = imm_int(ins.imms, "axes")
        nd = len(src_ap.dims)
        if not (1 <= axes <= nd):
            raise InterpError(f"{ins.where()}: axes={axes} but src has {nd} free dimension(s)")
        outer = int(np.prod(src_ap.sizes[: nd - axes], dtype=np.int64))
        inner = int(np.prod(src_ap.sizes[nd - axes:], dtype=np.int64))
        p = src_ap.partitions
        if self._pf(dst_ap) != (p, outer):
            raise InterpError(f"{ins.where()}: operand 'dst' is {dst_ap.partitions} x {dst_ap.free_size}, "
                              f"expected {p} x {outer} (src without its {axes} innermost dimension(s))")
        x = self._f32(ins, "src").reshape(p, outer, inner)
        self._wr(ins, "dst", _reduce(imm_enum(ins.imms, "op", ReduceOp), x, axis=2))

    def _op_tensor_copy(self, ins: _Ins) -> None:
        self._same_pf(ins, "dst", "src")
        self._copy(ins, ins.operands["src"][1], "src", ins.operands["dst"][1], "dst")

    def _copy(self, ins: _Ins, src_ap: AccessPattern, src_slot: str, dst_ap: AccessPattern, dst_slot: str) -> None:
        if src_ap.dtype == dst_ap.dtype:
            self._wr_raw(ins, dst_slot, self._rd(ins, src_slot, raw=True))
        else:
            self._wr(ins, dst_slot, self._f32(ins, src_slot))

    def _op_memset(self, ins: _Ins) -> None:
        ap = ins.operands["dst"][1]
        self._wr(ins, "dst", np.full(ap.shape, np.float32(imm_float(ins.imms, "value")), np.float32))

    def _op_iota(self, ins: _Ins) -> None:
        ap = ins.operands["dst"][1]
        mult = imm_ints(ins.imms, "multipliers")
        if len(mult) != len(ap.dims):
            raise InterpError(f"{ins.where()}: {len(mult)} multipliers for {len(ap.dims)} free dimension(s) of dst")
        m32 = np.uint64(0xFFFFFFFF)

        def u(v: int) -> np.uint64:
            return np.uint64(v & 0xFFFFFFFF)

        acc = np.full(ap.shape, u(imm_int(ins.imms, "base")), np.uint64)
        coefs = (imm_int(ins.imms, "channel_multiplier"), *mult)
        for k, (c, sz) in enumerate(zip(coefs, ap.shape)):
            shp = [1] * len(ap.shape)
            shp[k] = sz
            acc = acc + (np.arange(sz, dtype=np.uint64) * u(c)).reshape(shp)  # wraps mod 2^64
        vals = (acc & m32).astype(np.uint32).view(np.int32)
        self.mem.write(ap, ins.core, _convert(vals, ap.dtype), False, ins, "dst")

    def _op_select(self, ins: _Ins) -> None:
        p, f = self._same_pf(ins, "dst", "pred", "on_true", "on_false")
        pred = self._f32(ins, "pred").reshape(p, f)
        t = self._f32(ins, "on_true").reshape(p, f)
        e = self._f32(ins, "on_false").reshape(p, f)
        self._wr(ins, "dst", np.where(pred != 0, t, e))

    def _op_activate(self, ins: _Ins) -> None:
        p, f = self._same_pf(ins, "dst", "src")
        x = self._f32(ins, "src").reshape(p, f)
        scale = self._per_partition_or_imm(ins, "scale", "scale_imm", p)
        bias = self._per_partition_or_imm(ins, "bias", "bias_imm", p)
        x = x * scale + bias
        y = _activation(imm_enum(ins.imms, "func", ActFunc), x)
        red = None
        if "reduce_dst" in ins.operands:
            rap = ins.operands["reduce_dst"][1]
            if self._pf(rap) != (p, 1):
                raise InterpError(f"{ins.where()}: operand 'reduce_dst' must be one element per partition "
                                  f"({p} x 1), got {rap.partitions} x {rap.free_size}")
            red = _reduce(ReduceOp.add, y, axis=1).reshape(p, 1)
        self._wr(ins, "dst", y)
        if red is not None:
            self._wr(ins, "reduce_dst", red)

    def _op_dma_copy(self, ins: _Ins) -> None:
        src_ap, dst_ap = ins.operands["src"][1], ins.operands["dst"][1]
        if src_ap.num_elements != dst_ap.num_elements:
            raise InterpError(f"{ins.where()}: src has {src_ap.num_elements} elements but dst has "
                              f"{dst_ap.num_elements}")
        self._copy(ins, src_ap, "src", dst_ap, "dst")

    def _op_sem_wait(self, ins: _Ins) -> None:
        pass

    _op_sem_signal = _op_sem_wait
    _op_nop = _op_sem_wait
    _op_barrier = _op_sem_wait

    # -- scheduling --
    def _waits_hold(self, ins: _Ins) -> bool:
        sems = self.sems
        return all(sems[s] >= v for s, v in ins.waits)

    def _complete(self, s: _Stream) -> None:
        ins = s.head
        assert ins is not None
        for sem, v in ins.signals:
            self.sems[sem] += v
        self.steps += 1
        s.pos += 1
        self._load_head(s)

    def _try(self, s: _Stream) -> bool:
        """Make progress on stream ``s`` if its head can; returns whether anything happened."""
        ins = s.head
        assert ins is not None
        op = ins.op
        if op == Op.barrier:
            return self._try_barrier(s, ins)
        if op in COLLECTIVE_OPS:
            return self._try_collective(s, ins)
        if not self._waits_hold(ins):
            return False
        self.execute(ins)
        self._complete(s)
        return True

    def _try_barrier(self, s: _Stream, ins: _Ins) -> bool:
        sem = imm_int(ins.imms, "sem")
        progressed = False
        if not s.arrived:
            if not self._waits_hold(ins):
                return False
            self.sems[sem] += 1
            s.arrived = True
            progressed = True
        k = s.barriers.get(sem, 0) + 1
        if self.sems[sem] >= k * imm_int(ins.imms, "count"):
            s.barriers[sem] = k
            self._complete(s)
            return True
        return progressed

    # collectives
    def _group(self, ins: _Ins) -> tuple[int, ...]:
        name = str(ins.imms["group"])
        members = self.p.groups[name]
        if ins.core not in members:
            raise InterpError(f"{ins.where()}: core {ins.core} is not a member of group '{name}' {members}")
        return members

    def _member_heads(self, ins: _Ins) -> list[_Stream] | None:
        """Streams of every member of ``ins``'s group if all are ready to run the matching collective."""
        members = self._group(ins)
        out = []
        for m in members:
            st = self.streams.get((m, int(Engine.cc), ins.queue))
            if st is None or st.head is None:
                return None
            h = st.head
            if h.op not in _GROUP_COLLECTIVES or h.imms["group"] != ins.imms["group"]:
                return None
            if h.op != ins.op or h.imms.get("op") != ins.imms.get("op"):
                desc, mine = _collective_desc(h), _collective_desc(ins)
                raise InterpError(f"collective mismatch on group '{ins.imms['group']}': {ins.where()} is {mine} but "
                                  f"instruction {h.index} on core {m} is {desc}")
            if h.operands["src"][1].num_elements != ins.operands["src"][1].num_elements:
                raise InterpError(f"collective mismatch on group '{ins.imms['group']}': {ins.where()} has "
                                  f"{ins.operands['src'][1].num_elements} src elements but instruction {h.index} "
                                  f"on core {m} has {h.operands['src'][1].num_elements}")
            if not self._waits_hold(h):
                return None
            out.append(st)
        return out

    def _peer_head(self, ins: _Ins) -> _Stream | None:
        """The stream whose head is the send/recv matching ``ins`` (waits satisfied), lowest key first."""
        peer = imm_int(ins.imms, "peer")
        if not (0 <= peer < self.p.num_cores):
            raise InterpError(f"{ins.where()}: peer {peer} is not a core of the program "
                              f"({self.p.num_cores} core(s))")
        want = Op.recv if ins.op == Op.send else Op.send
        for key in self.order:
            if key[0] != peer or key[1] != int(Engine.cc):
                continue
            st = self.streams[key]
            h = st.head
            if (h is not None and h is not ins and h.op == want and h.imms["peer"] == ins.core
                    and h.imms["tag"] == ins.imms["tag"] and self._waits_hold(h)):
                return st
        return None

    def _try_collective(self, s: _Stream, ins: _Ins) -> bool:
        if not self._waits_hold(ins):
            return False
        if ins.op in (Op.send, Op.recv):
            other = self._peer_head(ins)
            if other is None:
                return False
            oh = other.head
            assert oh is not None  # _peer_head returns only a stream whose head is the matching send/recv
            snd, rcv = (s, other) if ins.op == Op.send else (other, s)
            with np.errstate(all="ignore"):
                self._sendrecv(*((ins, oh) if ins.op == Op.send else (oh, ins)))
            self._complete(snd)
            self._complete(rcv)
            return True
        streams = self._member_heads(ins)
        if streams is None:
            return False
        heads = [h for st in streams if (h := st.head) is not None]  # _member_heads checked each head is set
        with np.errstate(all="ignore"):
            self._group_collective(heads)
        for st in streams:
            self._complete(st)
        return True

    def _sendrecv(self, snd: _Ins, rcv: _Ins) -> None:
        src_ap, dst_ap = snd.operands["src"][1], rcv.operands["dst"][1]
        if src_ap.num_elements != dst_ap.num_elements:
            raise InterpError(f"send/recv mismatch: {snd.where()} sends {src_ap.num_elements} elements but "
                              f"{rcv.where()} receives {dst_ap.num_elements}")
        if src_ap.dtype == dst_ap.dtype:
            data = self.mem.read(src_ap, snd.core, True, snd, "src")
            self.mem.write(dst_ap, rcv.core, data, True, rcv, "dst")
        else:
            data = self.mem.view(src_ap, snd.core, False, snd, "src").astype(np.float32)
            self.mem.write(dst_ap, rcv.core, _convert(data, dst_ap.dtype), False, rcv, "dst")

    def _group_collective(self, heads: list[_Ins]) -> None:
        op = heads[0].op
        n = len(heads)
        srcs = [h.operands["src"][1] for h in heads]
        dsts = [h.operands["dst"][1] for h in heads]
        count = srcs[0].num_elements
        for h, d in zip(heads, dsts):
            want = {Op.all_reduce: count, Op.all_gather: count * n, Op.reduce_scatter: count // n}[op]
            if op == Op.reduce_scatter and count % n:
                raise InterpError(f"{h.where()}: reduce_scatter src has {count} elements, not a multiple of the "
                                  f"{n} group members")
            if d.num_elements != want:
                raise InterpError(f"{h.where()}: dst has {d.num_elements} elements, expected {want} "
                                  f"({op.name} over {n} members of {count} elements)")
        if op == Op.all_gather:
            raws = [self.mem.read(a, h.core, True, h, "src").reshape(-1) for h, a in zip(heads, srcs)]
            f32s = [self.mem.view(a, h.core, False, h, "src").astype(np.float32).reshape(-1)
                    for h, a in zip(heads, srcs)]
            for h, d in zip(heads, dsts):
                if all(a.dtype == d.dtype for a in srcs):
                    self.mem.write(d, h.core, np.concatenate(raws), True, h, "dst")
                else:
                    parts = [raws[r].view(d.dtype.np) if srcs[r].dtype == d.dtype else _convert(f32s[r], d.dtype)
                             for r in range(n)]
                    self.mem.write(d, h.core, np.concatenate(parts), False, h, "dst")
            return
        stack = np.stack([self.mem.view(a, h.core, False, h, "src").astype(np.float32).reshape(-1)
                          for h, a in zip(heads, srcs)])
        red = _reduce(imm_enum(heads[0].imms, "op", ReduceOp), stack, axis=0)
        chunk = count // n
        for r, (h, d) in enumerate(zip(heads, dsts)):
            part = red if op == Op.all_reduce else red[r * chunk:(r + 1) * chunk]
            self.mem.write(d, h.core, _convert(part, d.dtype), False, h, "dst")

    # -- main loop --
    def run(self, max_steps: int | None) -> None:
        active = [self.streams[k] for k in self.order if not self.streams[k].done]
        while active:
            progressed = False
            for s in active:
                if self._try(s):
                    progressed = True
                    break
            if not progressed:
                self._deadlock(active)
            if any(s.done for s in active):
                active = [s for s in active if not s.done]
            if max_steps is not None and self.steps >= max_steps and active:
                raise InterpError(f"stopped after max_steps={max_steps} executed instructions with "
                                  f"{len(active)} stream(s) unfinished")

    def _deadlock(self, active: list[_Stream]) -> None:
        names = self.p.semaphores
        lines = []
        for s in active:
            ins = s.head
            assert ins is not None
            base = f"{s.name()} at instruction {ins.index} ({ins.op.name})"
            unmet = [(sem, v) for sem, v in ins.waits if self.sems[sem] < v]
            reasons = [f"waits for semaphore '{names[sem]}' >= {v} (current {self.sems[sem]})" for sem, v in unmet]
            if not unmet and ins.op == Op.barrier:
                sem = imm_int(ins.imms, "sem")
                need = (s.barriers.get(sem, 0) + 1) * imm_int(ins.imms, "count")
                reasons.append(f"barrier waits for semaphore '{names[sem]}' >= {need} (current {self.sems[sem]})")
            elif not unmet and ins.op in (Op.send, Op.recv):
                other = "recv" if ins.op == Op.send else "send"
                reasons.append(f"waits for a matching {other} on core {ins.imms['peer']} with tag {ins.imms['tag']}")
            elif not unmet and ins.op in _GROUP_COLLECTIVES:
                missing = []
                for m in self.p.groups[str(ins.imms["group"])]:
                    st = self.streams.get((m, int(Engine.cc), ins.queue))
                    h = st.head if st is not None else None
                    if h is None:
                        missing.append(f"core {m} cc[{ins.queue}] (no instruction left)")
                    elif h is not ins and (h.op != ins.op or h.imms["group"] != ins.imms["group"]
                                           or not self._waits_hold(h)):
                        missing.append(f"core {m} cc[{ins.queue}] (at instruction {h.index} {h.op.name})")
                reasons.append(f"waits for group '{ins.imms['group']}' members: " + ", ".join(missing))
            lines.append(base + " " + "; ".join(reasons))
        raise DeadlockError(f"deadlock: {len(active)} stream(s) blocked: " + " | ".join(lines), lines)


def run(program: Program, inputs: Mapping[str, np.ndarray] | None = None, chip: ChipConfig | None = None, *,
        max_steps: int | None = None) -> InterpResult:
    """Execute ``program`` on HBM ``inputs`` (one array per ``input``/``weight`` tensor, declared dtype and
    shape) and return the final state. ``chip`` sizes SBUF and PSUM (default: the ``inf2`` preset).

    Raises :class:`InterpError` for bad inputs or operands and
    :class:`~infsim.isa.errors.DeadlockError` when the program can never finish.
    """
    if chip is None:
        chip = _default_chip()
    m = _Machine(program, chip, dict(inputs or {}))
    m.run(max_steps)
    sems = {name: m.sems[i] for i, name in enumerate(program.semaphores)}
    return InterpResult(program, m.mem, sems, m.steps)

