"""The step plan: what the lowering chooses for a step before it emits anything.

:class:`LoweringPlan` derives, from a model, a workload and a chip, everything the emitters share and
that does not depend on emission: the geometry (partitions, tensor-engine columns, PSUM banks, heads and
intermediate features per tensor-parallel rank), the dtypes, the slab layout of every weight
(:mod:`.weights`), the split of a core's DMA queues between the weight stream and everything else
(:func:`dma_queue_split`), and, in :meth:`LoweringPlan.fit`, the token chunk, the weight-ring depth and
the SBUF placement of every role (:mod:`.alloc`): the largest chunk (at most ``moving_free_max`` tokens)
and, for it, the deepest ring that fits, a shallower ring being tried before a smaller chunk. When no
chunk fits with the keys of a whole (sequence, kv head) in SBUF (long contexts: the score, probability,
mask and K/V buffers grow with the keys), a decoder's decode step tiles attention over key blocks of
:attr:`LoweringPlan.kv_block` keys (flash-style running max and sum, :mod:`.attention`), which bounds
those buffers independently of the context; steps that fit untiled keep the untiled plan.

:func:`plan_step` summarises that choice as a :class:`StepPlan` for the step-level analytical model,
which must make the same choices as the lowering without emitting a program. This module therefore
imports no emitter. The shapes the emitters cannot handle (head sizes, experts, ViT patches wider than
the hidden state, more sequences than partitions in a model with a head) are refused by the
:class:`LoweringPlan` constructor, so that every fidelity, which all plan the step, refuses them alike.

Left out: the instructions themselves (the block emitters, :mod:`.transformer` for the orchestration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infsim.config.schema import ChipConfig
from infsim.feasibility import InfeasibleError, check_hbm, check_instance, check_step, matmul_dtype
from infsim.isa import DType, TensorKind

from .. import moe as moe_routing
from ..graph import Workload, split
from ..spec import ModelSpec
from .alloc import LoweringError, Role, allocate
from .weights import LinearPlan, plan_linear

#: V row blocks in flight to the HBM cache during prefill (a lowering choice: 8 x hd elements per partition)
V_ROW_SLOTS = 8
#: LM-head logit row blocks in flight to HBM (a lowering choice: 4 x 512 elements per partition)
LOGIT_ROW_SLOTS = 4
#: weight-ring depths tried, deepest first: deep enough to cover the DMA bandwidth-delay product when
#: SBUF allows (decode), shallower else (a lowering choice)
RING_DEPTHS = (64, 48, 32, 24, 16, 8, 4)

# phases of a layer: the live ranges of the SBUF roles are given in them
PH_NORM1, PH_QKV, PH_ATTN, PH_OPROJ, PH_NORM2, PH_UP, PH_DOWN, PH_HEAD = range(8)


def dma_queue_split(chip: ChipConfig) -> tuple[int, int, int]:
    """(weight queues, first other queue, other queues) of a core.

    Weight slabs stream on one queue per DMA engine; every other transfer (K/V, cache writes, norm
    weights, logits) goes on a second set of queues on the same engines where the chip has them, so it
    never waits in line behind the weight ring's prefetch (engines serve their queues round-robin). With
    one queue per engine both kinds share the queues (first other queue 0)."""
    e, nq = chip.dma.engines_per_core, chip.dma.queues_per_core
    return (min(e, nq), *((e, e) if nq >= 2 * e else (0, nq)))


#: The chip fields the lowering reads (dotted paths into :class:`ChipConfig`), the ISA validator it runs on
#: its result included (the memories' access rules); a program depends on the chip through these only
#: (:func:`lowering_chip_fields`, the key of :mod:`.cache`). ``macs_per_pe_per_cycle`` only through its keys
#: (which matmul dtypes the tensor engine supports); ``name`` only in error messages.
LOWERING_CHIP_FIELDS = (
    "sbuf.partitions",
    "sbuf.bytes_per_partition",
    "sbuf.max_free_elements",
    "sbuf.no_access_engines",
    "sbuf.partition_start_rules",
    "psum.partitions",
    "psum.banks",
    "psum.bytes_per_partition",
    "psum.max_free_elements",
    "psum.no_access_engines",
    "psum.partition_start_rules",
    "tensor_engine.rows",
    "tensor_engine.cols",
    "tensor_engine.moving_free_max",
    "tensor_engine.macs_per_pe_per_cycle",
    "dma.engines_per_core",
    "dma.queues_per_core",
    "dma.min_efficient_chunk_bytes",
    "cores_per_chip",
    "hbm.capacity_gib",
)


def lowering_chip_fields(chip: ChipConfig) -> dict[str, object]:
    """The values of :data:`LOWERING_CHIP_FIELDS` of ``chip`` (dict fields: their sorted keys)."""
    out: dict[str, object] = {}
    for path in LOWERING_CHIP_FIELDS:
        v: object = chip
        for part in path.split("."):
            v = getattr(v, part)
        out[path] = sorted(v) if isinstance(v, dict) else v
    return out


def tokens_per_seq(spec: ModelSpec, wl: Workload) -> int:
    """Tokens of one sequence this step: the patches plus the class token (ViT), else the workload's."""
    return (spec.image_size // spec.patch_size) ** 2 + 1 if spec.family == "vit" else wl.seq


def rank_tensor(name: str, r: int) -> str:
    """The HBM tensor of ``name`` held by tensor-parallel rank ``r``."""
    return f"{name}.r{r}"


@dataclass
class Segment:
    """Tokens ``t0..t1`` (positions) of sequence ``b`` occupying chunk columns ``c0..c0+(t1-t0)``."""

    b: int
    t0: int
    t1: int
    c0: int

    @property
    def n(self) -> int:
        return self.t1 - self.t0


def chunk_segments(batch: int, seq: int, tc: int, pos0: int = 0) -> list[list[Segment]]:
    """The step's token chunks of ``tc`` columns (the last one shorter): ``batch`` sequences of ``seq`` tokens
    at positions ``pos0..`` laid end to end, a chunk holding the tail of one sequence and the head of the
    next where a boundary falls inside it (the lowering's chunks; the step fidelity counts the same)."""
    chunks: list[list[Segment]] = []
    cur: list[Segment] = []
    used = 0
    for b in range(batch):
        t = 0
        while t < seq:
            n = min(seq - t, tc - used)
            cur.append(Segment(b, pos0 + t, pos0 + t + n, used))
            used += n
            t += n
            if used == tc:
                chunks.append(cur)
                cur, used = [], 0
    if cur:
        chunks.append(cur)
    return chunks


class LoweringPlan:
    """Geometry, dtypes, weight layouts, token chunk, ring depth and SBUF roles of one step.

    The constructor checks that the lowering supports the model on the chip (:class:`LoweringError`
    otherwise) and derives the geometry; :meth:`fit` makes the choices that depend on SBUF capacity."""

    def __init__(self, spec: ModelSpec, wl: Workload, chip: ChipConfig, token_chunk: int | None = None):
        self.spec, self.wl, self.chip = spec, wl, chip
        self.P = chip.sbuf.partitions
        te = chip.tensor_engine
        if te.rows != self.P:
            raise LoweringError(f"tensor_engine.rows ({te.rows}) != sbuf.partitions ({self.P}) is not supported")
        self.cols = te.cols
        self.banks = chip.psum.banks
        self.bank_bytes = chip.psum.bytes_per_partition // chip.psum.banks
        self.weight_queues, self.other_q0, self.other_queues = dma_queue_split(chip)
        self.tp = wl.tp
        check_step(wl, chip)  # dtypes with kernels and tensor-engine rates, PSUM banks (shared by every fidelity)
        self.wdt = DType.parse(wl.weight_dtype)
        self.int8 = self.wdt in (DType.int8, DType.uint8)
        self.mdt = DType.parse(matmul_dtype(wl.weight_dtype))  # tensor-engine input dtype
        self.kdt = DType.parse(wl.kv_dtype)
        self.adt = DType.parse(wl.act_dtype)
        hd = spec.head_dim
        self.hd = hd
        # head layout (see head_loc): packed P // hd heads per tile, or tiles of their own
        self.packed = self.P % hd == 0
        self.hd_t = math.ceil(hd / self.P)  # tiles per head
        if hd < 32 or (not self.packed and hd > self.P and (hd % self.P or (spec.rotary and hd != 2 * self.P))):
            raise LoweringError(
                f"head_dim {hd} unsupported (missing: heads over partial partition tiles; supported: 32 <= "
                f"head_dim <= {self.P}, or a multiple of {self.P} ({2 * self.P} with rotary embeddings))"
            )
        self.qrows = self.P if self.packed else min(hd, self.P)  # features per q/k/v/attention tile
        if spec.num_experts > self.P:
            raise LoweringError(f"{spec.num_experts} experts unsupported (missing: routing weights over more than "
                                f"{self.P} experts; the router's outputs lie one expert per partition)")
        self.heads_r = split(spec.heads, wl.tp)
        self.kvh_r = split(spec.kv_heads, wl.tp)
        self.qt = self.tiles_for(self.heads_r)  # q (and attention output) tiles
        self.kt = self.tiles_for(self.kvh_r)  # k and v tiles
        self.group = math.ceil(self.heads_r / self.kvh_r)
        self.inter_r = split(spec.intermediate, wl.tp)
        self.ht = math.ceil(spec.hidden / self.P)  # feature tiles of the hidden state
        if spec.family == "vit":  # the patches are loaded into the normalised-input tiles (ht of them)
            pk = spec.num_channels * spec.patch_size**2
            if math.ceil(pk / self.P) > self.ht:
                raise LoweringError(
                    f"patch_size {spec.patch_size} unsupported: the patch embedding's {pk} inputs (num_channels x "
                    f"patch_size^2) need {math.ceil(pk / self.P)} partition tiles, more than hidden_size "
                    f"{spec.hidden}'s {self.ht} (missing: patch inputs wider than the hidden state)")
        if (spec.kind == "decoder" or spec.family == "vit") and wl.batch > self.P:
            raise LoweringError(
                f"batch {wl.batch} unsupported: at most {self.P} sequences (sbuf.partitions) per step (missing: the "
                "LM head/classifier over several sequence blocks; its logits, and decode's new V rows, lie one "
                "sequence per partition)")
        self.seq = tokens_per_seq(spec, wl)
        self.plans: dict[str, LinearPlan] = {}
        self.s_block = min(4 * self.cols, (self.banks // 2) * self.cols)
        self.wring = 16
        self.token_chunk = token_chunk
        self.tc = 0
        self.max_ctx = 0
        self.kvmax = 0
        self.kv_block = 0  # keys per attention key block (0: untiled, every key of a head in SBUF at once)
        self.role_off: dict[str, int] = {}
        self.role_bytes: dict[str, int] = {}
        self.sbuf_peak_bytes = 0

    # ---- geometry -------------------------------------------------------------------------------
    @property
    def kcols(self) -> int:
        """Keys of a (sequence, kv head) in SBUF at once: the K^T columns of a head tile in ``kbuf``."""
        return self.kv_block or self.kvmax

    def fsize(self, n: int, t: int) -> int:
        """Features of tile ``t`` of an ``n``-feature vector (``P`` but for a partial last tile)."""
        return min(self.P, n - t * self.P)

    def head_loc(self, h: int, sub: int = 0) -> tuple[int, int]:
        """(tile, partition start) of head ``h`` (its ``sub``-th tile of ``P`` features) in a feature-major
        q/k/v/attn role. Heads of ``head_dim`` dividing ``P`` are packed ``P // head_dim`` per tile; other
        heads have tiles of their own: one of ``head_dim`` features (``head_dim < P``, the partitions
        beyond unused) or ``head_dim / P`` full ones."""
        if self.packed:
            hpt = self.P // self.hd
            return h // hpt, (h % hpt) * self.hd
        return h * self.hd_t + sub, 0

    def sub_rows(self, sub: int) -> int:
        """Features of a head's ``sub``-th tile."""
        return min(self.P, self.hd - sub * self.P)

    def tiles_for(self, nheads: int) -> int:
        """Feature tiles of ``nheads`` heads in the head layout."""
        return math.ceil(nheads * self.hd / self.P) if self.packed else nheads * self.hd_t

    def tiling(self, name: str) -> tuple[int, int]:
        """(input features per k-tile, output features per tile) of weight ``name``: the head layout's
        tiles for the q/k/v outputs and the o_proj input, ``P`` and the tensor engine's columns else."""
        kind = name.rsplit(".", 1)[-1]
        if not self.packed and kind in ("wq", "wk", "wv"):
            return self.P, self.qrows
        if not self.packed and kind == "wo":
            return self.qrows, self.cols
        return self.P, self.cols

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``[in, out]`` of every weight of one rank, in the order they are consumed within a layer."""
        s, h, hd = self.spec, self.spec.hidden, self.hd
        shapes: dict[str, tuple[int, int]] = {}
        for L in range(s.layers):
            shapes[f"L{L}.wq"] = (h, self.heads_r * hd)
            shapes[f"L{L}.wk"] = (h, self.kvh_r * hd)
            shapes[f"L{L}.wv"] = (h, self.kvh_r * hd)
            shapes[f"L{L}.wo"] = (self.heads_r * hd, h)
            if s.is_moe:
                shapes[f"L{L}.router"] = (h, s.num_experts)
                for e in self.experts_touched(self.wl.batch * self.seq):
                    shapes[f"L{L}.e{e}.w_gate"] = (h, self.inter_r)
                    shapes[f"L{L}.e{e}.w_up"] = (h, self.inter_r)
                    shapes[f"L{L}.e{e}.w_down"] = (self.inter_r, h)
            elif s.gated_mlp:
                shapes[f"L{L}.w_gate"] = (h, self.inter_r)
                shapes[f"L{L}.w_up"] = (h, self.inter_r)
                shapes[f"L{L}.w_down"] = (self.inter_r, h)
            else:
                shapes[f"L{L}.w_up"] = (h, self.inter_r)
                shapes[f"L{L}.w_down"] = (self.inter_r, h)
        if s.kind == "decoder":
            shapes["lm_head"] = (h, split(s.vocab, self.tp))
        elif s.family == "vit":
            shapes["patch_embed"] = (s.num_channels * s.patch_size**2, h)
            shapes["classifier"] = (h, split(s.vocab, self.tp))
        return shapes

    def experts_touched(self, ncol: int) -> list[int]:
        """The experts a chunk of ``ncol`` tokens runs, in the order it runs them (:mod:`..moe`)."""
        return [r.expert for r in moe_routing.expert_runs(self.spec, ncol)]

    def vec_tiles(self) -> int:
        """Feature tiles of the longest per-channel vector (bias or int8 scale) of any op."""
        return max([math.ceil(self.spec.hidden / self.P)] + [math.ceil(p.n / p.m) for p in self.plans.values()])

    def weight_groups(self, chunk_cols: list[int]) -> list[list[str]]:
        """The weights in the order the step consumes them, one group per layer (per chunk of
        ``chunk_cols[i]`` tokens: MoE runs the experts the chunk touches) and one for the head (the weight
        stream aligns every group to the ring)."""
        groups: list[list[str]] = []
        for ncol in chunk_cols:
            if self.spec.family == "vit":
                groups.append(["patch_embed"])
            for L in range(self.spec.layers):
                names = [n for n in self.plans if n.startswith(f"L{L}.")]
                if self.spec.is_moe:
                    experts = [f"L{L}.e{e}." for e in self.experts_touched(ncol)]
                    dense = [n for n in names if n.count(".") == 1]  # not L{L}.e{x}.*
                    names = dense + [x + w for x in experts for w in ("w_gate", "w_up", "w_down")]
                groups.append(names)
        groups.append([n for n in self.plans if n in ("lm_head", "classifier")])
        return groups

    def segments(self) -> list[list[Segment]]:
        """Token chunks: lists of segments, each at most ``tc`` columns (:func:`chunk_segments`)."""
        return chunk_segments(self.wl.batch, self.seq, self.tc, self.wl.context if self.wl.phase == "decode" else 0)

    def global_col(self, seg: Segment) -> int:
        """Column of ``seg``'s first token in the step's ``[features, tokens]`` HBM inputs/outputs."""
        t0 = seg.t0 - (self.wl.context if self.wl.phase == "decode" else 0)
        return seg.b * self.seq + t0

    # ---- SBUF roles and the choice of chunk and ring ----------------------------------------------
    def roles(self, tc: int) -> list[Role]:
        s, P = self.spec, self.P
        ab, mb, kb = self.adt.itemsize, self.mdt.itemsize, self.kdt.itemsize
        ht = self.ht
        qt, kt = self.qt, self.kt
        it = math.ceil(self.inter_r / P)
        kvmax = self.kcols
        nblk = math.ceil(kvmax / P)
        slab_free = max(p.max_slab_free for p in self.plans.values())
        last = PH_HEAD
        roles = [
            Role("x", ht * tc * ab, 0, last),
            Role("xlast", ht * self.wl.batch * ab, 0, last),
            Role("xn", ht * tc * mb, PH_NORM1, PH_QKV),
            # (MoE: every expert's up projection reads it, interleaved with the down projections)
            Role("xn2", ht * tc * mb, PH_NORM2, PH_DOWN if s.is_moe else PH_UP),
            Role("xnh", ht * self.wl.batch * mb, PH_HEAD, PH_HEAD),
            Role("q", qt * tc * kb, PH_QKV, PH_ATTN),
            # decoders copy k/v to the HBM cache right after the projections (attention reads the cache)
            Role("k", kt * tc * kb, PH_QKV, PH_QKV if self.wl.phase == "prefill" and s.causal else PH_ATTN),
            Role("v", kt * tc * kb, PH_QKV, PH_QKV if self.wl.phase == "prefill" and s.causal else PH_ATTN),
            # decode: the new tokens' V rows, [sequence on partitions, kv head x hd], staged by one transpose
            # per kv head during the cache write and moved into the attention V buffer by one-descriptor DMAs
            Role("vstage", self.kvh_r * self.hd * kb if self.wl.phase == "decode" else 0, PH_QKV, PH_ATTN),
            # prefill: V rows on their way to the cache, a ring of V_ROW_SLOTS so that the transposes and
            # copies run ahead of the row DMAs' completion latency
            *[Role(f"vrow{i}", self.hd * kb, PH_QKV, PH_ATTN) for i in range(V_ROW_SLOTS)],
            Role("attn", qt * tc * mb, PH_ATTN, PH_OPROJ),
            Role("ao", ht * tc * ab if (self.tp > 1 or s.o_bias or s.mlp_bias or self.int8 or s.post_norms) else 0,
                 PH_OPROJ, PH_DOWN),
            Role("h", it * tc * mb, PH_UP, PH_DOWN),
            Role("gact", tc * 4, PH_UP, PH_UP),
            Role("sc", kvmax * 4, PH_ATTN, PH_ATTN),
            Role("pr", kvmax * kb, PH_ATTN, PH_ATTN),
            Role("mask", kvmax * 4, PH_ATTN, PH_ATTN),
            Role("pt0", P * kb, PH_ATTN, PH_ATTN),
            Role("pt1", P * kb, PH_ATTN, PH_ATTN),
            # K^T and V of one (sequence, kv head), double-buffered: the next head's loads overlap compute
            Role("kbuf0", self.hd_t * kvmax * kb, PH_ATTN, PH_ATTN),
            Role("kbuf1", self.hd_t * kvmax * kb, PH_ATTN, PH_ATTN),
            Role("vbuf0", nblk * self.hd * kb, PH_ATTN, PH_ATTN),
            Role("vbuf1", nblk * self.hd * kb, PH_ATTN, PH_ATTN),
            Role("stats", 64, PH_ATTN, PH_ATTN),
            Role("sq0", tc * 2, 0, last),
            Role("sq1", tc * 2, 0, last),
            Role("rrow", tc * 2, 0, last),
            Role("nstat", tc * 4 * 2, 0, last),
            Role("rbc", tc * 4, 0, last),
            Role("mbc", tc * 4, 0, last),
            Role("gamma", ht * 4 * 2, 0, last),
            # per-output-channel vectors (biases, int8 scales) of the current ops: a ring of 4 whole vectors
            *[Role(f"vec{i}", self.vec_tiles() * 4, 0, last) for i in range(4)],
            Role("cos", tc * kb, PH_QKV, PH_QKV),
            Role("sin", tc * kb, PH_QKV, PH_QKV),
            Role("rt0", tc * 4, PH_QKV, PH_QKV),
            Role("const", 4 * P + 16, 0, last),
            Role("rot", self.hd_t * P * kb, 0, last),
            # LM head: evicted [features, b] logit tiles (2) and [b, block] row blocks on their way to HBM
            *[Role(f"locol{i}", self.wl.batch * ab, PH_HEAD, PH_HEAD) for i in range(2)],
            *[Role(f"lorow{i}", self.s_block * ab, PH_HEAD, PH_HEAD) for i in range(LOGIT_ROW_SLOTS)],
        ]
        roles += [Role(f"wslot{i}", slab_free * self.wdt.itemsize, 0, last) for i in range(self.wring)]
        if self.kv_block:  # key-block tiling: the running output [query rows, hd] (fp32), its normalised copy
            roles += [Role("oacc", self.hd * 4, PH_ATTN, PH_ATTN), Role("onorm", self.hd * mb, PH_ATTN, PH_ATTN)]
        if self.int8:
            roles += [Role(f"dq{i}", slab_free * 2, 0, last) for i in range(2)]
        if s.is_moe:
            roles += [
                # router exp(logits) (experts on partitions) and the normalised routing weights
                Role("route", tc * 4, PH_UP, PH_DOWN),
                Role("routew", tc * 2, PH_UP, PH_DOWN),
                Role("moe_w", tc * 4, PH_UP, PH_DOWN),  # one run's weights broadcast over partitions
                Role("moe_tmp", tc * 4, PH_UP, PH_DOWN),
                Role("moe_acc", ht * tc * 4, PH_UP, PH_DOWN),
                Role("moe_mask", 4 * tc * 4, PH_UP, PH_UP),  # chosen-expert mask: iota, two compares, sum
                Role("moe_sel", P * 6, PH_UP, PH_DOWN),  # one-hot [experts, P]: iota (int32), bf16
                Role("moe_ones", P * 2, 0, last),  # bf16 ones on the experts' partitions (the weights' sums)
            ]
        return roles

    def rank_tensors(self) -> list[tuple[str, DType, tuple[int, ...], TensorKind]]:
        """``(name, dtype, shape, kind)`` of the HBM tensors one rank holds (every rank the same; the program
        names rank ``r``'s copy :func:`rank_tensor` ``(name, r)``): weights in their slab layout, norm
        weights, biases, int8 scales, the KV cache, inputs and outputs. Needs the weight plans and the
        context capacity of :meth:`fit` (made before its SBUF placement, so also when that fails)."""
        if not self.plans:
            raise AssertionError("rank_tensors() before fit()")
        spec, wl, P, ht = self.spec, self.wl, self.P, self.ht
        W, I, O = TensorKind.weight, TensorKind.input, TensorKind.output  # noqa: E741
        out: list[tuple[str, DType, tuple[int, ...], TensorKind]] = []
        for name, plan in self.plans.items():
            out.append((name, self.wdt, (plan.total_elems,), W))
            if self.int8:
                out.append((name + ".scale", DType.fp32, (P, math.ceil(plan.n / plan.m)), W))
        nvec = 2 if spec.norm == "layer" else 1
        norms = ("attn_norm", "mlp_norm") + (("post_attn_norm", "post_mlp_norm") if spec.post_norms else ())
        for L in range(spec.layers):
            for n in norms:
                out.append((f"L{L}.{n}", DType.fp32, (nvec, P, ht), W))
            if spec.qkv_bias:
                out.append((f"L{L}.bqkv", DType.fp32, (3, P, max(self.qt, self.kt)), W))
            if spec.o_bias or spec.mlp_bias:  # [o_proj's, down's] (zeros where the model has none)
                out.append((f"L{L}.bo_down", DType.fp32, (2, P, ht), W))
            if spec.mlp_bias:
                out.append((f"L{L}.b_up", DType.fp32, (P, math.ceil(self.inter_r / P)), W))
            if spec.kind == "decoder":
                out.append((f"L{L}.k_cache", self.kdt, (wl.batch, self.kvh_r, self.hd, self.max_ctx), I))
                out.append((f"L{L}.v_cache", self.kdt, (wl.batch, self.kvh_r, P, self.max_ctx // P, self.hd), I))
        out.append(("final_norm", DType.fp32, (nvec, P, ht), W))
        tokens = wl.batch * self.seq
        out.append(("x", self.adt, (ht * P, tokens), I))
        if spec.rotary:
            out.append(("rope", self.kdt, (2, P, self.max_ctx), I))
            out.append(("rot", self.kdt, (P, P) if self.hd_t == 1 else (self.hd_t, P, P), I))
        if spec.family == "vit":
            pk = spec.num_channels * spec.patch_size**2
            out.append(("patches", self.mdt, (math.ceil(pk / P) * P, tokens), I))
        if spec.kind == "decoder" or spec.family == "vit":
            vr = split(spec.vocab, self.tp)
            out.append(("logits", self.adt, (wl.batch, math.ceil(vr / P) * P), O))
        else:
            out.append(("hidden_out", self.adt, (ht * P, tokens), O))
        return out

    def hbm_bytes_per_chip(self) -> dict[int, int]:
        """HBM bytes of the tensors of the ranks on each chip (:meth:`rank_tensors`; what the program declares)."""
        per_rank = sum(math.prod(shape) * dt.itemsize for _, dt, shape, _ in self.rank_tensors())
        cpc = self.chip.cores_per_chip
        out: dict[int, int] = {}
        for r in range(self.tp):
            out[r // cpc] = out.get(r // cpc, 0) + per_rank
        return out

    def fit(self) -> int:
        """Weight plans, token chunk, weight-ring depth and SBUF allocation, without emitting anything.
        Returns the peak SBUF bytes per partition (``self.tc`` is the token chunk, ``self.wring`` the
        ring depth)."""
        spec, wl = self.spec, self.wl
        mmin = self.chip.dma.min_efficient_chunk_bytes
        for name, (k, n) in self.linear_shapes().items():
            p, m = self.tiling(name)
            self.plans[name] = plan_linear(k, n, p, self.s_block // m * m, mmin, self.wdt.itemsize, m)
        total_ctx = (wl.context + wl.seq) if spec.kind == "decoder" else self.seq
        self.max_ctx = math.ceil(total_ctx / self.P) * self.P
        # keys of one (sequence, kv head) in SBUF: a decode step's window when every layer has one (a
        # prefill chunk's queries together reach back further), else the whole context
        windows = [spec.window(L) for L in range(spec.layers)]
        windowed = spec.kind == "decoder" and wl.phase == "decode" and all(windows)
        self.kvmax = min(total_ctx, max(w or 0 for w in windows)) if windowed else total_ctx

        try:
            tc, peak = self._fit_chunk()
        except LoweringError:
            # the keys of a head do not fit whole: attention over key blocks (one score PSUM bank each, their
            # probability transposes fewer than the PSUM banks so that the P x V accumulator is not reused)
            kblk = min(self.chip.tensor_engine.moving_free_max, self.bank_bytes // 4, (self.banks - 2) * self.P)
            kblk = kblk // self.P * self.P
            if kblk < self.P or self.kvmax <= kblk or spec.kind != "decoder" or wl.phase != "decode":
                raise
            self.kv_block = kblk
            tc, peak = self._fit_chunk()
        self.tc = tc
        self.role_bytes = {r.name: r.nbytes for r in self.roles(tc)}
        self.sbuf_peak_bytes = peak
        return peak

    def _fit_chunk(self) -> tuple[int, int]:
        """(token chunk, peak SBUF bytes) of the largest chunk that fits with the deepest ring (``self.wring``
        and ``self.role_off`` set), or :class:`LoweringError`."""
        spec, wl = self.spec, self.wl
        cap = self.chip.sbuf.bytes_per_partition
        te_max = self.chip.tensor_engine.moving_free_max
        tokens = wl.batch * self.seq
        tc = min(te_max, self.bank_bytes // 4, tokens) if self.token_chunk is None else self.token_chunk
        last_err: LoweringError | None = None
        while tc >= 1:
            placed = False
            for ring in RING_DEPTHS:  # a shallower weight ring before a smaller token chunk
                self.wring = ring
                try:
                    self.role_off, peak = allocate(self.roles(tc), cap)
                    placed = True
                    break
                except LoweringError as e:
                    last_err = e
            if placed:
                break
            if self.token_chunk is not None:
                raise LoweringError(f"model '{spec.name}' on '{self.chip.name}': {last_err}")
            tc //= 2
        else:
            raise LoweringError(f"model '{spec.name}' on '{self.chip.name}': {last_err}")
        if spec.kind != "decoder" and tc % self.seq:
            # an encoder's queries attend to every key of their sequence, read from the chunk's own K/V
            # tiles: a chunk holds whole sequences (attention across token chunks is not lowered)
            if self.seq > tc or self.token_chunk is not None:
                raise LoweringError(
                    f"model '{spec.name}' on '{self.chip.name}': an encoder sequence of {self.seq} tokens does "
                    f"not fit whole in a token chunk of {tc} tokens (bidirectional attention across token "
                    f"chunks is not lowered)")
            tc = tc // self.seq * self.seq
            self.role_off, peak = allocate(self.roles(tc), cap)
        return tc, peak


@dataclass(frozen=True)
class StepPlan:
    """What the lowering would choose for a step, computed without emitting a program."""

    token_chunk: int | None  # None (and ``error`` set) when the step does not fit the SBUF
    ring_depth: int | None  # weight-ring slots
    layer_slabs: int  # weight slabs of one layer (one rank)
    max_slab_free: int  # elements per partition of the largest slab of a layer
    error: str | None = None
    max_ctx: int = 0  # token slots of the K/V cache (context + new tokens, rounded up to the partitions)
    hbm_bytes_per_chip: dict[int, int] = field(default_factory=dict)  # :meth:`LoweringPlan.hbm_bytes_per_chip`
    hbm_bytes_by_kind: dict[str, int] = field(default_factory=dict)  # one rank's: weights, kv_cache, activations
    kv_block: int = 0  # keys per attention key block (:attr:`LoweringPlan.kv_block`; 0: untiled)


def plan_step(spec: ModelSpec, workload: Workload, chip: ChipConfig) -> StepPlan:
    """Token chunk, weight-ring depth and weight-slab layout of a step (see :class:`StepPlan`)."""
    pl = LoweringPlan(spec, workload, chip)
    try:
        pl.fit()
        tc, ring, err = pl.tc, pl.wring, None
    except LoweringError as e:  # the weight plans are made before the SBUF allocation that failed
        tc, ring, err = None, None, str(e)
    layer = [p for n, p in pl.plans.items() if n.startswith("L0.")]
    kinds: dict[str, int] = {"weights": 0, "kv_cache": 0, "activations": 0}
    for name, dt, shape, kind in pl.rank_tensors():
        k = "weights" if kind == TensorKind.weight else "kv_cache" if name.endswith("_cache") else "activations"
        kinds[k] += math.prod(shape) * dt.itemsize
    return StepPlan(tc, ring, sum(len(p.slabs) for p in layer), max(p.max_slab_free for p in layer), err,
                    pl.max_ctx, pl.hbm_bytes_per_chip(), kinds, pl.kv_block)


def check_feasible(spec: ModelSpec, wl: Workload, chip: ChipConfig) -> StepPlan:
    """The lowering's plan of the step, or :class:`~infsim.feasibility.InfeasibleError` naming the first limit
    it exceeds (the checks of :mod:`infsim.feasibility`, in its docstring's order)."""
    check_step(wl, chip)
    check_instance(wl.tp, chip)  # wl.tp counts physical cores here (infsim.mapping.physical_workload)
    plan = plan_step(spec, wl, chip)
    check_hbm(plan.hbm_bytes_per_chip, chip, spec.name, wl.tp, plan.hbm_bytes_by_kind)
    if plan.error is not None:
        raise InfeasibleError(f"{plan.error} (sbuf.bytes_per_partition)", "sbuf")
    return plan
