"""Per-instruction costs of a program on a chip, computed once, vectorised over the instruction records.

Everything the event loop needs that does not depend on timing is computed here with numpy over the
columnar :class:`~infsim.isa.program.Program` (per access-pattern quantities once per distinct AP):

* compute engines (tensor / vector / scalar / gpsimd) and the sync sequencer: ``busy_ps`` (issue
  interval: the engine may start its next instruction ``busy_ps`` after this one started) and
  ``lat_ps`` (start -> completion, when the instruction's semaphore signals are applied). Matmuls and
  transposes come from :func:`infsim.hw.systolic.matmul_timing` / ``transpose_timing`` per tensor
  stream (back-to-back pipelining, stationary reuse); elementwise ops from
  :func:`infsim.hw.elementwise.elementwise_cycles`. Sync instructions (``sem_wait``, ``sem_signal``,
  ``barrier``, ``nop``) cost nothing: they are sequencer actions (left out: sequencer issue cycles).
* DMA: engine occupancy (descriptors + bytes at the engine bandwidth, :mod:`infsim.hw.dma`), HBM bytes
  read/written, their chip and address; the HBM part is timed by the memory model at run time.
* collectives: the bytes of the operands (timed by the collective model at run time).
* energy event counts per instruction: MACs (by dtype), SBUF and PSUM bytes, HBM bytes, vector/gpsimd
  element-ops and scalar-engine elements (see :mod:`infsim.hw.energy`).

Cycles convert to integer picoseconds per instruction with ``ceil(cycles * 1e9 / clock_khz)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infsim.config.schema import ChipConfig, ElementwiseEngineConfig, by_dtype
from infsim.hw import dma as dma_hw
from infsim.hw import systolic
from infsim.hw.elementwise import elementwise_cycles
from infsim.isa.dtypes import DType
from infsim.isa.opcodes import COLLECTIVE_OPS, ActFunc, AluOp, Engine, Op, Space
from infsim.isa.program import Program

ITEMSIZE = np.array([DType(d).itemsize for d in range(len(DType))], dtype=np.int64)
DTYPE_NAMES = [DType(d).name for d in range(len(DType))]

#: number of full-size tensor inputs of each elementwise opcode (per-partition scalars are not counted)
TENSOR_INPUTS = {Op.tensor_tensor: 2, Op.tensor_scalar: 1, Op.tensor_reduce: 1, Op.tensor_copy: 1, Op.memset: 0,
                 Op.iota: 0, Op.select: 3, Op.activate: 1}
#: operand slots holding full-size tensors (inputs and outputs) of each elementwise opcode
TENSOR_SLOTS = {Op.tensor_tensor: (0, 1, 2), Op.tensor_scalar: (0, 1), Op.tensor_reduce: (0, 1),
                Op.tensor_copy: (0, 1), Op.memset: (0,), Op.iota: (0,), Op.select: (0, 1, 2, 3),
                Op.activate: (0, 1)}
_TENSOR_SLOT = np.zeros((256, 1 + max(max(v) for v in TENSOR_SLOTS.values())), dtype=bool)  # [opcode, slot]
_TENSOR_INPUT_COUNT = np.zeros(256, dtype=np.int64)  # [opcode]: TENSOR_INPUTS, 0 for other opcodes
_ENERGY_INPUT_COUNT = np.zeros(256, dtype=np.int64)  # [opcode]: TENSOR_INPUTS but at least 1 (vector ops), else 0
for _op, _slots in TENSOR_SLOTS.items():
    _TENSOR_SLOT[int(_op), list(_slots)] = True
for _op, _k in TENSOR_INPUTS.items():
    _TENSOR_INPUT_COUNT[int(_op)] = _k
    _ENERGY_INPUT_COUNT[int(_op)] = max(_k, 1)
SYNC_ONLY = (Op.sem_wait, Op.sem_signal, Op.barrier, Op.nop)
COLLECTIVES = (Op.all_reduce, Op.all_gather, Op.reduce_scatter, Op.send, Op.recv)
#: per opcode (uint8): whether it is one of :data:`COLLECTIVES` (``IS_COLLECTIVE[op_column]``: one lookup per
#: instruction, where ``np.isin`` compares the column once per collective opcode)
IS_COLLECTIVE = np.zeros(256, dtype=bool)
IS_COLLECTIVE[[int(o) for o in COLLECTIVE_OPS]] = True


def clock_khz(ghz: float) -> int:
    return int(round(ghz * 1e6))


def cycles_to_ps(cycles: np.ndarray, ghz: float) -> np.ndarray:
    """``ceil(cycles * period)`` in integer picoseconds, exact integer arithmetic (int64)."""
    khz = clock_khz(ghz)
    c = np.asarray(cycles, dtype=np.int64)
    return (c * 1_000_000_000 + khz - 1) // khz


def ns_to_ps(ns: np.ndarray | float) -> np.ndarray:
    return np.ceil(np.asarray(ns, dtype=np.float64) * 1000.0 - 1e-6).astype(np.int64)


@dataclass
class ApInfo:
    """Derived quantities of every row of the program's AP table."""

    space: np.ndarray
    dtype: np.ndarray
    pcount: np.ndarray
    free: np.ndarray
    elems: np.ndarray
    nbytes: np.ndarray
    stride_bytes: np.ndarray  # innermost stride in bytes (0 if the innermost dim has size 1)
    run: np.ndarray  # contiguous block (elements) for DMA descriptors
    row_stride: np.ndarray  # elements between the starts of consecutive blocks (infsim.hw.dma.ap_row_patterns)


