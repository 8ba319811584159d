"""The step-level analytical fidelity: closed forms per op of a whole model step, no program and no event
loop (see :mod:`infsim.fidelity`).

For ``infsim run --fidelity analytical`` (and ``compare``, ``what-it-takes``, ``sweep`` at that
fidelity): the op graph of a step (:mod:`infsim.models.graph`) is costed with the *same* hardware models
the cycle engine uses — systolic-array issue intervals (:func:`infsim.hw.systolic.matmul_timing`),
elementwise engine costs (:func:`infsim.hw.elementwise.elementwise_cycles`), DMA descriptor/engine times
(:func:`infsim.hw.dma.engine_time_ns`) and the collective model — applied to the instruction mix the
lowering (:mod:`infsim.models.lower`) generates, counted in closed form instead of emitted:

* a linear layer ``[K, N]`` over ``T`` tokens: the lowering's weight slabs (same plan), one DMA per slab
  on ``dma.engines_per_core`` parallel engines, ``ceil(K/P) * ceil(N/cols)`` matmuls of ``N = T`` columns,
  one PSUM eviction per output tile;
* attention per (sequence, kv head): K and V loads (split over queues, double-buffered), score
  matmuls per 512-key block, a row softmax (five vector/scalar instructions), one transpose + copy + PV
  matmul per 128-key block;
* norms, rotary embedding, residual adds: the vector/scalar/tensor instructions the lowering emits per
  feature tile; tensor-parallel all-reduces from the collective model.

Schedule (:class:`_Pipe`). A weight stream (DMA) feeds a compute chain through the weight ring. Each
layer is: (A) norm + q/k/v projections (+ rotary, K/V cache writes), (B) attention, (C) o_proj,
all-reduce, norm, MLP, all-reduce. A weight segment (A, o_proj, MLP, the LM head) loads as early as the
ring allows (at most the ring's depth ahead of consumption; less across a layer boundary, where the ring
restarts at an aligned slot), computes once its first slab has arrived, and ends at the later of its
compute and its last slab; serial work (norms, collectives, a head's dependency chain) advances only the
compute chain while the DMA keeps prefetching. Attention's K/V loads share the DMA engines with the
weight prefetch pending when it starts; within a (sequence, kv head) the key-block loops pipeline across
engines and heads are double-buffered (load of the next under compute of this one). While weights are
pending, a head's loads also wait on their engines for the weight chunk in service (an engine serves its
queues round robin, ``dma.arbitration_bytes`` per turn): one chunk of load latency per head. HBM bandwidth
is shared by the active cores of a chip. Ranks are symmetric.

HBM time is counted as the cycle engine's memory model charges it (:mod:`infsim.engine.memory`): every
transfer the phase makes occupies its bytes over the model's efficiency for its access pattern
(:meth:`~infsim.engine.memory.MemoryModel.pattern_efficiency`) of the chip's pin bandwidth -- weight slabs
(contiguous), K^T rows of the keys ``max_ctx`` apart, V rows of a block one block apart, the K-cache
column and V rows written per new token -- plus the model's read/write mixing cost with the phase's reads
and writes taken as concurrent.

Left out (the cycle engine has them): semaphore latencies between instructions, the engine turns taken by
the lowering's sync ``nop`` carriers on the K/V queues (each waits a weight chunk too: GPT-2 decode, whose
64-wide heads do little compute per load, comes out ~10-15% fast), PSUM-bank and SBUF-slot
back-pressure beyond the ring depth, the lowering's SBUF aliasing between phases, contention between
collectives. The agreement with the cycle engine is a test (``tests/test_fidelity_step.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from infsim.config.schema import ChipConfig, by_dtype
from infsim.engine.collectives import CollectiveTiming, make_collectives
from infsim.engine.collectives.report import Call, summarize
from infsim.engine.memory import MemoryModel, make_memory
from infsim.hw import dma as dma_hw
from infsim.hw import systolic
from infsim.hw.elementwise import elementwise_cycles
from infsim.isa.dtypes import DType
from infsim.isa.opcodes import Op
from infsim.models import moe as moe_routing
from infsim.models.graph import Graph, Workload, build_graph, split
from infsim.models.lower.plan import dma_queue_split, plan_step
from infsim.models.lower.weights import plan_linear
from infsim.models.spec import ModelSpec


@dataclass
class PhaseCost:
    """Work of one phase in ns per resource (per rank)."""

    dma: float = 0.0  # summed DMA engine time (spread over the queues)
    hbm_bytes: float = 0.0
    hbm_rd: float = 0.0  # bytes of HBM pin time of the reads (bytes over their access pattern's efficiency)
    hbm_wr: float = 0.0  # ... of the writes
    tensor: float = 0.0
    vector: float = 0.0
    scalar: float = 0.0
    gpsimd: float = 0.0
    serial: float = 0.0  # on the compute chain, not overlapped by compute (collectives, dependency chains)
    serial_shared: float = 0.0  # attention: ``serial`` when every K/V load waits a weight chunk (_Pipe.attention)
    dma_lat: float = 0.0  # summed fixed DMA latency of the weight slabs (matters when the ring is shallow)
    first_dma: float = 0.0  # latency before the first compute of the phase can start

    def add(self, o: PhaseCost) -> None:
        for f in ("dma", "hbm_bytes", "hbm_rd", "hbm_wr", "tensor", "vector", "scalar", "gpsimd", "serial",
                  "serial_shared", "dma_lat"):
            setattr(self, f, getattr(self, f) + getattr(o, f))
        self.first_dma = max(self.first_dma, o.first_dma)


@dataclass
class Estimate:
    total_ns: float
    phases: list[tuple[str, float]] = field(default_factory=list)
    graph: Graph | None = None
    hbm_bytes: float = 0.0
    busy_ns: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    collectives: list[dict] = field(default_factory=list)  # distinct collectives and their algorithms


def _memo(fn):  # noqa: ANN001, ANN202
    """Memoize a _Costs method on its arguments (returns a copy: callers accumulate into results)."""
    import copy
    import functools

    @functools.wraps(fn)
    def wrapper(self, *args):  # noqa: ANN001, ANN002, ANN202
        key = (fn.__name__, args)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = fn(self, *args)
        return copy.copy(hit)

    return wrapper


class _Costs:
    def __init__(self, chip: ChipConfig, spec: ModelSpec, wl: Workload, mem: MemoryModel, max_ctx: int):
        self._memo: dict[tuple, object] = {}
        self.chip, self.spec, self.wl, self.mem = chip, spec, wl, mem
        self.max_ctx = max_ctx  # the lowering's K/V cache length (rows of K^T, token slots of V)
        self.P = chip.sbuf.partitions
        self.cols = chip.tensor_engine.cols
        # DMA parallelism: one transfer at a time per engine; K/V loads split over the lowering's
        # "other" queues
        self.q = chip.dma.engines_per_core
        _, self.other_q0, self.kv_queues = dma_queue_split(chip)
        wdt = DType.parse(wl.weight_dtype)
        self.int8 = wdt in (DType.int8, DType.uint8)
        self.wdt = wdt
        self.mdt = DType.bf16 if self.int8 else wdt
        self.kdt = DType.parse(wl.kv_dtype)
        te = chip.tensor_engine
        self.rate = by_dtype(te.macs_per_pe_per_cycle, self.mdt.name)
        self.kv_rate = by_dtype(te.macs_per_pe_per_cycle, self.kdt.name, 1.0)
        self.te_ns = 1.0 / te.clock_ghz
        self.v_ns = 1.0 / chip.vector_engine.clock_ghz
        self.s_ns = 1.0 / chip.scalar_engine.clock_ghz
        self.g_ns = 1.0 / chip.gpsimd_engine.clock_ghz
        self.s_block = min(4 * self.cols, (chip.psum.banks // 2) * self.cols)
        self.weight_chunk_ns = 0.0  # engine time of one arbitration chunk of the weight stream (estimate() sets it)

    # elementary costs -------------------------------------------------------------------------
    def mm_ns(self, k: int, m: int, n: int, count: int, rate: float | None = None, reuse: bool = False) -> float:
        """``count`` back-to-back matmuls of one shape (steady-state issue interval x count)."""
        if count <= 0:
            return 0.0
        r = self.rate if rate is None else rate
        reps = min(count, 8)
        busy, _ = systolic.matmul_timing(self.chip.tensor_engine, np.full(reps, k), np.full(reps, m),
                                         np.full(reps, n), np.full(reps, r), np.full(reps, not reuse))
        steady = float(busy[-1])
        return (float(busy.sum()) + (count - reps) * steady) * self.te_ns

    def vec_ns(self, parts: int, free: int, inputs: int = 1, count: int = 1, engine: str = "vector",
               reduce: bool = False) -> float:
        cfg = {"vector": self.chip.vector_engine, "scalar": self.chip.scalar_engine,
               "gpsimd": self.chip.gpsimd_engine}[engine]
        cyc = float(elementwise_cycles(cfg, parts, free, inputs, 1.0, False, reduce))
        clk = {"vector": self.v_ns, "scalar": self.s_ns, "gpsimd": self.g_ns}[engine]
        return cyc * clk * count

    def dma_ns(self, nbytes: float, chunks: float) -> float:
        """Engine occupancy of one transfer (the HBM and fixed DMA latencies do not occupy it)."""
        return float(dma_hw.engine_time_ns(self.chip.dma, int(nbytes), int(chunks)))

    def hbm(self, c: PhaseCost, nbytes: float, row_bytes: int, stride_bytes: int, write: bool = False) -> None:
        """Count a transfer of ``nbytes`` in rows of ``row_bytes``, ``stride_bytes`` apart, in HBM: its
        bytes and its pin time at the memory model's efficiency for the pattern."""
        pin = nbytes / self.mem.pattern_efficiency(row_bytes, stride_bytes, write)
        c.hbm_bytes += nbytes
        if write:
            c.hbm_wr += pin
        else:
            c.hbm_rd += pin

    @property
    def dma_lat_ns(self) -> float:
        """Latency a transfer adds after its engine time: HBM latency + the fixed DMA latency."""
        return self.chip.hbm.latency_ns + self.chip.dma.fixed_latency_ns

    # ops ----------------------------------------------------------------------------------------
    @_memo
    def linear(self, k: int, n: int, t: int, evict_inputs: int = 1, evict_engine: str = "vector",
               kp: int = 0, m: int = 0) -> PhaseCost:
        """``[k, n]`` over ``t`` tokens in k-tiles of ``kp`` (default ``P``) and output tiles of ``m``
        (default the tensor engine's columns) features, the lowering's tiling."""
        kp, m = kp or self.P, m or self.cols
        plan = plan_linear(k, n, kp, self.s_block // m * m, self.chip.dma.min_efficient_chunk_bytes,
                           self.wdt.itemsize, m)
        c = PhaseCost()
        isz = self.wdt.itemsize
        for sl in plan.slabs:
            b = sl.elems * isz
            c.dma += self.dma_ns(b, sl.rows)
            c.dma_lat += self.dma_lat_ns
            self.hbm(c, b, b, b)  # a slab is one contiguous block in HBM (the lowering's weight layout)
        c.first_dma = self.dma_ns(plan.slabs[0].elems * isz, plan.slabs[0].rows) + self.dma_lat_ns
        kt = math.ceil(k / kp)
        mt = math.ceil(n / m)
        c.tensor += self.mm_ns(min(kp, k), min(m, n), t, kt * mt)
        if self.int8:
            c.vector += sum(self.vec_ns(sl.rows, sl.nk * sl.csz) for sl in plan.slabs)
            evict_engine = "scalar"
        ev = self.vec_ns(min(m, n), t, evict_inputs, mt, evict_engine)
        setattr(c, evict_engine, getattr(c, evict_engine) + ev)
        return c

    @_memo
    def norm(self, t: int) -> PhaseCost:
        s = self.spec
        ht = math.ceil(s.hidden / self.P)
        c = PhaseCost()
        layer = s.norm == "layer"
        P = self.P
        # per tile: squares (ScalarE, fused reduce) feeding the partition-sum matmuls (TensorE), pipelined
        stats = _pipelined((self.vec_ns(P, t, 1, ht, "scalar"), self.mm_ns(P, 1, t, ht * (2 if layer else 1))), ht)
        # the statistic on one partition, broadcast back by a matmul
        mid = (self.vec_ns(1, t, 1, 1, "scalar") + self.mm_ns(1, P, t, 2 if layer else 1)
               + self.vec_ns(1, t, 1, 2 + (2 if layer else 0)) + self.vec_ns(P, t, 1, 2 if layer else 1))
        # per tile: scale (and shift) into the output, VectorE and ScalarE pipelined
        if layer:
            apply = self.vec_ns(P, t, 2, 2 * ht) + self.vec_ns(P, t, 1, ht)  # VectorE only
        else:
            apply = _pipelined((self.vec_ns(P, t, 2, ht), self.vec_ns(P, t, 1, ht, "scalar")), ht)
        c.dma += self.dma_ns(P * ht * 4 * (2 if layer else 1), P)
        c.hbm_bytes += P * ht * 4 * (2 if layer else 1)  # the scale (and shift) vectors, fp32 per partition
        # a norm is a dependency chain (sums -> statistic -> broadcast -> per-tile scale) that the next
        # projection waits for (its first column block needs every normalised tile): serial work
        c.serial += self.dma_lat_ns + stats + mid + apply
        c.tensor = c.vector = c.scalar = 0.0
        return c

    @_memo
    def moe(self, t: int) -> PhaseCost:
        """A mixture-of-experts MLP over a chunk of ``t`` tokens as the lowering runs it
        (:mod:`infsim.models.lower.mlp`): router, routing weights, every expert over its own run of tokens
        (:mod:`infsim.models.moe`), the weighted combine in its down projection's eviction."""
        s, P = self.spec, self.P
        e = s.num_experts
        inter_r = split(s.intermediate, self.wl.tp)
        ht = math.ceil(s.hidden / P)
        c = self.linear(s.hidden, e, t, 1, "scalar")  # (a copy: _memo)
        # chosen-expert mask (iota + two compares + product per slot), the weights' sums (a ones matmul),
        # reciprocal, normalisation
        c.gpsimd += self.vec_ns(e, t, 0, s.experts_per_token, "gpsimd")
        c.vector += self.vec_ns(e, t, 1, 3 * s.experts_per_token) + self.vec_ns(e, t, 2, 1 + 2 * s.experts_per_token)
        c.tensor += self.mm_ns(e, e, t, 1)
        c.scalar += self.vec_ns(e, t, 1, 1, "scalar")
        c.vector += self.vec_ns(P, t, 0, ht)  # accumulator reset
        for r in moe_routing.expert_runs(s, t):
            n = r.c1 - r.c0
            c.add(self.linear(s.hidden, inter_r, n, 1, "scalar"))
            c.add(self.linear(s.hidden, inter_r, n, 2))
            c.add(self.linear(inter_r, s.hidden, n, 2))  # eviction: weight multiply ...
            c.vector += self.vec_ns(P, n, 2, ht)  # ... and the accumulator add
            # the expert's weights broadcast over partitions: one-hot (iota, compare), matmul, copy
            c.gpsimd += self.vec_ns(e, P, 0, 1, "gpsimd")
            c.vector += self.vec_ns(e, P) + self.vec_ns(P, n)
            c.tensor += self.mm_ns(e, P, n, 1)
        c.vector += self.vec_ns(P, t, 2, ht)  # into the residual
        return c

    @_memo
    def kv_write(self, n_tokens: int, kvh_r: int, decode: bool) -> PhaseCost:
        """Writing this chunk's K (DMA) and V (transposed to rows on the tensor engine, copied, DMA) of one
        sequence to the HBM cache."""
        hd, P, kb = self.spec.head_dim, self.P, self.kdt.itemsize
        c = PhaseCost()
        c.dma += kvh_r * self.dma_ns(hd * n_tokens * kb, hd)
        # K^T [hd, max_ctx]: hd rows of the chunk's tokens; V partition-major: a row of hd per token, rows of
        # one block max_ctx / P * hd apart
        self.hbm(c, kvh_r * hd * n_tokens * kb, n_tokens * kb, self.max_ctx * kb, True)
        v_stride = self.max_ctx // P * hd * kb
        if decode:
            c.dma += kvh_r * self.dma_ns(hd * kb, 1)  # the staged V row: one contiguous descriptor
            self.hbm(c, kvh_r * hd * kb, hd * kb, hd * kb, True)
        else:
            blocks = math.ceil(n_tokens / P)
            n = min(P, n_tokens)
            c.tensor += kvh_r * self.mm_ns(min(hd, P), n, P, blocks * math.ceil(hd / P), self.kv_rate)
            c.vector += kvh_r * self.vec_ns(n, hd, 1, blocks)
            c.dma += kvh_r * blocks * self.dma_ns(n * hd * kb, n)
            self.hbm(c, kvh_r * hd * n_tokens * kb, hd * kb, v_stride, True)
        return c

    @_memo
    def attention(self, kv_len: int, n_q: int, heads_r: int, kvh_r: int, decode: bool,
                  window: int = 0) -> PhaseCost:
        """One sequence: all kv heads of this rank (``window``: the layer's sliding window, 0 for none;
        decode passes the keys it reads). ``serial`` holds the heads' pipelined time: with K/V
        double-buffered, head ``g+1``'s load may start when head ``g-1``'s compute is done, so the period
        is ``max(C, (C + L) / 2)`` for compute ``C`` and load latency ``L`` (fixed latency + the largest
        part's transfer; parts run on parallel queues)."""
        s, hd, P = self.spec, self.spec.head_dim, self.P
        c = PhaseCost()
        group = math.ceil(heads_r / kvh_r)
        kb = self.kdt.itemsize
        hd_t = math.ceil(hd / P)  # partition tiles of a head (head_dim 256: two)
        hdp = min(hd, P)
        stack = decode and hd % P == 0
        # (query rows, keys) per query block; causal prefill: block t sees the keys up to its last query
        causal_prefill = s.causal and not decode
        blocks = [(group, kv_len)] if stack else [
            (min(P, n_q - t), min(kv_len, kv_len - n_q + t + min(P, n_q - t)) if causal_prefill else kv_len)
            for t in range(0, n_q, P)] * group
        q0 = kv_len - n_q  # position of the first query (prefill)
        band = bool(window) and causal_prefill and kv_len > window  # some queries see a window's keys only
        lo = max(0, q0 - window + 1) if band else 0  # first key loaded
        if band:  # a query block's keys start a whole number of V blocks after lo (the band mask does the rest)
            blocks = [(rows, q0 + t + rows - (lo + (max(0, q0 + t - window + 1) - lo) // P * P))
                      for t in range(0, n_q, P) for rows in [min(P, n_q - t)]] * group
        per_head = PhaseCost()
        load_lat = 0.0
        if s.kind == "decoder":
            n_hbm = (kv_len - 1 if decode else kv_len) - lo
            parts = hd_t * max(1, min(hdp // 16, self.kv_queues // 2))
            k_bytes = hd * n_hbm * kb
            k_part = self.dma_ns(k_bytes / parts, hd / parts) if n_hbm > 0 else 0.0
            per_head.dma += parts * k_part
            vblk = math.ceil(max(n_hbm, 1) / P)
            vrows = min(P, max(n_hbm, 1))
            vparts = max(1, min(vrows // 16, self.kv_queues // 2))
            v_part = self.dma_ns(vrows * vblk * hd * kb / vparts, vrows / vparts)
            per_head.dma += vparts * v_part
            # K^T rows of the keys, max_ctx apart; V: per partition the blocks' rows, one block apart
            if n_hbm > 0:
                self.hbm(per_head, k_bytes, n_hbm * kb, self.max_ctx * kb)
            self.hbm(per_head, vrows * vblk * hd * kb, vblk * hd * kb, self.max_ctx // P * hd * kb)
            # K and V parts share the queues: the head's data is complete after ~ (parts of K + V) / queues
            waves = math.ceil((parts + vparts) / self.q)
            load_lat = self.dma_lat_ns + waves * max(k_part, v_part)
        psum_bank_fp32 = self.chip.psum.bytes_per_partition // self.chip.psum.banks // 4
        blk = min(self.chip.tensor_engine.moving_free_max, psum_bank_fp32)
        chain = 0.0  # one head's dependency chain (see below)
        cap = s.attn_softcap
        for rows, nk in blocks:
            nblocks = math.ceil(nk / blk)
            kb_n = math.ceil(nk / P)
            # scores: one matmul (per head tile) + one eviction (causal prefill: + iota, mask, add) per key
            # block; soft-capping evicts through tanh on the scalar engine
            s_t = self.mm_ns(hdp, rows, min(blk, nk), nblocks * hd_t, self.kv_rate)
            s_v = self.vec_ns(rows, min(blk, nk), 1, nblocks)
            s_g = 0.0
            s_s = 0.0
            masked = 0
            if causal_prefill:  # only the key blocks that reach past the block's first query are masked
                masked = nblocks - (nk - rows) // blk
                if band:  # and those that start a window's length before the block's last query
                    masked = nblocks
                s_g = self.vec_ns(rows, min(blk, nk), 0, masked, "gpsimd")
                s_v += self.vec_ns(rows, min(blk, nk), 1, masked) + self.vec_ns(rows, min(blk, nk), 2, masked)
                s_v -= self.vec_ns(rows, min(blk, nk), 1, masked)  # their eviction is the masked add
            if cap:
                s_s = self.vec_ns(rows, min(blk, nk), 1, nblocks, "scalar")
                s_v -= self.vec_ns(rows, min(blk, nk), 1, nblocks - masked)  # no copies left
            # softmax over the whole row: max, bias, exp + sum, reciprocal, scale
            soft_v = self.vec_ns(rows, nk) + self.vec_ns(rows, 1) + self.vec_ns(rows, nk)
            soft_s = self.vec_ns(rows, nk, 1, 1, "scalar", reduce=True) + self.vec_ns(rows, 1, 1, 1, "scalar")
            # per 128-key block: P^T (transpose + copy), P x V (encoder: V^T transposed + copied first)
            p_t = self.mm_ns(rows, min(P, nk), P, kb_n, self.kv_rate) + self.mm_ns(min(P, nk), hdp, rows,
                                                                                   kb_n * hd_t, self.kv_rate)
            p_v = self.vec_ns(min(P, nk), rows, 1, kb_n)
            if s.kind == "encoder":
                p_t += self.mm_ns(hd, min(P, nk), P, kb_n, self.kv_rate)
                p_v += self.vec_ns(min(P, nk), hd, 1, kb_n)
            final_v = self.vec_ns(hdp, rows, 1, hd_t)
            per_head.tensor += s_t + p_t
            per_head.vector += s_v + soft_v + p_v + final_v
            per_head.scalar += soft_s + s_s
            per_head.gpsimd += s_g
            # the key blocks of the score and of the P x V loops pipeline across engines (PSUM bank and
            # P^T buffers rotate): a loop over n blocks takes its slowest engine's total plus one block
            # of the others; the softmax in between needs the whole row
            stages = (s_t, s_v, s_g, s_s) if cap else (s_t, s_v, s_g)
            chain += _pipelined(stages, nblocks) + soft_v + soft_s + _pipelined((p_t, p_v), kb_n) + final_v
        # one head is a dependency chain through the engines (scores -> softmax -> transpose -> PV) using
        # single score/probability buffers, so heads do not overlap each other on the engines
        comp = chain
        c.serial += kvh_r * max(comp, (comp + load_lat) / 2.0)
        # with the weight stream pending on the same engines, each head's loads wait for the weight chunk in
        # service on their engines (round robin, one chunk per turn): one chunk more of load latency
        wait = self.weight_chunk_ns if s.kind == "decoder" else 0.0
        c.serial_shared += kvh_r * max(comp, (comp + load_lat + wait) / 2.0)
        c.first_dma = load_lat
        for f in ("dma", "hbm_bytes", "hbm_rd", "hbm_wr", "tensor", "vector", "scalar", "gpsimd"):
            setattr(c, f, kvh_r * getattr(per_head, f))
        return c


def _pipelined(stage_ns: tuple[float, ...], blocks: int) -> float:
    """A loop of ``blocks`` iterations through engines with ``stage_ns`` total work each: the busiest engine's
    total plus one iteration's share of the others (pipeline fill and drain)."""
    top = max(stage_ns)
    return top + (sum(stage_ns) - top) / max(blocks, 1)


class _Pipe:
    """The step's schedule: a weight stream (DMA) feeding a compute chain through the weight ring.

    ``dma`` is when the DMA engines finish the transfers issued so far, ``comp`` when the compute chain
    finishes, ``cons`` when the last weight segment was consumed. A weight segment with DMA time ``D``,
    compute ``C`` and first-slab latency ``f`` starts loading at ``max(dma, cons - R)`` (the ring holds
    ``R`` of DMA time: its first slabs reuse slots freed by the previous segment's last ``R``), computes
    from ``max(comp, load start + f)`` and ends at ``max(compute start + C, load end + last latency)``.
    Serial work (norms, collectives) advances only the compute chain; the DMA keeps streaming the next
    segment's weights meanwhile, as far as the ring allows. A new layer or the head starts the ring at
    an aligned position (:meth:`Rank.plan_weights` in the lowering), so only ``R * (D - pad) / D`` of it
    is prefetched before the previous group's last slab is consumed.
    """

    def __init__(self, queues: int, hbm_share_gbps: float, ring_ns: float, ring: int, last_lat_ns: float,
                 shared_queues: bool, kappa: float = 0.0, write_batch: int = 1):
        self.q, self.hbm, self.ring_ns, self.ring, self.last_lat = queues, hbm_share_gbps, ring_ns, ring, last_lat_ns
        self.kappa, self.write_batch = kappa, write_batch
        self.shared = shared_queues
        self.dma = self.comp = self.cons = self.prev_d = 0.0
        self.reach = ring_ns  # prefetch reach into the next weight segment

    def pin(self, c: PhaseCost) -> float:
        """Bytes of HBM pin time of a phase: reads and writes over their patterns' efficiencies, plus the
        memory model's read/write mixing cost with the phase's reads and writes concurrent."""
        return c.hbm_rd + c.hbm_wr + self.kappa * min(c.hbm_wr / self.write_batch, c.hbm_rd)

    def dma_time(self, c: PhaseCost) -> float:
        streams = self.q if self.ring >= self.q else self.ring
        engine = (c.dma + (c.dma_lat if self.ring < self.q else 0.0)) / streams
        return max(engine, self.pin(c) / self.hbm)

    def weights(self, c: PhaseCost) -> None:
        d = self.dma_time(c)
        if d <= 0:
            self.comp += max(c.tensor, c.vector, c.scalar, c.gpsimd) + c.serial
            return
        load = max(self.dma, self.cons - self.reach)
        start = max(self.comp + c.serial, load + c.first_dma)  # serial: the norm before the projections
        # before its compute starts, the ring holds at most `reach` of this segment, less what the previous
        # segment still held until it was consumed; the rest streams as the segment is consumed
        pre = min(d, max(0.0, start - load),
                  max(0.0, self.reach - self.prev_d) + max(0.0, start - self.cons), self.reach)
        self.dma = load + d if pre >= d else max(load + d, start + d - pre)
        self.comp = max(start + max(c.tensor, c.vector, c.scalar, c.gpsimd), self.dma + self.last_lat)
        self.cons = self.comp
        self.prev_d = d
        self.reach = self.ring_ns

    def serial(self, t_ns: float) -> None:
        self.comp += t_ns

    def load_input(self, engine_ns: float) -> None:
        """Activations read at the start of a chunk: they take engine time from the weight stream, and
        the first norm needs all of them."""
        self.dma = max(self.dma, self.comp) + engine_ns / self.q
        self.comp = max(self.comp, self.dma + self.last_lat)

    def store_output(self, engine_ns: float) -> None:
        """Activations written at the end of the step (encoder hidden states)."""
        self.dma = max(self.dma, self.comp) + engine_ns / self.q
        self.comp = self.dma + self.last_lat

    def group_boundary(self, pad_fraction: float) -> None:
        if self.prev_d > 0:  # a previous group holds the ring (at the start of the step it is empty)
            self.reach = self.ring_ns * (1.0 - pad_fraction)

    def attention(self, c: PhaseCost, next_dma_ns: float) -> None:
        """K/V loads share the DMA engines with the weight transfers pending when attention starts: what
        is still in flight plus the ring's refill with the next weights (queued as the projections
        consumed their last slab). From their own queues they get every other chunk (round-robin), so
        the first load's transfer takes up to twice as long and the loads' total ``d`` is stretched by
        up to ``d``; on shared queues they wait behind it. The heads' chain (``serial``) runs after the
        first load."""
        d = max(c.dma / self.q, self.pin(c) / self.hbm)
        t0 = self.comp
        pending = max(0.0, self.dma - t0) + min(self.reach, next_dma_ns)
        if self.shared:  # the K/V loads wait in line behind the pending prefetch
            self.comp = t0 + pending + max(c.first_dma + c.serial, d)
        else:
            first = c.first_dma + min(max(0.0, c.first_dma - self.last_lat), pending)
            # the heads whose loads are issued while weights are pending wait a weight chunk each
            share = min(1.0, pending / c.serial_shared) if c.serial_shared > 0 else 0.0
            serial = c.serial + share * (c.serial_shared - c.serial)
            self.comp = max(t0 + first + serial, t0 + d + min(d, pending))
        self.dma = max(self.dma, t0) + d


def estimate(spec: ModelSpec, wl: Workload, chip: ChipConfig, collectives: CollectiveTiming | None = None,
             memory: str | MemoryModel | None = None) -> Estimate:
    """Closed-form latency of one step (see the module docstring). ``collectives`` and ``memory`` (a model or
    a registered name) default to the chip's models; the memory model gives the HBM streaming bandwidth."""
    g = build_graph(spec, wl)
    coll = collectives if collectives is not None else make_collectives(chip)
    mem = memory if memory is not None and not isinstance(memory, str) else make_memory(chip, memory)
    P = chip.sbuf.partitions
    tp = wl.tp
    hd = spec.head_dim
    heads_r, kvh_r, inter_r = split(spec.heads, tp), split(spec.kv_heads, tp), split(spec.intermediate, tp)
    h = spec.hidden
    seq = (spec.image_size // spec.patch_size) ** 2 + 1 if spec.family == "vit" else wl.seq
    tokens = wl.batch * seq
    notes: list[str] = []
    plan = plan_step(spec, wl, chip)  # the lowering's own token chunk, weight ring and slab layout
    cc = _Costs(chip, spec, wl, mem, plan.max_ctx)
    tc, ring_depth = plan.token_chunk, plan.ring_depth
    if tc is None or ring_depth is None:  # e.g. a context too long for the lowering's SBUF plan: estimate anyway
        tc = min(chip.tensor_engine.moving_free_max, chip.psum.bytes_per_partition // chip.psum.banks // 4, tokens)
        ring_depth = 16
        notes.append(f"the lowering cannot plan this step ({plan.error}); nominal chunk {tc} and ring depth 16 "
                     "assumed")
    chunks = math.ceil(tokens / tc)
    active = min(tp, chip.cores_per_chip)
    hbm_share = mem.peak_bpps * 1e3 / active  # the pin bandwidth, charged per transfer as the cycle engine's model
    q = chip.dma.engines_per_core
    # prefetch depth in time: the weight ring holds ring_depth slabs of the layers (the largest one's size)
    slab_bytes = P * plan.max_slab_free * cc.wdt.itemsize
    slab = PhaseCost()
    cc.hbm(slab, slab_bytes, slab_bytes, slab_bytes)
    ring_ns = ring_depth * max(cc.dma_ns(slab_bytes, P) / q, slab.hbm_rd / hbm_share)
    # a DMA engine serves its queues round robin, dma.arbitration_bytes per turn: a K/V load behind the
    # weight stream waits for one chunk of a slab
    chunk = min(chip.dma.arbitration_bytes or slab_bytes, slab_bytes)
    cc.weight_chunk_ns = cc.dma_ns(slab_bytes, P) * chunk / max(slab_bytes, 1)
    members = tuple(range(tp))
    ab = DType.parse(wl.act_dtype).itemsize
    calls: list[Call] = []

    def allreduce(t: int) -> float:
        if tp == 1:
            return 0.0
        calls.append(("all_reduce", members, h * t * ab, h * t * ab))
        ps, _ = coll.duration_ps(Op.all_reduce, members, h * t * ab, h * t * ab, chip.cores_per_chip)
        return ps / 1000.0

    pad = (-plan.layer_slabs) % ring_depth  # slots skipped to align the next group (layer, head) to the ring
    boundary = min(1.0, (pad + 1) / ring_depth)
    # without queues of their own the K/V loads queue behind the weight prefetch
    pipe = _Pipe(q, hbm_share, ring_ns, ring_depth, cc.dma_lat_ns, shared_queues=cc.other_q0 == 0,
                 kappa=mem.kappa, write_batch=mem.write_batch)
    phases: list[tuple[str, float]] = []
    hbm_total = 0.0
    decode = wl.phase == "decode"
    no_norm = spec.family in ("bert", "roberta")  # post-norm: no norm before the q/k/v projections

    def weights(c: PhaseCost) -> None:
        nonlocal hbm_total
        pipe.weights(c)
        hbm_total += c.hbm_bytes

    ht = math.ceil(h / P)
    if spec.family == "vit":  # the images (bytes only: their loads are not timed)
        hbm_total += wl.batch * spec.num_channels * spec.image_size**2 * ab // tp
    packed = P % hd == 0  # heads packed P // head_dim to a partition tile, else in tiles of their own

    def head_tiles(n: int) -> int:
        return math.ceil(n * hd / P) if packed else n * math.ceil(hd / P)

    head_rows = 0 if packed else min(hd, P)  # q/k/v output tiles (o_proj input tiles) of one head
    for ci in range(chunks):
        t = min(tc, tokens - ci * tc)
        if spec.family != "vit":  # the chunk's hidden states, one [P, t] tile per descriptor row
            pipe.load_input(ht * cc.dma_ns(P * t * ab, P))
            hbm_total += ht * P * t * ab
        if spec.family == "vit":
            weights(cc.linear(spec.num_channels * spec.patch_size**2, h, t, 2))
        if spec.embed_scale != 1.0:  # Gemma: the embeddings scaled, one vector op per feature tile
            pipe.serial(cc.vec_ns(P, t, 1, ht))
        for L in range(spec.layers):
            pipe.group_boundary(boundary)
            window = spec.window(L) or 0
            # (A) norm, q/k/v projections, rotary, K/V cache writes
            a = cc.norm(t) if not no_norm else PhaseCost()
            for n in (heads_r * hd, kvh_r * hd, kvh_r * hd):
                a.add(cc.linear(h, n, t, 1, "scalar" if spec.qkv_bias or cc.int8 else "vector", 0, head_rows))
            if spec.rotary:
                qt, kt = head_tiles(heads_r), head_tiles(kvh_r)
                a.tensor += cc.mm_ns(P, P, t, qt + kt)
                a.vector += cc.vec_ns(P, t, 2, 3 * (qt + kt))
            if spec.kind == "decoder":
                if decode:  # the chunk's t sequences (each chunk counted every sequence of the batch before)
                    for _ in range(t):
                        a.add(cc.kv_write(1, kvh_r, True))
                    # new V rows staged by one transpose + copy per kv head (and head tile) for up to P
                    # sequences
                    for s0 in range(0, t, P):
                        a.tensor += kvh_r * cc.mm_ns(min(hd, P), min(t - s0, P), P, math.ceil(hd / P), cc.kv_rate)
                        a.vector += kvh_r * cc.vec_ns(min(t - s0, P), hd)
                else:
                    for seq_start in range(ci * tc, ci * tc + t, seq):
                        a.add(cc.kv_write(min(seq, ci * tc + t - seq_start), kvh_r, False))
            weights(a)
            # (B) attention, per sequence in the chunk
            b = PhaseCost()
            if decode:
                kv_len = wl.context + 1
                for _ in range(t):
                    b.add(cc.attention(min(kv_len, window or kv_len), 1, heads_r, kvh_r, True))
            else:
                for seq_start in range(ci * tc, ci * tc + t, seq):
                    n_q = min(seq, ci * tc + t - seq_start)
                    kv_len = (seq_start % seq) + n_q if spec.causal else seq
                    b.add(cc.attention(kv_len, n_q, heads_r, kvh_r, False, window))
            # (C) o_proj, all-reduce, norm, MLP, all-reduce
            o = cc.linear(heads_r * hd, h, t, 2, "vector", head_rows)
            m = cc.norm(t)  # pre-norm: before the MLP; post-norm (BERT): after attention, the same place
            if spec.is_moe:
                m.add(cc.moe(t))
            elif spec.gated_mlp:
                m.add(cc.linear(h, inter_r, t, 1, "scalar"))
                m.add(cc.linear(h, inter_r, t, 2))
                m.add(cc.linear(inter_r, h, t, 2))
            else:
                m.add(cc.linear(h, inter_r, t, 1, "scalar"))
                m.add(cc.linear(inter_r, h, t, 2))
            pipe.attention(b, pipe.dma_time(o) + pipe.dma_time(m))
            hbm_total += b.hbm_bytes
            weights(o)
            pipe.serial(allreduce(t))
            if spec.post_norms:  # Gemma-2: the attention output normalised before the residual add
                pn = cc.norm(t)
                pipe.serial(pn.serial + cc.vec_ns(P, t, 2, ht))
                hbm_total += pn.hbm_bytes
            weights(m)
            pipe.serial(allreduce(t))
            if spec.post_norms:
                pn = cc.norm(t)
                pipe.serial(pn.serial + cc.vec_ns(P, t, 2, ht))
                hbm_total += pn.hbm_bytes
            if no_norm:  # post-norm: the second LayerNorm closes the layer
                closing = cc.norm(t)
                pipe.serial(closing.serial)
                hbm_total += closing.hbm_bytes
        if spec.kind == "encoder" and spec.family != "vit":  # hidden states out
            pipe.store_output(ht * cc.dma_ns(P * t * ab, P))
            hbm_total += ht * P * t * ab
        phases.append((f"chunk{ci}", pipe.comp))
    if spec.kind == "decoder" or spec.family == "vit":
        pipe.group_boundary(boundary)
        # final soft-capping: the logits evicted through tanh on the scalar engine
        evict = "scalar" if spec.final_softcap else "vector"
        first = min(wl.batch, tc)
        hc = cc.norm(first)
        hc.add(cc.linear(h, split(spec.vocab, tp), first, 1, evict))
        for b0 in range(tc, wl.batch, tc):  # more sequences than one token chunk: the head runs per chunk
            t = min(tc, wl.batch - b0)
            hc.add(cc.norm(t))
            hc.add(cc.linear(h, split(spec.vocab, tp), t, 1, evict))
        weights(hc)
        hbm_total += wl.batch * split(spec.vocab, tp) * ab  # the logits written (bytes only: not timed)
    total = pipe.comp
    return Estimate(total, phases, g, hbm_total * tp, notes=notes,
                    collectives=summarize(coll, calls, chip.cores_per_chip, chip.lnc, per_member=False))


def estimate_energy(est: Estimate, spec: ModelSpec, wl: Workload, chip: ChipConfig, chips: int) -> dict[str, float]:
    """Joules per component from closed-form event counts (the same unit energies as the cycle engine's
    :mod:`infsim.hw.energy`): MACs of the graph's matmuls; HBM bits moved; SBUF bytes = weights written
    by DMA and read by the tensor engine plus the moving operands; PSUM = one fp32 read-modify-write per
    output element and K tile; vector/scalar element-ops of the graph; NeuronLink bits of the ring
    all-reduces; static power x time x chips."""
    e = chip.energy
    g = est.graph
    assert g is not None
    mdt = "bf16" if wl.weight_dtype in ("int8", "uint8") else wl.weight_dtype
    macs = g.flops() / 2
    isz = DType.parse(mdt).itemsize
    P = chip.sbuf.partitions
    moving = sum(o.m * o.k * o.count for o in g.ops if o.kind in ("matmul", "attention")) * g.ranks
    psum = sum(o.m * o.n * o.count * math.ceil(o.k / P) for o in g.ops if o.kind in ("matmul", "attention")) * g.ranks
    tp = wl.tp
    link = sum(o.collective_bytes for o in g.ops) * (2 * (tp - 1) / tp if tp > 1 else 0.0)
    out = {
        "mac": macs * by_dtype(e.mac_pj, mdt, by_dtype(e.mac_pj, "bf16", 0.0)) * 1e-12,
        "sbuf": (2 * g.weight_bytes() + moving * isz) * e.sbuf_pj_per_byte * 1e-12,
        "psum": psum * 4 * 2 * e.psum_pj_per_byte * 1e-12,
        "hbm": est.hbm_bytes * 8 * e.hbm_pj_per_bit * 1e-12,
        "link": link * 8 * e.link_pj_per_bit * 1e-12,
        "vector": g.elem_ops() * 0.5 * e.vector_op_pj * 1e-12,
        "scalar": g.elem_ops() * 0.5 * e.scalar_op_pj * 1e-12,
        "static": e.static_w * est.total_ns * 1e-9 * chips,
    }
    return out
