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
    (``sem >= value``); it executes completely (reads, computes and writes) and its signals are applied
    when it completes, before the stream's next instruction is considered. A stream's instructions
    therefore complete, and apply their signals, in program order: the ISA's rule (signals of one
    stream are applied in program order, :mod:`infsim.isa.program`) holds by construction, and a wait
    ``(s, v)`` on a semaphore one stream signals sees the effects of exactly the instructions of that
    stream up to the one whose increments bring ``s`` to ``v``. ``barrier`` arrives (adds 1 to its
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

from .errors import DeadlockError
from .interp_numerics import activation, alu, convert, reduce
from .interp_state import Ins, InterpError, InterpResult, Memory
from .opcodes import COLLECTIVE_OPS, OPSPECS, ActFunc, AluOp, Engine, Op, ReduceOp
from .operand import AccessPattern
from .program import Program
from .records import INSTR_DTYPE, decode_imms, imm_enum, imm_float, imm_int, imm_ints

if TYPE_CHECKING:  # pragma: no cover
    from infsim.config.schema import ChipConfig

__all__ = ["InterpError", "InterpResult", "run"]

_GROUP_COLLECTIVES = frozenset({Op.all_reduce, Op.all_gather, Op.reduce_scatter})
_FIELDS: tuple[str, ...] = INSTR_DTYPE.names or ()
_CHUNK = 1024


@functools.lru_cache(maxsize=4)
def _default_chip() -> ChipConfig:
    from infsim.config import load_chip

    return load_chip("inf2")


def _collective_desc(ins: Ins) -> str:
    """``all_reduce op=add``: a collective's opcode and reduction, for mismatch messages."""
    return ins.op.name + (f" op={imm_enum(ins.imms, 'op', ReduceOp).name}" if "op" in ins.imms else "")


@dataclass
class _Stream:
    key: tuple[int, int, int]
    indices: np.ndarray
    pos: int = 0
    head: Ins | None = None
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


# ---- the machine --------------------------------------------------------------------------------------

class _Machine:
    def __init__(self, program: Program, chip: ChipConfig, inputs: Mapping[str, np.ndarray]):
        self.p = program
        self.mem = Memory(program, chip, inputs)
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

    def _decode(self, i: int, rec: tuple) -> Ins:
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
        return Ins(i, op, Engine(r["engine"]), r["core"], r["queue"], operands, imms, waits, signals)

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
    def _rd(self, ins: Ins, slot: str, raw: bool = False) -> np.ndarray:
        _, ap = ins.operands[slot]
        return self.mem.read(ap, ins.core, raw, ins, slot)

    def _f32(self, ins: Ins, slot: str) -> np.ndarray:
        _, ap = ins.operands[slot]
        return self.mem.view(ap, ins.core, False, ins, slot).astype(np.float32, order="C")

    def _wr(self, ins: Ins, slot: str, values32: np.ndarray) -> None:
        _, ap = ins.operands[slot]
        self.mem.write(ap, ins.core, convert(values32, ap.dtype), False, ins, slot)

    def _wr_raw(self, ins: Ins, slot: str, raw: np.ndarray) -> None:
        _, ap = ins.operands[slot]
        self.mem.write(ap, ins.core, raw, True, ins, slot)

    @staticmethod
    def _pf(ap: AccessPattern) -> tuple[int, int]:
        return ap.partitions, ap.free_size

    def _same_pf(self, ins: Ins, ref: str, *slots: str) -> tuple[int, int]:
        pf = self._pf(ins.operands[ref][1])
        for s in slots:
            if s in ins.operands:
                q = self._pf(ins.operands[s][1])
                if q != pf:
                    raise InterpError(f"{ins.where()}: operand '{s}' is {q[0]} partitions x {q[1]} elements but "
                                      f"'{ref}' is {pf[0]} x {pf[1]}")
        return pf

    def _per_partition(self, ins: Ins, slot: str, partitions: int) -> np.ndarray:
        ap = ins.operands[slot][1]
        if ap.partitions != partitions or ap.free_size != 1:
            raise InterpError(f"{ins.where()}: operand '{slot}' must be one element per partition "
                              f"({partitions} x 1), got {ap.partitions} x {ap.free_size}")
        return self._f32(ins, slot).reshape(partitions, 1)

    def _per_partition_or_imm(self, ins: Ins, slot: str, imm: str, partitions: int) -> np.ndarray | np.float32:
        """The per-partition operand ``slot`` if the instruction has it, else the immediate ``imm`` (fp32)."""
        if slot in ins.operands:
            return self._per_partition(ins, slot, partitions)
        return np.float32(imm_float(ins.imms, imm))

    # -- execution of one (non-communicating) instruction --
    def execute(self, ins: Ins) -> None:
        try:
            with np.errstate(all="ignore"):
                getattr(self, f"_op_{ins.op.name}")(ins)
        except MemoryError:
            sizes = ", ".join(f"{k}: {ap.num_elements} elements" for k, (_, ap) in ins.operands.items())
            raise InterpError(f"{ins.where()}: operands too large for the reference interpreter ({sizes})") from None

    def _op_matmul(self, ins: Ins) -> None:
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

    def _op_transpose(self, ins: Ins) -> None:
        src_ap, dst_ap = ins.operands["src"][1], ins.operands["dst"][1]
        p, f = self._pf(src_ap)
        if self._pf(dst_ap) != (f, p):
            raise InterpError(f"{ins.where()}: operand 'dst' is {dst_ap.partitions} x {dst_ap.free_size}, "
                              f"expected the transpose {f} x {p}")
        self._wr(ins, "dst", np.ascontiguousarray(self._f32(ins, "src").reshape(p, f).T))

    def _op_tensor_tensor(self, ins: Ins) -> None:
        p, f = self._same_pf(ins, "dst", "in0", "in1")
        a = self._f32(ins, "in0").reshape(p, f)
        b = self._f32(ins, "in1").reshape(p, f)
        self._wr(ins, "dst", alu(imm_enum(ins.imms, "op", AluOp), a, b))

    def _op_tensor_scalar(self, ins: Ins) -> None:
        p, f = self._same_pf(ins, "dst", "src")
        x = self._f32(ins, "src").reshape(p, f)
        s0 = self._per_partition_or_imm(ins, "scalar0", "imm0", p)
        s1 = self._per_partition_or_imm(ins, "scalar1", "imm1", p)
        y = alu(imm_enum(ins.imms, "op0", AluOp), x, s0)
        y = alu(imm_enum(ins.imms, "op1", AluOp), y, s1)
        self._wr(ins, "dst", y)

    def _op_tensor_reduce(self, ins: Ins) -> None:
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
        self._wr(ins, "dst", reduce(imm_enum(ins.imms, "op", ReduceOp), x, axis=2))

    def _op_tensor_copy(self, ins: Ins) -> None:
        self._same_pf(ins, "dst", "src")
        self._copy(ins, ins.operands["src"][1], "src", ins.operands["dst"][1], "dst")

    def _copy(self, ins: Ins, src_ap: AccessPattern, src_slot: str, dst_ap: AccessPattern, dst_slot: str) -> None:
        if src_ap.dtype == dst_ap.dtype:
            self._wr_raw(ins, dst_slot, self._rd(ins, src_slot, raw=True))
        else:
            self._wr(ins, dst_slot, self._f32(ins, src_slot))

    def _op_memset(self, ins: Ins) -> None:
        ap = ins.operands["dst"][1]
        self._wr(ins, "dst", np.full(ap.shape, np.float32(imm_float(ins.imms, "value")), np.float32))

    def _op_iota(self, ins: Ins) -> None:
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
        self.mem.write(ap, ins.core, convert(vals, ap.dtype), False, ins, "dst")

    def _op_select(self, ins: Ins) -> None:
        p, f = self._same_pf(ins, "dst", "pred", "on_true", "on_false")
        pred = self._f32(ins, "pred").reshape(p, f)
        t = self._f32(ins, "on_true").reshape(p, f)
        e = self._f32(ins, "on_false").reshape(p, f)
        self._wr(ins, "dst", np.where(pred != 0, t, e))

    def _op_activate(self, ins: Ins) -> None:
        p, f = self._same_pf(ins, "dst", "src")
        x = self._f32(ins, "src").reshape(p, f)
        scale = self._per_partition_or_imm(ins, "scale", "scale_imm", p)
        bias = self._per_partition_or_imm(ins, "bias", "bias_imm", p)
        x = x * scale + bias
        y = activation(imm_enum(ins.imms, "func", ActFunc), x)
        red = None
        if "reduce_dst" in ins.operands:
            rap = ins.operands["reduce_dst"][1]
            if self._pf(rap) != (p, 1):
                raise InterpError(f"{ins.where()}: operand 'reduce_dst' must be one element per partition "
                                  f"({p} x 1), got {rap.partitions} x {rap.free_size}")
            red = reduce(ReduceOp.add, y, axis=1).reshape(p, 1)
        self._wr(ins, "dst", y)
        if red is not None:
            self._wr(ins, "reduce_dst", red)

    def _op_dma_copy(self, ins: Ins) -> None:
        src_ap, dst_ap = ins.operands["src"][1], ins.operands["dst"][1]
        if src_ap.num_elements != dst_ap.num_elements:
            raise InterpError(f"{ins.where()}: src has {src_ap.num_elements} elements but dst has "
                              f"{dst_ap.num_elements}")
        self._copy(ins, src_ap, "src", dst_ap, "dst")

    def _op_sem_wait(self, ins: Ins) -> None:
        pass

    _op_sem_signal = _op_sem_wait
    _op_nop = _op_sem_wait
    _op_barrier = _op_sem_wait

    # -- scheduling --
    def _waits_hold(self, ins: Ins) -> bool:
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

    def _try_barrier(self, s: _Stream, ins: Ins) -> bool:
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
    def _group(self, ins: Ins) -> tuple[int, ...]:
        name = str(ins.imms["group"])
        members = self.p.groups[name]
        if ins.core not in members:
            raise InterpError(f"{ins.where()}: core {ins.core} is not a member of group '{name}' {members}")
        return members

    def _member_heads(self, ins: Ins) -> list[_Stream] | None:
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

    def _peer_head(self, ins: Ins) -> _Stream | None:
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

    def _try_collective(self, s: _Stream, ins: Ins) -> bool:
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

    def _sendrecv(self, snd: Ins, rcv: Ins) -> None:
        src_ap, dst_ap = snd.operands["src"][1], rcv.operands["dst"][1]
        if src_ap.num_elements != dst_ap.num_elements:
            raise InterpError(f"send/recv mismatch: {snd.where()} sends {src_ap.num_elements} elements but "
                              f"{rcv.where()} receives {dst_ap.num_elements}")
        if src_ap.dtype == dst_ap.dtype:
            data = self.mem.read(src_ap, snd.core, True, snd, "src")
            self.mem.write(dst_ap, rcv.core, data, True, rcv, "dst")
        else:
            data = self.mem.view(src_ap, snd.core, False, snd, "src").astype(np.float32)
            self.mem.write(dst_ap, rcv.core, convert(data, dst_ap.dtype), False, rcv, "dst")

    def _group_collective(self, heads: list[Ins]) -> None:
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
                    parts = [raws[r].view(d.dtype.np) if srcs[r].dtype == d.dtype else convert(f32s[r], d.dtype)
                             for r in range(n)]
                    self.mem.write(d, h.core, np.concatenate(parts), False, h, "dst")
            return
        stack = np.stack([self.mem.view(a, h.core, False, h, "src").astype(np.float32).reshape(-1)
                          for h, a in zip(heads, srcs)])
        red = reduce(imm_enum(heads[0].imms, "op", ReduceOp), stack, axis=0)
        chunk = count // n
        for r, (h, d) in enumerate(zip(heads, dsts)):
            part = red if op == Op.all_reduce else red[r * chunk:(r + 1) * chunk]
            self.mem.write(d, h.core, convert(part, d.dtype), False, h, "dst")

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