def ap_info(program: Program) -> ApInfo:
    aps = program.aps
    if len(aps) == 0:
        z = np.zeros(0, dtype=np.int64)
        return ApInfo(z, z, z, z, z, z, z, z, z)
    nd = aps["ndims"].astype(np.int64)
    mask = np.arange(aps["sizes"].shape[1])[None, :] < nd[:, None]
    sizes = np.where(mask, aps["sizes"].astype(np.int64), 1)
    free = sizes.prod(axis=1)
    dt = aps["dtype"].astype(np.int64)
    isz = ITEMSIZE[dt]
    pc = aps["pcount"].astype(np.int64)
    inner = np.maximum(nd - 1, 0)
    rows = np.arange(len(aps))
    inner_stride = aps["strides"][rows, inner].astype(np.int64)
    inner_size = sizes[rows, inner]
    # innermost stride in bytes where it matters (0 when the innermost dim has one element)
    stride_b = np.where((nd > 0) & (inner_size > 1), np.abs(inner_stride) * isz, 0)
    run, row_stride = dma_hw.ap_row_patterns(aps)
    return ApInfo(aps["space"].astype(np.int64), dt, pc, free, pc * free, pc * free * isz, stride_b, run, row_stride)


class SparseColumn:
    """A per-instruction column that is ``fill`` outside a subset of the instructions: ``values[j]`` belongs to
    instruction ``rows[j]`` (``rows`` ascending, shared by the columns of one subset). The DMA-only and
    collective-only columns of :class:`Costs` are stored so (on a 70B program ~91% of their entries would be
    zeros). ``fill_of(idx)``, when given, is the fill of instructions ``idx`` (the issuing core's chip for the
    chip columns), else ``fill``.

    ``col[i]`` (an index) is a scalar, ``col[idx]`` (an integer index array) an array; ``np.asarray(col)`` and
    :meth:`dense` build the whole per-instruction array (``len(col)`` entries: meant for small programs and the
    reference engine, not the large-program path)."""

    __slots__ = ("rows", "values", "n", "fill", "fill_of")

    def __init__(self, rows: np.ndarray, values: np.ndarray, n: int, fill: int = 0,
                 fill_of: Callable[[np.ndarray], np.ndarray] | None = None):
        if len(rows) != len(values):
            raise ValueError(f"SparseColumn: {len(rows)} rows but {len(values)} values")
        self.rows, self.values, self.n, self.fill, self.fill_of = rows, values, n, fill, fill_of

    def __len__(self) -> int:
        return self.n

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    def dense(self) -> np.ndarray:
        """The whole per-instruction column."""
        if self.fill_of is not None:
            out = np.asarray(self.fill_of(np.arange(self.n)), dtype=self.values.dtype)
        else:
            out = np.full(self.n, self.fill, dtype=self.values.dtype)
        out[self.rows] = self.values
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        d = self.dense()
        return d if dtype is None else d.astype(dtype)

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, (int, np.integer)):  # one instruction (the per-collective loops): no array temporaries
            one = int(idx) + (self.n if idx < 0 else 0)
            if not 0 <= one < self.n:
                raise IndexError(f"instruction index {int(idx)} out of range for a column of {self.n} instructions")
            pos = int(self.rows.searchsorted(one))
            if pos < len(self.rows) and self.rows[pos] == one:
                return self.values[pos]
            if self.fill_of is not None:
                return self.values.dtype.type(self.fill_of(np.array([one]))[0])
            return self.values.dtype.type(self.fill)
        scalar = np.ndim(idx) == 0
        i = np.atleast_1d(np.asarray(idx))
        if i.dtype == bool:
            raise TypeError("SparseColumn takes instruction indices, not a mask (np.flatnonzero it)")
        i = np.where(i < 0, i + self.n, i).astype(np.int64, copy=False)
        if len(i) and (i.min() < 0 or i.max() >= self.n):
            raise IndexError(f"instruction index out of range for a column of {self.n} instructions")
        if len(i) > len(self.rows):  # more lookups than stored values: scattering them is cheaper
            return self.dense()[i]
        at = np.minimum(np.searchsorted(self.rows, i), max(len(self.rows) - 1, 0))
        hit = (self.rows[at] == i) if len(self.rows) else np.zeros(len(i), bool)
        if self.fill_of is not None:
            out = np.asarray(self.fill_of(i), dtype=self.values.dtype)
        else:
            out = np.full(len(i), self.fill, dtype=self.values.dtype)
        out[hit] = self.values[at[hit]]
        return out[0] if scalar else out

    def sum(self) -> Any:
        if self.fill_of is not None or self.fill != 0:
            return self.dense().sum()
        return self.values.sum()


