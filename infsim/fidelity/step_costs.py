"""Per-op closed forms of the step-level analytical fidelity (:mod:`infsim.fidelity.step`): what one linear
layer, norm, mixture-of-experts block, K/V cache write or attention block costs on each resource of a core
(:class:`PhaseCost`), computed by :class:`OpCosts` with the same hardware models the cycle engine uses
(systolic-array issue intervals, elementwise engine costs, DMA engine times, the memory model's pattern
efficiencies) applied to the instruction mix the lowering generates, counted instead of emitted.

How the phases overlap (the weight ring, the compute chain, collectives) is :mod:`infsim.fidelity.step`'s
schedule; what it leaves out is listed there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from infsim.config.schema import ChipConfig, by_dtype
from infsim.engine.memory import MemoryModel
from infsim.hw import dma as dma_hw
from infsim.hw import systolic
from infsim.hw.elementwise import elementwise_cycles
from infsim.isa.dtypes import DType
from infsim.isa.opcodes import MAX_WAITS
from infsim.models import moe as moe_routing
from infsim.models.graph import Workload, split
from infsim.models.lower.plan import dma_queue_split
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
    slab_use: float = 0.0  # summed time the weight slabs are read in their ring slots (matmuls; int8: dequant)
    first_dma: float = 0.0  # latency before the first compute of the phase can start
    # engine work inside ``serial`` (a norm's chain), for the breakdown only: it does not time anything
    chain_tensor: float = 0.0
    chain_vector: float = 0.0
    chain_scalar: float = 0.0

    def add(self, o: PhaseCost) -> None:
        for f in ("dma", "hbm_bytes", "hbm_rd", "hbm_wr", "tensor", "vector", "scalar", "gpsimd", "serial",
                  "serial_shared", "dma_lat", "slab_use", "chain_tensor", "chain_vector", "chain_scalar"):
            setattr(self, f, getattr(self, f) + getattr(o, f))
        self.first_dma = max(self.first_dma, o.first_dma)


def _memo(fn):  # noqa: ANN001, ANN202
    """Memoize a OpCosts method on its arguments (returns a copy: callers accumulate into results)."""
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


class OpCosts:
    def __init__(self, chip: ChipConfig, spec: ModelSpec, wl: Workload, mem: MemoryModel, max_ctx: int,
                 kv_block: int = 0):
        self._memo: dict[tuple, object] = {}
        self.kv_block = kv_block  # the lowering's keys per attention key block (0: untiled)
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
        c.slab_use = c.tensor  # the matmuls read the slabs in their ring slots
        if self.int8:  # ... unless a vector copy dequantises each slab out of its slot first
            c.slab_use = sum(self.vec_ns(sl.rows, sl.nk * sl.csz) for sl in plan.slabs)
            c.vector += c.slab_use
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
        n = 2 if layer else 1
        c.chain_tensor = self.mm_ns(P, 1, t, ht * n) + self.mm_ns(1, P, t, n)
        c.chain_scalar = self.vec_ns(P, t, 1, ht, "scalar") + self.vec_ns(1, t, 1, 1, "scalar")
        c.chain_vector = self.vec_ns(1, t, 1, 2 + 2 * (n - 1)) + self.vec_ns(P, t, 1, n)
        if layer:
            c.chain_vector += self.vec_ns(P, t, 2, 2 * ht) + self.vec_ns(P, t, 1, ht)
        else:
            c.chain_vector += self.vec_ns(P, t, 2, ht)
            c.chain_scalar += self.vec_ns(P, t, 1, ht, "scalar")
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

    def score_blocks(self, kv_len: int, n_q: int, heads_r: int, kvh_r: int, decode: bool,
                     window: int = 0) -> list[tuple[int, int]]:
        """(query rows, keys scored) of each query block of one kv head of one sequence (arguments as
        :meth:`attention`'s), as the lowering's ``attend`` runs them: decode with ``head_dim`` a multiple of
        the partitions stacks the group's heads as rows, else one head at a time in blocks of ``P`` queries;
        causal prefill scores the keys up to the block's last query, and with a sliding window from the
        first query's window start rounded down to a whole V block after the sequence's first loaded key
        (the band mask removes the rest)."""
        P = self.P
        group = math.ceil(heads_r / kvh_r)
        if decode and self.spec.head_dim % P == 0:
            return [(group, kv_len)]
        causal_prefill = self.spec.causal and not decode
        q0 = kv_len - n_q  # position of the first query (prefill)
        band = bool(window) and causal_prefill and kv_len > window  # some queries see a window's keys only
        lo = max(0, q0 - window + 1) if band else 0  # first key loaded
        blocks = []
        for t in range(0, n_q, P):
            rows = min(P, n_q - t)
            khi = q0 + t + rows if causal_prefill else kv_len
            klo = lo + (max(0, q0 + t - window + 1) - lo) // P * P if band else 0
            blocks.append((rows, khi - klo))
        return blocks * group

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
        hd_t = math.ceil(hd / P)  # partition tiles of a head (head_dim 256: two)
        hdp = min(hd, P)
        causal_prefill = s.causal and not decode
        blocks = self.score_blocks(kv_len, n_q, heads_r, kvh_r, decode, window)
        band = bool(window) and causal_prefill and kv_len > window  # some queries see a window's keys only
        lo = max(0, kv_len - n_q - window + 1) if band else 0  # first key loaded
        if decode and self.kv_block and kv_len > self.kv_block:
            return self._attention_tiled(kv_len, heads_r, kvh_r)
        per_head = PhaseCost()
        load_lat, turns = 0.0, 1
        if s.kind == "decoder":
            load_lat, turns = self._kv_load(per_head, (kv_len - 1 if decode else kv_len) - lo, lo, decode)
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
        # with the weight stream pending on the same engines, every instruction of a K/V queue (the loads and
        # the sync nops carrying their waits) waits for the weight chunk in service on its engine (round
        # robin, one chunk per turn): `turns` chunks more of load latency on the busiest K/V queue
        wait = turns * self.weight_chunk_ns if s.kind == "decoder" else 0.0
        c.serial_shared += kvh_r * max(comp, (comp + load_lat + wait) / 2.0)
        c.first_dma = load_lat
        for f in ("dma", "hbm_bytes", "hbm_rd", "hbm_wr", "tensor", "vector", "scalar", "gpsimd"):
            setattr(c, f, kvh_r * getattr(per_head, f))
        return c

    def _kv_load(self, c: PhaseCost, n_hbm: int, lo: int, decode: bool) -> tuple[float, int]:
        """Count into ``c`` the loads of ``n_hbm`` keys' K^T and V (from key ``lo``; ``decode``: plus the new
        token's row) of one kv head from the cache, split over partition groups on the K/V queues; returns
        the latency until the last part is in and the turns of the busiest K/V queue (:meth:`kv_queue_turns`)."""
        hd, P, kb = self.spec.head_dim, self.P, self.kdt.itemsize
        hd_t, hdp = math.ceil(hd / P), min(hd, P)
        parts = hd_t * max(1, min(hdp // 16, self.kv_queues // 2))
        k_bytes = hd * n_hbm * kb
        k_part = self.dma_ns(k_bytes / parts, hd / parts) if n_hbm > 0 else 0.0
        c.dma += parts * k_part
        vblk = math.ceil(max(n_hbm, 1) / P)
        vrows = min(P, max(n_hbm, 1))
        vparts = max(1, min(vrows // 16, self.kv_queues // 2))
        v_part = self.dma_ns(vrows * vblk * hd * kb / vparts, vrows / vparts)
        c.dma += vparts * v_part
        turns = self.kv_queue_turns(parts if n_hbm > 0 else 0, self.v_dmas(n_hbm, lo, decode))
        # K^T rows of the keys, max_ctx apart; V: per partition the blocks' rows, one block apart
        if n_hbm > 0:
            self.hbm(c, k_bytes, n_hbm * kb, self.max_ctx * kb)
        self.hbm(c, vrows * vblk * hd * kb, vblk * hd * kb, self.max_ctx // P * hd * kb)
        # K and V parts share the queues: the head's data is complete after ~ (parts of K + V) / queues
        waves = math.ceil((parts + vparts) / self.q)
        return self.dma_lat_ns + waves * max(k_part, v_part), turns

    def v_dmas(self, n_keys: int, lo: int, decode: bool) -> int:
        """V DMAs of one (sequence, kv head) as the lowering issues them
        (:func:`infsim.models.lower.attention._load_kv`): the cache rows of ``n_keys`` keys from ``lo`` in whole
        and partial blocks, each call split over partition groups on several queues (``split_load``), plus the
        new token's row in decode."""
        P, q = self.P, self.kv_queues

        def calls(p0: int, p1: int, nb: int) -> int:
            if p1 <= p0 or nb <= 0:
                return 0
            rows = p1 - p0
            per = math.ceil(rows / max(1, min(rows // 16, q // 2)))
            return math.ceil(rows / per)

        full, rem = divmod(max(n_keys, 0), P)
        if decode or lo:
            split = P - lo % P
            n = calls(0, split, full) + calls(split, P, full) + calls(0, min(rem, split), 1) + calls(split, rem, 1)
        else:
            n = calls(0, min(P, n_keys), math.ceil(n_keys / P))
        return n + (1 if decode else 0)

    def kv_queue_turns(self, k_dmas: int, v_dmas: int) -> int:
        """Instructions one K/V queue issues for a head's loads: its share of the K and V DMAs (round robin
        over the queues) plus the ``nop`` carriers of the V DMAs' waits. A V DMA opens a write epoch of
        its double-buffered V tile (:meth:`infsim.models.lower.emit.Emitter.new_write_epoch`), so it waits
        for the previous contents' writers -- the V DMAs of the head before last, one per other queue
        they used -- and its reader, the tensor engine: ``min(v_dmas, queues)`` waits, ``MAX_WAITS`` per
        instruction, the rest on ``nop`` carriers before it on the same queue (:mod:`infsim.models.lower.emit`).
        The K DMAs' waits are implied by earlier ones (observed: none carries a nop)."""
        q = max(self.kv_queues, 1)
        nops = max(0, math.ceil(min(v_dmas, q) / MAX_WAITS) - 1)
        return nops + math.ceil((k_dmas + v_dmas) / q)


    def _attention_tiled(self, kv_len: int, heads_r: int, kvh_r: int) -> PhaseCost:
        """A decode step's attention over key blocks of ``kv_block`` keys (the lowering's
        :func:`~infsim.models.lower.attention._attend_tiled`), per kv head and row group (the GQA group
        stacked when ``head_dim`` is a multiple of the partitions, else one head per row, K/V reloaded
        for each): per key block its K/V load, one score matmul and eviction per PSUM bank of keys, the
        block's max (+ the running max), exp with fused sum, the rescale of the running sum (exp + two
        vector ops) and of the ``[rows, hd]`` output (two vector ops; the first block a copy), P^T
        transposes + copies and P x V matmuls per 128 keys; at the end a reciprocal, the normalisation
        and a transpose + copy per head tile. Key blocks are double-buffered: a block's load overlaps
        the previous block's compute (the :meth:`attention` period ``max(C, (C + L) / 2)`` per block)."""
        s, hd, P = self.spec, self.spec.head_dim, self.P
        group = math.ceil(heads_r / kvh_r)
        hd_t, hdp = math.ceil(hd / P), min(hd, P)
        stack = hd % P == 0
        rows, reps = (group, 1) if stack else (1, group)
        psum_bank_fp32 = self.chip.psum.bytes_per_partition // self.chip.psum.banks // 4
        blk = min(self.chip.tensor_engine.moving_free_max, psum_bank_fp32)
        kbk = self.kv_block
        c = PhaseCost()
        serial = shared = first = 0.0
        for j, a in enumerate(range(0, kv_len, kbk)):
            nk = min(kbk, kv_len - a)
            last = a + nk == kv_len
            blkc = PhaseCost()
            # the new token's K/V come from SBUF (its V row by one more DMA)
            lat, turns = self._kv_load(blkc, nk - 1 if last else nk, a, last)
            nsb = math.ceil(nk / blk)
            kb_n = math.ceil(nk / P)
            s_t = self.mm_ns(hdp, rows, min(blk, nk), nsb * hd_t, self.kv_rate)
            s_v = self.vec_ns(rows, min(blk, nk), 1, nsb)
            s_s = 0.0
            if s.attn_softcap:
                s_s = self.vec_ns(rows, min(blk, nk), 1, nsb, "scalar")
                s_v = 0.0
            soft_v = self.vec_ns(rows, nk) + self.vec_ns(rows, 1) * (2 if j else 1)
            soft_s = self.vec_ns(rows, nk, 1, 1, "scalar", reduce=True)
            if j:  # alpha = exp(scale * (m_old - m)), ssum = ssum * alpha + bsum
                soft_s += self.vec_ns(rows, 1, 1, 1, "scalar")
                soft_v += self.vec_ns(rows, 1, 2, 2)
            p_t = self.mm_ns(rows, min(P, nk), P, kb_n, self.kv_rate) + self.mm_ns(min(P, nk), rows, hd, kb_n,
                                                                                   self.kv_rate)
            p_v = self.vec_ns(min(P, nk), rows, 1, kb_n)
            upd_v = self.vec_ns(rows, hd, 1) + (self.vec_ns(rows, hd, 2) if j else 0.0)
            comp = (_pipelined((s_t, s_v, s_s) if s.attn_softcap else (s_t, s_v), nsb) + soft_v + soft_s
                    + _pipelined((p_t, p_v), kb_n) + upd_v)
            blkc.tensor += s_t + p_t
            blkc.vector += s_v + soft_v + p_v + upd_v
            blkc.scalar += soft_s + s_s
            for f in ("dma", "hbm_bytes", "hbm_rd", "hbm_wr", "tensor", "vector", "scalar"):
                setattr(c, f, getattr(c, f) + reps * getattr(blkc, f))
            serial += reps * max(comp, (comp + lat) / 2.0)
            shared += reps * max(comp, (comp + lat + turns * self.weight_chunk_ns) / 2.0)
            first = first or lat
        # the end: reciprocal, normalisation [rows, hd], a transpose + copy per head tile
        end_t = self.mm_ns(rows, hdp, P, hd_t, self.kv_rate)
        end_v = self.vec_ns(rows, hd) + self.vec_ns(hdp, rows, 1, hd_t)
        end_s = self.vec_ns(rows, 1, 1, 1, "scalar")
        c.tensor += reps * end_t
        c.vector += reps * end_v
        c.scalar += reps * end_s
        tail = reps * (end_t + end_v + end_s)
        c.serial = kvh_r * (serial + tail)
        c.serial_shared = kvh_r * (shared + tail)
        c.first_dma = first
        for f in ("dma", "hbm_bytes", "hbm_rd", "hbm_wr", "tensor", "vector", "scalar"):
            setattr(c, f, kvh_r * getattr(c, f))
        return c


def _pipelined(stage_ns: tuple[float, ...], blocks: int) -> float:
    """A loop of ``blocks`` iterations through engines with ``stage_ns`` total work each: the busiest engine's
    total plus one iteration's share of the others (pipeline fill and drain)."""
    top = max(stage_ns)
    return top + (sum(stage_ns) - top) / max(blocks, 1)
