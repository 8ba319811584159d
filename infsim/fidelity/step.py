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
  matmul per 128-key block; a decode step the lowering tiles over key blocks (the plan's ``kv_block``,
  long contexts) counts per block its load, the running max/sum and the rescaling of the output;
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
queues round robin, ``dma.arbitration_bytes`` per turn): one chunk of load latency per instruction the busiest
K/V queue issues for the head -- its loads and the sync ``nop`` carriers of the V loads' waits
(:meth:`~infsim.fidelity.step_costs.OpCosts.kv_queue_turns`). HBM bandwidth
is shared by the active cores of a chip. Ranks are symmetric.

HBM time is counted as the cycle engine's memory model charges it (:mod:`infsim.engine.memory`): every
transfer the phase makes occupies its bytes over the model's efficiency for its access pattern
(:meth:`~infsim.engine.memory.MemoryModel.pattern_efficiency`) of the chip's pin bandwidth -- weight slabs
(contiguous), K^T rows of the keys ``max_ctx`` apart, V rows of a block one block apart, the K-cache
column and V rows written per new token -- plus the model's read/write mixing cost with the phase's reads
and writes taken as concurrent.

The stream's rate is bounded by the ring's turnover as well as by the engines and HBM (:meth:`_Pipe.dma_time`):
a slot holds its slab for the transfer, the fixed latency and the ops that read it there, so ``ring`` slots pass
at most ``ring`` slabs per such hold time -- the bound where the ring is no deeper than the engines are many
(long-context decode at high TP, where the K/V buffers leave the ring 8 slots of 16 engines; 7-9B prefill at TP
1-2 on inf2). The prefetch reach is the ring's depth at that rate: at least one whole slab transfer plus its
fixed latency, not ``ring / engines`` of one.