def narrow_unsigned(a: np.ndarray) -> np.ndarray:
    """``a`` (non-negative integers) as uint32 when every value fits, else unchanged (int64): a narrower copy
    of the same values, never a wrapped one."""
    if len(a) == 0 or (a.min() >= 0 and a.max() <= np.iinfo(np.uint32).max):
        return a.astype(np.uint32)
    return a


def narrow_int32(a: np.ndarray, what: str) -> np.ndarray:
    """``a`` as int32; a value outside int32 is an error naming ``what`` and the instruction (never a wrapped
    value)."""
    a = np.asarray(a)
    if len(a) and a.dtype != np.int32:
        bad = np.flatnonzero((a < np.iinfo(np.int32).min) | (a > np.iinfo(np.int32).max))
        if len(bad):
            from infsim.errors import InfsimError

            raise InfsimError(f"instruction {int(bad[0])}: {what} {int(a[bad[0]])} does not fit the engine's "
                              f"32-bit column")
    return a.astype(np.int32)


@dataclass
class Costs:
    """Static per-instruction costs and event counts of a program of ``n`` instructions.

    ``busy_ps`` / ``lat_ps`` (int64) and the energy counts are per instruction (the counts as uint32 where
    they fit, :func:`narrow_unsigned`; ``mac_dtype`` int8). The DMA columns live on the ``dma_copy``
    instructions ``dma_rows`` only and the collective ones on the collective instructions ``cc_rows``
    (:class:`SparseColumn`, int64 values: ``costs.hbm_read.values[j]`` belongs to ``costs.dma_rows[j]``)."""

    busy_ps: np.ndarray
    lat_ps: np.ndarray
    # DMA (SparseColumn over dma_rows)
    dma_rows: np.ndarray
    dma_engine_ps: SparseColumn  # engine occupancy without HBM contention
    dma_chunks: SparseColumn
    dma_bytes: SparseColumn
    hbm_read: SparseColumn  # bytes read from HBM
    hbm_write: SparseColumn
    hbm_read_chip: SparseColumn  # elsewhere: the issuing core's chip
    hbm_write_chip: SparseColumn
    hbm_read_addr: SparseColumn
    hbm_write_addr: SparseColumn
    # collectives (SparseColumn over cc_rows)
    cc_rows: np.ndarray
    cc_src_bytes: SparseColumn
    cc_dst_bytes: SparseColumn
    # energy event counts
    macs: np.ndarray  # uint32 (float64 where a product does not fit)
    mac_dtype: np.ndarray  # DType code of the matmul inputs (-1: none), int8
    program: Program = field(repr=False)  # for the operand counts, computed on first use
    _counts: OperandCounts | None = field(default=None, repr=False)
    _ap_info: ApInfo | None = field(default=None, repr=False)  # the program's, kept for the operand counts

    def __len__(self) -> int:
        return len(self.busy_ps)

    @property
    def ap_info(self) -> ApInfo | None:
        """:func:`ap_info` of the program, when these costs were computed with it (:func:`compute_costs`)."""
        return self._ap_info

    def operand_counts(self) -> OperandCounts:
        """:func:`operand_counts` of the program, computed on first use (after the engine: it needs none)."""
        if self._counts is None:
            self._counts = operand_counts(self.program, self._ap_info)
        return self._counts

    @property
    def sbuf_bytes(self) -> np.ndarray:
        return self.operand_counts().sbuf_bytes

    @property
    def psum_bytes(self) -> np.ndarray:
        return self.operand_counts().psum_bytes

    @property
    def vector_ops(self) -> np.ndarray:
        return self.operand_counts().vector_ops

    @property
    def scalar_ops(self) -> np.ndarray:
        return self.operand_counts().scalar_ops


#: instructions per block where a function walks the operand table block by block (a block's operands fit in cache)
_CHUNK = 1 << 15


def _operand(opnd: np.ndarray, slot: int) -> np.ndarray:
    return opnd[:, slot]


def _take(arr: np.ndarray, idx: np.ndarray, default: int = 0) -> np.ndarray:
    """``arr[idx]`` with ``default`` where ``idx == -1`` (an absent operand or tensor): one gather from ``arr``
    with ``default`` appended. ``idx`` must be ``>= -1`` (:func:`_indices`)."""
    return np.take(np.append(arr, default), idx)


def _indices(idx: np.ndarray) -> np.ndarray:
    """Operand or tensor indices for :func:`_take`: every negative one means "none" (-1), int32 kept."""
    return np.maximum(idx, -1)


def _elementwise(chip: ChipConfig, eng_cfg: ElementwiseEngineConfig, ins: np.ndarray, info: ApInfo,
                 sel: np.ndarray) -> np.ndarray:
    """Cycles of the elementwise instructions ``sel`` (indices) on the engine configured by ``eng_cfg``."""
    ops = ins["op"][sel]  # the fields used, not whole records
    opnd = _indices(ins["opnd"][sel])
    e0 = ins["e0"][sel]
    n = len(sel)
    # the tensor operand slots of each instruction (TENSOR_SLOTS of its opcode; none for other opcodes)
    k = min(_TENSOR_SLOT.shape[1], opnd.shape[1])
    ts, a = _TENSOR_SLOT[ops][:, :k], opnd[:, :k]
    parts = np.where(ts, np.take(np.append(info.pcount, 1), a), 1).max(axis=1, initial=1)
    free = np.where(ts, np.take(np.append(info.free, 0), a), 0).max(axis=1, initial=0)
    strided = (ts & (np.take(np.append(info.stride_bytes, 0), a) > eng_cfg.strided_threshold_bytes)).any(axis=1)
    n_in = _TENSOR_INPUT_COUNT[ops]
    func = np.ones(n, dtype=np.float64)
    reduce = np.zeros(n, dtype=bool)
    fc = eng_cfg.func_cost
    if fc:
        m = ops == int(Op.activate)
        if m.any():
            table = np.array([fc.get(f.name, 1.0) for f in ActFunc])
            func[m] = table[e0[m].astype(np.int64)]
            reduce[m] = opnd[m, 4] >= 0
        for op in (Op.tensor_tensor, Op.tensor_scalar):
            m = ops == int(op)
            if m.any():
                table = np.array([fc.get(a.name, 1.0) for a in AluOp])
                func[m] = table[e0[m].astype(np.int64)]
    else:
        m = ops == int(Op.activate)
        reduce[m] = opnd[m, 4] >= 0
    cyc = elementwise_cycles(eng_cfg, parts, free, n_in, func, strided, reduce)
    nop = ops == int(Op.nop)
    return np.where(nop, 0, cyc)