Left out (the cycle engine has them): semaphore latencies between instructions, PSUM-bank and SBUF-slot
back-pressure beyond the ring depth (the weight stream stalls at a layer boundary once a layer's weights are
all in the ring), the lowering's SBUF aliasing between phases, contention between collectives, and the early
issue of the first head's K/V loads: they wait only for their double buffer, free once the previous layer's
second-to-last head is scored, so the cycle engine loads them during the previous layer's MLP (taking HBM time
from its weight stream) and the first head's scores start as the projections end, while this schedule charges
the first head's load latency at the start of attention. Per layer, Llama-2 decode at TP 24 and 8,191 cached
tokens: attention 19.5 us longer than the cycle engine's (7B and 13B), the MLP 8.6 us (7B) and 29 us (13B)
shorter -- the 13B MLP's first slabs also wait for the all-reduce and norm before they are consumed and their
slots refilled; the errors largely cancel (per 2-layer step 1.04 / 0.97). The agreement with the cycle engine is a test
(``tests/fidelity/test_fidelity_step.py``, ``test_fidelity_zoo.py``, ``test_fidelity_tp24.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infsim.breakdown import Breakdown, Part, build, latency_only
from infsim.config.schema import ChipConfig, by_dtype
from infsim.engine.collectives import CollectiveTiming, make_collectives
from infsim.engine.collectives.report import Call, summarize
from infsim.engine.memory import MemoryModel, make_memory
from infsim.isa.dtypes import DType
from infsim.isa.opcodes import Op
from infsim.models.graph import Graph, Workload, build_graph, split
from infsim.models.lower.plan import StepPlan, check_feasible, chunk_segments
from infsim.models.spec import ModelSpec

from .step_costs import OpCosts, PhaseCost


@dataclass
class Estimate:
    total_ns: float
    phases: list[tuple[str, float]] = field(default_factory=list)
    graph: Graph | None = None
    hbm_bytes: float = 0.0
    busy_ns: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    collectives: list[dict] = field(default_factory=list)  # distinct collectives and their algorithms
    breakdown: Breakdown | None = None  # time per op category and its limiting resource (infsim.breakdown)
    attention_flops: int = 0  # of the attention matmuls timed (scores and P x V, all ranks), as the lowering's



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

    def __init__(self, queues: int, hbm_share_gbps: float, slab: PhaseCost, ring: int, last_lat_ns: float,
                 shared_queues: bool, kappa: float = 0.0, write_batch: int = 1):
        self.q, self.hbm, self.ring, self.last_lat = queues, hbm_share_gbps, ring, last_lat_ns
        self.kappa, self.write_batch = kappa, write_batch
        self.shared = shared_queues
        self.dma = self.comp = self.cons = self.prev_d = 0.0
        # the ring in stream time: ``ring`` slabs at the stream's rate (:meth:`dma_time`); filling it takes at
        # least one whole slab transfer plus its fixed latency (a ring shallower than the engines: just that)
        self.ring_ns = ring * self.dma_time(slab)
        self.reach = self.ring_ns  # prefetch reach into the next weight segment

    def pin(self, c: PhaseCost) -> float:
        """Bytes of HBM pin time of a phase: reads and writes over their patterns' efficiencies, plus the
        memory model's read/write mixing cost with the phase's reads and writes concurrent."""
        return c.hbm_rd + c.hbm_wr + self.kappa * min(c.hbm_wr / self.write_batch, c.hbm_rd)

    def dma_time(self, c: PhaseCost) -> float:
        """Stream time of a weight segment: the longest of its slabs' engine time over the DMA engines, its HBM
        pin time over this core's share of the bandwidth, and the ring's turnover: a slot is refilled only
        once its slab has arrived (engine time + fixed latency) and the ops reading it there are done
        (``slab_use``), so ``ring`` slots pass at most ``ring`` slabs per such hold time (Little's law) -- the
        bound when the ring is about as deep as the engines are many or shallower (long-context decode at
        high TP, 7-8B prefill at TP 1-2 on inf2: 4-8 slots for 16 engines)."""
        engine = max(c.dma / self.q, (c.dma + c.dma_lat + c.slab_use) / self.ring)
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
             memory: str | MemoryModel | None = None, plan: StepPlan | None = None) -> Estimate:
    """Closed-form latency of one step (see the module docstring). ``collectives`` and ``memory`` (a model or
    a registered name) default to the chip's models; the memory model gives the HBM streaming bandwidth.
    ``plan``: the step's plan from :func:`infsim.models.lower.plan.check_feasible` (made here when not given); an
    infeasible step raises :class:`~infsim.feasibility.InfeasibleError`, as at every fidelity."""
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
    if plan is None:  # the lowering's own token chunk, weight ring and slab layout; refuses what it cannot run
        plan = check_feasible(spec, wl, chip)
    cc = OpCosts(chip, spec, wl, mem, plan.max_ctx, plan.kv_block)
    tc, ring_depth = plan.token_chunk, plan.ring_depth
    assert tc is not None and ring_depth is not None  # check_feasible refuses a step without a plan
    chunks = math.ceil(tokens / tc)
    segs = chunk_segments(wl.batch, seq, tc) if wl.phase != "decode" else []  # prefill: the lowering's chunks
    attn_flops = 0  # attention matmul FLOPs of one rank (scores and P x V)

    def scored(blocks: list[tuple[int, int]]) -> int:
        return sum(rows * keys for rows, keys in blocks)

    active = min(tp, chip.cores_per_chip)
    hbm_share = mem.peak_bpps * 1e3 / active  # the pin bandwidth, charged per transfer as the cycle engine's model
    q = chip.dma.engines_per_core
    # prefetch depth: the weight ring holds ring_depth slabs of the layers (the largest one's size)
    slab_bytes = P * plan.max_slab_free * cc.wdt.itemsize
    slab = PhaseCost(dma=cc.dma_ns(slab_bytes, P), dma_lat=cc.dma_lat_ns)
    cc.hbm(slab, slab_bytes, slab_bytes, slab_bytes)
    # a DMA engine serves its queues round robin, dma.arbitration_bytes per turn: a K/V load behind the
    # weight stream waits for one chunk of a slab
    chunk = min(chip.dma.arbitration_bytes or slab_bytes, slab_bytes)
    cc.weight_chunk_ns = cc.dma_ns(slab_bytes, P) * chunk / max(slab_bytes, 1)
    members = tuple(range(tp))
    ab = DType.parse(wl.act_dtype).itemsize
    calls: list[Call] = []

    coll_fixed = make_collectives(latency_only(chip))  # the collectives' fixed part, for the breakdown

    def allreduce(t: int, timing: CollectiveTiming | None = None) -> float:
        if tp == 1:
            return 0.0
        if timing is None:
            timing = coll
            calls.append(("all_reduce", members, h * t * ab, h * t * ab))
        ps, _ = timing.duration_ps(Op.all_reduce, members, h * t * ab, h * t * ab, chip.cores_per_chip)
        return ps / 1000.0

    pad = (-plan.layer_slabs) % ring_depth  # slots skipped to align the next group (layer, head) to the ring
    boundary = min(1.0, (pad + 1) / ring_depth)
    # without queues of their own the K/V loads queue behind the weight prefetch
    pipe = _Pipe(q, hbm_share, slab, ring_depth, cc.dma_lat_ns, shared_queues=cc.other_q0 == 0,
                 kappa=mem.kappa, write_batch=mem.write_batch)
    phases: list[tuple[str, float]] = []
    hbm_total = 0.0
    decode = wl.phase == "decode"
    no_norm = spec.family in ("bert", "roberta")  # post-norm: no norm before the q/k/v projections

    # the breakdown: each advance of the compute chain charged to the op that caused it, with that op's work
    parts: dict[str, Part] = {}

    def work(c: PhaseCost, sign: float = 1.0) -> dict[str, float]:
        return {"tensor": sign * (c.tensor + c.chain_tensor), "vector": sign * (c.vector + c.chain_vector),
                "scalar": sign * (c.scalar + c.chain_scalar), "gpsimd": sign * c.gpsimd, "dma": sign * c.dma / q,
                "hbm": sign * pipe.pin(c) / hbm_share}

    def charge(cat: str, t0: float, c: PhaseCost | None = None, norm: PhaseCost | None = None, **extra: float) -> None:
        """Charge the chain's advance since ``t0`` to ``cat``; a leading norm (part of ``c``) to ``norms``."""
        delta = pipe.comp - t0
        if norm is not None:
            nn = min(norm.serial, delta)
            parts.setdefault("norms", Part()).add(nn, **work(norm))
            delta -= nn
        p = parts.setdefault(cat, Part())
        p.add(delta, **extra)
        if c is not None:
            p.add(**work(c))
            if norm is not None:
                p.add(**work(norm, -1.0))

    def weights(c: PhaseCost, cat: str, norm: PhaseCost | None = None) -> None:
        nonlocal hbm_total
        t0 = pipe.comp
        pipe.weights(c)
        hbm_total += c.hbm_bytes
        charge(cat, t0, c, norm)

    def collective(t: int) -> None:
        t0 = pipe.comp
        full = allreduce(t)
        pipe.serial(full)
        charge("collectives", t0, links=max(0.0, full - allreduce(t, coll_fixed)))

    def post_norm(t: int) -> None:
        """A norm of a block's output before its residual add (Gemma-2's post-norms): serial work."""
        nonlocal hbm_total
        t0 = pipe.comp
        pn = cc.norm(t)
        add_ns = cc.vec_ns(P, t, 2, ht)
        pipe.serial(pn.serial + add_ns)
        hbm_total += pn.hbm_bytes
        w = work(pn)
        w["vector"] += add_ns
        parts.setdefault("norms", Part()).add(pipe.comp - t0, **w)

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
            t0 = pipe.comp
            pipe.load_input(ht * cc.dma_ns(P * t * ab, P))
            hbm_total += ht * P * t * ab
            charge("other", t0, dma=ht * cc.dma_ns(P * t * ab, P) / q, hbm=ht * P * t * ab / hbm_share)
        if spec.family == "vit":
            weights(cc.linear(spec.num_channels * spec.patch_size**2, h, t, 2), "projections")
        if spec.embed_scale != 1.0:  # Gemma: the embeddings scaled, one vector op per feature tile
            t0 = pipe.comp
            pipe.serial(cc.vec_ns(P, t, 1, ht))
            charge("other", t0, vector=cc.vec_ns(P, t, 1, ht))
        for L in range(spec.layers):
            pipe.group_boundary(boundary)
            window = spec.window(L) or 0
            # (A) norm, q/k/v projections, rotary, K/V cache writes
            n1 = cc.norm(t) if not no_norm else PhaseCost()
            a = PhaseCost()
            a.add(n1)
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
                    for sg in segs[ci]:
                        a.add(cc.kv_write(sg.n, kvh_r, False))
            weights(a, "projections", n1)
            # (B) attention, per sequence in the chunk
            b = PhaseCost()
            if decode:
                kv_len = wl.context + 1
                n_keys = min(kv_len, window or kv_len)
                b_scored = t * scored(cc.score_blocks(n_keys, 1, heads_r, kvh_r, True))
                for _ in range(t):
                    b.add(cc.attention(n_keys, 1, heads_r, kvh_r, True))
            else:  # the chunk's segments: a sequence's queries t0..t1 see keys up to t1 (encoder: all)
                b_scored = 0
                for sg in segs[ci]:
                    kv_len = sg.t1 if spec.causal else seq
                    b_scored += scored(cc.score_blocks(kv_len, sg.n, heads_r, kvh_r, False, window))
                    b.add(cc.attention(kv_len, sg.n, heads_r, kvh_r, False, window))
            attn_flops += 4 * hd * kvh_r * b_scored  # scores and P x V of every kv head
            # (C) o_proj, all-reduce, norm, MLP, all-reduce
            o = cc.linear(heads_r * hd, h, t, 2, "vector", head_rows)
            n2 = cc.norm(t)  # pre-norm: before the MLP; post-norm (BERT): after attention, the same place
            m = PhaseCost()
            m.add(n2)
            if spec.is_moe:
                m.add(cc.moe(t))
            elif spec.gated_mlp:
                m.add(cc.linear(h, inter_r, t, 1, "scalar"))
                m.add(cc.linear(h, inter_r, t, 2))
                m.add(cc.linear(inter_r, h, t, 2))
            else:
                m.add(cc.linear(h, inter_r, t, 1, "scalar"))
                m.add(cc.linear(inter_r, h, t, 2))
            t0 = pipe.comp
            pipe.attention(b, pipe.dma_time(o) + pipe.dma_time(m))
            charge("attention", t0, b)
            hbm_total += b.hbm_bytes
            weights(o, "projections")
            collective(t)
            if spec.post_norms:  # Gemma-2: the attention output normalised before the residual add
                post_norm(t)
            weights(m, "mlp", n2)
            collective(t)
            if spec.post_norms:
                post_norm(t)
            if no_norm:  # post-norm: the second LayerNorm closes the layer
                t0 = pipe.comp
                n3 = cc.norm(t)
                pipe.serial(n3.serial)
                hbm_total += n3.hbm_bytes
                parts.setdefault("norms", Part()).add(pipe.comp - t0, **work(n3))
        if spec.kind == "encoder" and spec.family != "vit":  # hidden states out
            t0 = pipe.comp
            pipe.store_output(ht * cc.dma_ns(P * t * ab, P))
            hbm_total += ht * P * t * ab
            charge("other", t0, dma=ht * cc.dma_ns(P * t * ab, P) / q, hbm=ht * P * t * ab / hbm_share)
        phases.append((f"chunk{ci}", pipe.comp))
    if spec.kind == "decoder" or spec.family == "vit":
        pipe.group_boundary(boundary)
        # final soft-capping: the logits evicted through tanh on the scalar engine
        evict = "scalar" if spec.final_softcap else "vector"
        nf = PhaseCost()  # the final norms (charged to 'norms' in the breakdown), part of hc
        hc = PhaseCost()
        for b0 in range(0, wl.batch, tc):  # more sequences than one token chunk: the head runs per chunk
            t = min(tc, wl.batch - b0)
            n = cc.norm(t)
            nf.add(n)
            hc.add(n)
            hc.add(cc.linear(h, split(spec.vocab, tp), t, 1, evict))
        weights(hc, "lm_head", nf)
        hbm_total += wl.batch * split(spec.vocab, tp) * ab  # the logits written (bytes only: not timed)
    total = pipe.comp
    return Estimate(total, phases, g, hbm_total * tp, notes=notes, attention_flops=attn_flops * tp,
                    collectives=summarize(coll, calls, chip.cores_per_chip, chip.lnc, per_member=False),
                    breakdown=build(parts, total, "analytical"))


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
        "static": chip.static_power_w * est.total_ns * 1e-9 * chips,
    }
    return out