@dataclass
class OperandCounts:
    """Energy event counts per instruction from its operands (uint32 where every value fits, else int64)."""

    sbuf_bytes: np.ndarray
    psum_bytes: np.ndarray
    vector_ops: np.ndarray  # element-ops on vector + gpsimd engines
    scalar_ops: np.ndarray  # elements through the scalar (activation) engine


def operand_counts(program: Program, info: ApInfo | None = None) -> OperandCounts:
    """SBUF and PSUM bytes of every instruction's operands, and its vector / scalar element-ops (energy). A
    function of the program alone; :class:`Costs` computes it on first use (the engine never needs it)."""
    ins = program.instr
    n = len(ins)
    info = ap_info(program) if info is None else info
    # per AP (and a last entry 0 for "no operand", index -1), then gathered per operand slot
    ap_sbuf_b = np.append(np.where(info.space == int(Space.sbuf), info.nbytes, 0), 0)
    ap_psum_b = np.append(np.where(info.space == int(Space.psum), info.nbytes, 0), 0)
    ap_elems = np.append(info.elems, 0)
    opnd = ins["opnd"]
    sbuf_b = np.empty(n, dtype=np.int64)
    psum_b = np.empty(n, dtype=np.int64)
    slots = opnd.shape[1]
    # both per-AP byte counts in one int64 (SBUF bytes low, PSUM bytes high) where a sum over the slots cannot
    # carry from one half into the other: one gather and one sum per block instead of two
    packed = int(ap_sbuf_b.max()) * slots < 1 << 32 and int(ap_psum_b.max()) * slots < 1 << 31
    ap_both = ap_sbuf_b + (ap_psum_b << 32) if packed else ap_sbuf_b
    for lo in range(0, n, _CHUNK):  # a block of instructions at a time: its operand slots copied once, cache-sized
        a = _indices(opnd[lo:lo + _CHUNK]).T  # [slot, instruction]
        np.take(ap_both, a).sum(axis=0, out=sbuf_b[lo:lo + _CHUNK])
        if packed:
            np.right_shift(sbuf_b[lo:lo + _CHUNK], 32, out=psum_b[lo:lo + _CHUNK])
            np.bitwise_and(sbuf_b[lo:lo + _CHUNK], (1 << 32) - 1, out=sbuf_b[lo:lo + _CHUNK])
        else:
            np.take(ap_psum_b, a).sum(axis=0, out=psum_b[lo:lo + _CHUNK])
    sbuf, psum = narrow_unsigned(sbuf_b), narrow_unsigned(psum_b)
    del sbuf_b, psum_b
    # element counts only on the elementwise engines' instructions (every other instruction counts 0)
    eng = ins["engine"].copy()  # one pass over the records, then compared at memory speed
    is_vec = (eng == int(Engine.vector)) | (eng == int(Engine.gpsimd))
    is_act = eng == int(Engine.scalar)
    sel = np.flatnonzero(is_vec | is_act)
    elem_max = np.take(ap_elems, _indices(opnd[sel])).max(axis=1, initial=0)
    n_in = np.take(_ENERGY_INPUT_COUNT, ins["op"][sel])
    vec = np.zeros(n, dtype=np.int64)
    act = np.zeros(n, dtype=np.int64)
    vec[sel] = np.where(is_vec[sel], elem_max * n_in, 0)
    act[sel] = np.where(is_act[sel], elem_max, 0)
    return OperandCounts(sbuf, psum, narrow_unsigned(vec), narrow_unsigned(act))


def compute_costs(program: Program, chip: ChipConfig) -> Costs:
    """All static costs of ``program`` on ``chip`` (see the module docstring)."""
    ins = program.instr
    n = len(ins)
    info = ap_info(program)
    op = ins["op"].copy()  # uint8 (one pass over the records; compared at memory speed from here on)
    eng = ins["engine"].copy()
    opnd = _indices(ins["opnd"])
    busy = np.zeros(n, dtype=np.int64)
    lat = np.zeros(n, dtype=np.int64)
    macs = np.zeros(n, dtype=np.uint32)  # float64 where a product does not fit (below)
    mac_dtype = np.full(n, -1, dtype=np.int8)
    te = chip.tensor_engine

    # ---- tensor engine: per stream, back-to-back sequences ------------------------------------
    streams = program.streams()
    is_mm = op == int(Op.matmul)
    is_tr = op == int(Op.transpose)
    rate_table = np.array([by_dtype(te.macs_per_pe_per_cycle, name, 0.0) for name in DTYPE_NAMES])
    for (_core, e, _q), idx in streams.items():
        if e != int(Engine.tensor):
            continue
        mm = idx[is_mm[idx] | is_tr[idx]]
        if len(mm) == 0:
            continue
        stat = opnd[mm, 1]  # the stationary operand (a transpose's source)
        mov = opnd[mm, 2]
        k = _take(info.pcount, stat, 1)
        m = _take(info.free, stat, 1)
        nn = np.where(is_mm[mm], _take(info.free, mov, 1), k)  # transpose: identity [P, P] streams through
        dt = _take(info.dtype, stat, int(DType.bf16))
        rate = rate_table[dt]
        if np.any(rate <= 0):
            bad = DTYPE_NAMES[int(dt[rate <= 0][0])]
            from infsim.errors import InfsimError

            raise InfsimError(f"chip '{chip.name}': tensor_engine has no rate for dtype {bad}")
        new = np.ones(len(mm), dtype=bool)
        new[1:] = stat[1:] != stat[:-1]
        b, lt = systolic.matmul_timing(te, k, m, nn, rate, new)
        busy[mm] = cycles_to_ps(b, te.clock_ghz)
        lat[mm] = cycles_to_ps(lt, te.clock_ghz)
        prod = k * m * nn
        if macs.dtype == np.uint32 and prod.max(initial=0) > np.iinfo(np.uint32).max:
            macs = macs.astype(np.float64)
        macs[mm] = prod
        mac_dtype[mm] = dt

    # ---- elementwise engines -------------------------------------------------------------------
    for e, cfg in ((Engine.vector, chip.vector_engine), (Engine.scalar, chip.scalar_engine),
                   (Engine.gpsimd, chip.gpsimd_engine)):
        sel = np.flatnonzero(eng == int(e))
        if len(sel) == 0:
            continue
        cyc = _elementwise(chip, cfg, ins, info, sel)
        busy[sel] = cycles_to_ps(cyc, cfg.clock_ghz)
        lat[sel] = busy[sel]

    # ---- DMA (on the DMA instructions only: SparseColumn over them) ------------------------------------------
    d = np.flatnonzero(op == int(Op.dma_copy))
    dst_d, src_d = opnd[d, 0], opnd[d, 1]
    src_b, dst_b = _take(info.nbytes, src_d, 0), _take(info.nbytes, dst_d, 0)
    chunks = dma_hw.chunk_count(np.maximum(_take(info.elems, src_d, 0), 1), _take(info.run, src_d, 1),
                                _take(info.run, dst_d, 1)).astype(np.int64)
    dma_bytes = np.maximum(src_b, dst_b)
    eng_ps = ns_to_ps(dma_hw.engine_time_ns(chip.dma, dma_bytes, chunks))
    hbm_read = np.where(_take(info.space, src_d, -1) == int(Space.hbm), src_b, 0)
    hbm_write = np.where(_take(info.space, dst_d, -1) == int(Space.hbm), dst_b, 0)
    del src_b, dst_b
    tensor_chip = np.array([t.chip for t in program.tensors.values()] or [0], dtype=np.int64)
    base = program.tensor_base()
    tensor_base = np.array([base[t] for t in program.tensors] or [0], dtype=np.int64)
    aps = program.aps
    ap_tensor = _indices(aps["tensor"].astype(np.int64)) if len(aps) else np.zeros(0, dtype=np.int64)
    ap_off = aps["offset"].astype(np.int64) if len(aps) else np.zeros(0, dtype=np.int64)
    ap_in_tensor = (info.space == int(Space.hbm)) & (ap_tensor >= 0)  # an HBM AP of a declared tensor
    core = ins["core"]
    cpc = program.cores_per_chip

    def core_chip(idx: np.ndarray) -> np.ndarray:
        return core[idx].astype(np.int64) // cpc

    d_chip = core_chip(d)

    def side(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chip, address) of the DMA operands ``a``: its tensor's where it is an HBM tensor, else the issuing
        core's chip and 0."""
        at = np.flatnonzero(_take(ap_in_tensor, a, False))
        chip_of = d_chip.copy()
        addr = np.zeros(len(a), dtype=np.int64)
        tid = ap_tensor[a[at]]
        chip_of[at] = tensor_chip[tid]
        addr[at] = tensor_base[tid] + ap_off[a[at]]
        return chip_of, addr

    rchip, raddr = side(src_d)
    wchip, waddr = side(dst_d)
    del dst_d, src_d
    # SBUF bytes of DMA: the on-chip side(s) (already in sbuf_b/psum_b via operands)

    def dcol(v: np.ndarray, fill_of: Callable[[np.ndarray], np.ndarray] | None = None) -> SparseColumn:
        return SparseColumn(d, np.asarray(v, dtype=np.int64), n, 0, fill_of)

    # ---- collectives (on the collective instructions only) ------------------------------------------------------
    c = np.flatnonzero(IS_COLLECTIVE[op])
    c_op, c_opnd = op[c], opnd[c]
    # send has its only operand (src) in slot 0; recv has dst in slot 0
    cc_src = np.where(c_op == int(Op.recv), 0, _take(info.nbytes, c_opnd[:, 1], 0))
    cc_src = np.where(c_op == int(Op.send), _take(info.nbytes, c_opnd[:, 0], 0), cc_src)
    cc_dst = np.where(c_op != int(Op.send), _take(info.nbytes, c_opnd[:, 0], 0), 0)

    def ccol(v: np.ndarray) -> SparseColumn:
        return SparseColumn(c, np.asarray(v, dtype=np.int64), n)

    return Costs(busy, lat, d, dcol(eng_ps), dcol(chunks), dcol(dma_bytes), dcol(hbm_read), dcol(hbm_write),
                 dcol(rchip, core_chip), dcol(wchip, core_chip), dcol(raddr), dcol(waddr), c, ccol(cc_src),
                 ccol(cc_dst), macs, mac_dtype, program, _ap_info=info)
