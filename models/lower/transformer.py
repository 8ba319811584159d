"""Lowering of a transformer step (op graph) to an ISA program for a chip.

Layout. Activations live in SBUF *feature-major*: a hidden state of ``T`` tokens is a set of tiles
``[P features, T tokens]`` (``P`` = SBUF partitions), so a linear layer is a sequence of matmuls with
the weight block as the stationary operand ``[K = P input features, M <= P output features]`` and the
activations as the moving operand ``[K, N = T tokens]``; the product ``[M, T]`` is again feature-major.
Weights stream from HBM in partition-major slabs (:mod:`.weights`) through a ring of SBUF slots that is
refilled as soon as a slab has been consumed, so DMA runs ahead of the tensor engine across op
boundaries (prefetch / double buffering). PSUM is a ring of banks: the eviction of one accumulation
group overlaps the matmuls of the next.

Ops. RMSNorm / LayerNorm reduce over features (= partitions) with a ones-vector matmul and broadcast
the per-token statistics back with a ones-row matmul; rotary embedding multiplies by a signed
permutation matrix on the tensor engine plus two vector multiplies and an add; attention computes
scores ``q^T K`` (rows = query tokens, or the heads of a GQA group in decode), a row softmax
(vector max, scalar exp with the max as per-partition bias and a fused sum, reciprocal, scale), transposes
the probabilities on the tensor engine and multiplies by ``V`` blocks; the causal mask of prefill is
generated on GpSimd (iota + compare). K is cached transposed ``[B, kv_heads, head_dim, ctx]`` and V
partition-major ``[B, kv_heads, P, ctx/P, head_dim]`` so that both load as long contiguous runs.
Tensor parallelism splits heads and the MLP over cores (Megatron column/row split) and all-reduces the
partial outputs of ``o_proj`` and ``down_proj`` on the collective queue.

Token chunks. A step processes its tokens in chunks of at most ``moving_free_max`` tokens that fit in
SBUF (chosen automatically, smaller when SBUF is short). Every chunk streams the weights again (one
pass for decode); K/V of earlier chunks are read back from the HBM cache.

Dtypes. Weights bf16/fp16/fp8 feed the tensor engine directly (activations are cast to the weight dtype
by the op that produces them); int8 weights are dequantised to bf16 by the vector engine after the DMA
and their per-output-channel scales applied in the PSUM eviction. KV cache in ``kv_dtype``.

Left out: flash-style blocking of very long contexts (an attention whose keys do not fit in SBUF is an
error), MoE routing is static (token ``i`` goes to experts ``(i*k + j) mod E``, a balanced assignment,
and the combine weights are the router softmax probabilities, not renormalised over the top k),
embedding lookup (the program input is the gathered embedding rows), sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.isa import ActFunc, AluOp, DType, Engine, Op, Program, ReduceOp, Space, TensorKind

from ..graph import Graph, Workload, build_graph, split
from ..spec import ModelSpec
from .alloc import LoweringError
from .emit import Buf, Emitter, Tile, link_aliases
from .plan import LOGIT_ROW_SLOTS, V_ROW_SLOTS, LoweringPlan, Segment, rank_tensor
from .repeat import snapshot, try_replicate
from .tags import ATTENTION_CLASSES, LINEAR_CLASSES, OP_CLASS_NAMES, OpClass, layer_of
from .weights import LinearPlan


@dataclass
class Lowered:
    """A lowered step: the program plus what is needed to feed it and read it back."""

    program: Program
    graph: Graph
    spec: ModelSpec
    workload: Workload
    chip: ChipConfig
    token_chunk: int
    sbuf_peak_bytes: int
    plans: dict[str, LinearPlan] = field(default_factory=dict)  # weight name -> plan (per rank)
    ranks: int = 1
    max_ctx: int = 0
    nops: int = 0
    role_off: dict[str, int] = field(default_factory=dict)  # SBUF byte offset of every role
    role_bytes: dict[str, int] = field(default_factory=dict)  # bytes per partition of every role
    #: op class (:class:`~.tags.OpClass` code) of every instruction, aligned with ``program.instr``
    op_class: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    #: transformer layer of every instruction, -1 outside the layers (see :mod:`.tags`)
    layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    replicated_layers: int = 0  # layers stamped out from a verified periodic block (see :mod:`.repeat`)

    def select(self, op_class: str | OpClass | None = None, layer: int | None = None) -> np.ndarray:
        """Indices of the instructions of ``op_class`` (a name of :data:`~.tags.OP_CLASS_NAMES` or an
        :class:`~.tags.OpClass`) and/or ``layer``."""
        keep = np.ones(len(self.op_class), bool)
        if op_class is not None:
            if isinstance(op_class, str) and op_class not in OP_CLASS_NAMES:
                raise ValueError(f"unknown op class '{op_class}' (expected one of {', '.join(OP_CLASS_NAMES)})")
            keep &= self.op_class == int(OpClass[op_class] if isinstance(op_class, str) else op_class)
        if layer is not None:
            keep &= self.layer == layer
        return np.flatnonzero(keep)

    def matmul_flops_by_class(self) -> dict[str, int]:
        """Tensor-engine FLOPs of the program by op class (the classes that have matmuls)."""
        idx, fl = _matmul_flops(self.program)
        out = np.zeros(len(OP_CLASS_NAMES), np.int64)
        np.add.at(out, self.op_class[idx], fl)
        return {OP_CLASS_NAMES[c]: int(out[c]) for c in np.flatnonzero(out)}

    def matmul_flops(self) -> dict[str, int]:
        """Tensor-engine FLOPs of the program by purpose: ``linear`` (weights stationary), ``attention``
        (scores and probability x V), ``aux`` (norm reductions/broadcasts, rotary)."""
        out = {"linear": 0, "attention": 0, "aux": 0}
        for name, fl in self.matmul_flops_by_class().items():
            c = OpClass[name]
            out["linear" if c in LINEAR_CLASSES else "attention" if c in ATTENTION_CLASSES else "aux"] += fl
        return out


def _matmul_flops(program: Program) -> tuple[np.ndarray, np.ndarray]:
    """(indices, FLOPs = 2 K M N) of the matmul instructions of ``program``."""
    ins, aps = program.instr, program.aps
    idx = np.flatnonzero(ins["op"] == int(Op.matmul))
    st = aps[ins["opnd"][idx, 1]]
    mv = aps[ins["opnd"][idx, 2]]
    k = st["pcount"].astype(np.int64)
    m = np.prod(np.where(np.arange(4)[None, :] < st["ndims"][:, None], st["sizes"], 1), axis=1).astype(np.int64)
    n = np.prod(np.where(np.arange(4)[None, :] < mv["ndims"][:, None], mv["sizes"], 1), axis=1).astype(np.int64)
    return idx, 2 * k * m * n


class _Rank:
    """Lowering state of one tensor-parallel rank (one core)."""

    def __init__(self, lw: _Lowering, rank: int):
        self.lw = lw
        self.r = rank
        self.core = rank
        self.em = lw.em
        self.P = lw.P
        self.bufs: dict[str, list[Buf]] = {}
        self.single: dict[str, Buf] = {}
        self.registry: list[Buf] = []  # every on-chip buffer, for alias links
        self._q_other = 0
        self.psum_ring = [
            Buf(f"psum{i}", Space.psum, rank, 0, lw.P, i * lw.bank_bytes, lw.bank_bytes) for i in range(lw.banks)
        ]
        self._bank = 0
        self.wslots = [self.buf_single(f"wslot{i}") for i in range(lw.wring)]
        self._wseq: list[tuple[str, int]] = []  # (weight tensor, slab index) in consumption order
        self._wpos = 0
        self._wemitted = 0
        self.dq = [self.buf_single(f"dq{i}") for i in range(2)] if lw.int8 else []
        self._dq = 0
        self._kv_slot = 0
        self._vec = 0
        self._vec_cache: dict[tuple[str, int], Buf] = {}

    # ---- buffers --------------------------------------------------------------------------------
    def buf_single(self, role: str) -> Buf:
        """The one Buf of ``role`` (cached: its dependency history must persist across uses)."""
        b = self.single.get(role)
        if b is None:
            off, nbytes = self.lw.role_off[role], self.lw.role_bytes[role]
            b = Buf(f"{role}.c{self.core}", Space.sbuf, self.core, 0, self.P, off, nbytes)
            link_aliases(self.registry, b)
            self.single[role] = b
        return b

    def tiles(self, role: str, n: int, tile_bytes: int) -> list[Buf]:
        if role not in self.bufs:
            base = self.lw.role_off[role]
            self.bufs[role] = [
                Buf(f"{role}{t}.c{self.core}", Space.sbuf, self.core, 0, self.P, base + t * tile_bytes, tile_bytes)
                for t in range(n)
            ]
            for b in self.bufs[role]:
                link_aliases(self.registry, b)
        return self.bufs[role]

    def bank(self) -> Buf:
        b = self.psum_ring[self._bank]
        self._bank = (self._bank + 1) % len(self.psum_ring)
        return b

    def hbm(self, name: str) -> Buf:
        return self.lw.hbm_buf(name)

    # ---- emission shortcuts -------------------------------------------------------------------
    def dma(self, dst: Tile, src: Tile, queue: int | None = None, partial: bool = False) -> None:
        if queue is None:
            queue = self.lw.other_q0 + self._q_other % self.lw.other_queues
            self._q_other += 1
        self.em.emit(Op.dma_copy, self.core, Engine.dma, queue, dst=dst, src=src, partial=partial)

    def vec(self, opcode: Op, /, **kw: object) -> None:
        engine = kw.pop("engine", Engine.vector)
        self.em.emit(opcode, self.core, engine, **kw)  # type: ignore[arg-type]

    def act(self, func: ActFunc, dst: Tile, src: Tile, **kw: object) -> None:
        self.em.emit(Op.activate, self.core, Engine.scalar, dst=dst, src=src, func=func, **kw)

    def mm(self, dst: Tile, stat: Tile, mov: Tile, acc: bool) -> None:
        self.em.emit(Op.matmul, self.core, Engine.tensor, dst=dst, stationary=stat, moving=mov, accumulate=acc)

    # ---- weight streaming ---------------------------------------------------------------------
    def plan_weights(self, groups: list[list[str]]) -> None:
        """The order in which weight slabs are consumed, as groups (one per layer, one for the head).

        Every group starts at a *virtual* position aligned to the ring depth D, and a slab's slot is its
        virtual position mod D; a slab is loaded only when its virtual position is within D of the next
        slab to be consumed, so a slot is never refilled before its previous slab was used, and every
        layer uses the slots (and DMA queues) in the same pattern (periodic layers, see :mod:`.repeat`)."""
        d = len(self.wslots)
        v = 0
        for names in groups:
            v = -(-v // d) * d
            pos = 0
            for n in names:
                for s in self.lw.plans[n].slabs:
                    self._wseq.append((n, s.index, v % d, pos % self.lw.weight_queues, v, layer_of(n)))
                    v += 1
                    pos += 1

    def _fill_window(self) -> None:
        d = len(self.wslots)
        if self._wpos >= len(self._wseq):
            return
        limit = self._wseq[self._wpos][4] + d
        while self._wemitted < len(self._wseq) and self._wseq[self._wemitted][4] < limit:
            self._emit_slab_load(self._wemitted)
            self._wemitted += 1

    def _emit_slab_load(self, i: int) -> None:
        name, si, slot_i, q, _v, layer = self._wseq[i]
        plan = self.lw.plans[name]
        sl = plan.slabs[si]
        slot = self.wslots[slot_i]
        wdt = self.lw.wdt
        src = self.hbm(rank_tensor(name, self.r)).hbm(
            wdt, sl.rows, sl.nk * sl.csz, ((1, sl.nk * sl.csz),), byte=sl.offset_elems * wdt.itemsize
        )
        with self.em.tagged(OpClass.weight_stream, layer):
            self.dma(slot.tile(wdt, sl.nk * sl.csz, pcount=sl.rows), src, queue=q)

    def next_slab(self, name: str) -> tuple[Tile, int]:
        """The SBUF slot holding the next slab of weight ``name`` (loads ahead as slots free up)."""
        i = self._wpos
        if i >= len(self._wseq) or self._wseq[i][0] != name:
            raise AssertionError(f"weight stream out of order at {i}: expected {name}")
        self._fill_window()
        slot = self.wslots[self._wseq[i][2]]
        sl = self.lw.plans[name].slabs[self._wseq[i][1]]
        t = slot.tile(self.lw.wdt, sl.nk * sl.csz, pcount=sl.rows)
        if self.lw.int8:  # dequantise int8 -> bf16 on the vector engine
            dq = self.dq[self._dq % len(self.dq)]
            self._dq += 1
            out = dq.tile(DType.bf16, sl.nk * sl.csz, pcount=sl.rows)
            with self.em.tagged(OpClass.dequant):
                self.vec(Op.tensor_copy, dst=out, src=t)
            t = out
        return t, self._wseq[i][1]

    def slab_done(self) -> None:
        self._wpos += 1
        self._fill_window()


class _Lowering(LoweringPlan):
    def __init__(
        self, spec: ModelSpec, wl: Workload, chip: ChipConfig, token_chunk: int | None, replicate: bool = True
    ):
        super().__init__(spec, wl, chip, token_chunk)
        self.program = Program(num_cores=wl.tp, cores_per_chip=chip.cores_per_chip)
        self.em = Emitter(self.program)
        self._hbm: dict[str, Buf] = {}
        self.replicate = replicate
        self.replicated_layers = 0

    # ---- naming ---------------------------------------------------------------------------------
    def hbm_region(self, name: str, tag: str) -> Buf:
        """A separately tracked region of an HBM tensor (``tag`` names it). Used by decode, where the
        cache positions written this step and the positions read are disjoint: reads of old positions
        need not wait for the write of the new one."""
        key = f"{name}@{tag}"
        if key not in self._hbm:
            t = self.program.tensors[name]
            self._hbm[key] = Buf(key, Space.hbm, 0, 0, 0, 0, t.num_bytes, tensor=name)
        return self._hbm[key]

    def hbm_buf(self, name: str) -> Buf:
        if name not in self._hbm:
            t = self.program.tensors[name]
            self._hbm[name] = Buf(name, Space.hbm, 0, 0, 0, 0, t.num_bytes, tensor=name)
        return self._hbm[name]

    def load_vec(self, rk: _Rank, tensor: str, which: int = 0) -> Buf:
        """DMA a whole per-channel vector (``[nvec, P, nt]`` fp32 tensor, entry ``which``) into the next
        vector slot, once per op; evictions then read ``slot.tile(fp32, 1, pcount, byte=j*4)``."""
        key = (tensor, which)
        hit = rk._vec_cache.get(key)
        if hit is not None:
            return hit
        slot = rk.buf_single(f"vec{rk._vec % 4}")
        rk._vec += 1
        rk._vec_cache = {k: v for k, v in rk._vec_cache.items() if v is not slot}
        t = self.program.tensors[tensor]
        nt = t.shape[-1]
        rk.dma(
            slot.tile(DType.fp32, nt),
            rk.hbm(tensor).hbm(DType.fp32, self.P, nt, ((1, nt),), byte=which * self.P * nt * 4),
        )
        rk._vec_cache[key] = slot
        return slot

    # ---- the driver -----------------------------------------------------------------------------
    def run(self) -> Lowered:
        spec, wl = self.spec, self.wl
        peak = self.fit()
        self.declare_tensors()
        ranks = [_Rank(self, r) for r in range(self.tp)]
        chunks = self.segments()
        for rk in ranks:
            rk.plan_weights(self.weight_groups(len(chunks)))
            self.lower_rank(rk, chunks)
        graph = build_graph(spec, wl)
        if len(self.em.tags) != len(self.program):
            raise AssertionError(f"{len(self.em.tags)} instruction tags for {len(self.program)} instructions")
        return Lowered(
            self.program,
            graph,
            spec,
            wl,
            self.chip,
            self.tc,
            peak,
            self.plans,
            self.tp,
            self.max_ctx,
            self.em.nops,
            dict(self.role_off),
            dict(self.role_bytes),
            *self.em.tags.arrays(),
            self.replicated_layers,
        )

    def declare_tensors(self) -> None:
        p, spec, wl = self.program, self.spec, self.wl
        cpc = self.chip.cores_per_chip
        ht = math.ceil(spec.hidden / self.P)
        tokens = wl.batch * self.seq
        for r in range(self.tp):
            chip = r // cpc
            for name, plan in self.plans.items():
                p.add_tensor(rank_tensor(name, r), self.wdt, (plan.total_elems,), TensorKind.weight, chip)
                if self.int8:
                    p.add_tensor(
                        rank_tensor(name + ".scale", r),
                        DType.fp32,
                        (self.P, math.ceil(plan.n / self.P)),
                        TensorKind.weight,
                        chip,
                    )
            nvec = 2 if spec.norm == "layer" else 1
            for L in range(spec.layers):
                p.add_tensor(rank_tensor(f"L{L}.attn_norm", r), DType.fp32, (nvec, self.P, ht), TensorKind.weight, chip)
                p.add_tensor(rank_tensor(f"L{L}.mlp_norm", r), DType.fp32, (nvec, self.P, ht), TensorKind.weight, chip)
                if spec.qkv_bias:
                    qt = math.ceil(self.heads_r * self.hd / self.P)
                    kt = math.ceil(self.kvh_r * self.hd / self.P)
                    it = math.ceil(self.inter_r / self.P)
                    p.add_tensor(
                        rank_tensor(f"L{L}.bqkv", r), DType.fp32, (3, self.P, max(qt, kt)), TensorKind.weight, chip
                    )
                    p.add_tensor(rank_tensor(f"L{L}.bo_down", r), DType.fp32, (2, self.P, ht), TensorKind.weight, chip)
                    p.add_tensor(rank_tensor(f"L{L}.b_up", r), DType.fp32, (self.P, it), TensorKind.weight, chip)
                if spec.kind == "decoder":
                    p.add_tensor(
                        rank_tensor(f"L{L}.k_cache", r),
                        self.kdt,
                        (wl.batch, self.kvh_r, self.hd, self.max_ctx),
                        TensorKind.input,
                        chip,
                    )
                    p.add_tensor(
                        rank_tensor(f"L{L}.v_cache", r),
                        self.kdt,
                        (wl.batch, self.kvh_r, self.P, self.max_ctx // self.P, self.hd),
                        TensorKind.input,
                        chip,
                    )
            p.add_tensor(rank_tensor("final_norm", r), DType.fp32, (nvec, self.P, ht), TensorKind.weight, chip)
            p.add_tensor(rank_tensor("x", r), self.adt, (ht * self.P, tokens), TensorKind.input, chip)
            if spec.rotary:
                p.add_tensor(rank_tensor("rope", r), self.kdt, (2, self.P, self.max_ctx), TensorKind.input, chip)
                p.add_tensor(rank_tensor("rot", r), self.kdt, (self.P, self.P), TensorKind.input, chip)
            if spec.family == "vit":
                pk = spec.num_channels * spec.patch_size**2
                p.add_tensor(
                    rank_tensor("patches", r),
                    self.mdt,
                    (math.ceil(pk / self.P) * self.P, tokens),
                    TensorKind.input,
                    chip,
                )
            if spec.kind == "decoder" or spec.family == "vit":
                vr = split(spec.vocab, self.tp)
                p.add_tensor(
                    rank_tensor("logits", r),
                    self.adt,
                    (wl.batch, math.ceil(vr / self.P) * self.P),
                    TensorKind.output,
                    chip,
                )
            else:
                p.add_tensor(rank_tensor("hidden_out", r), self.adt, (ht * self.P, tokens), TensorKind.output, chip)
        if self.tp > 1:
            p.add_group("tp", list(range(self.tp)))
        per_chip: dict[int, int] = {}
        for t in p.tensors.values():
            per_chip[t.chip] = per_chip.get(t.chip, 0) + t.num_bytes
        cap = self.chip.hbm_bytes
        worst = max(per_chip.items(), key=lambda kv: kv[1])
        if worst[1] > cap:
            raise LoweringError(
                f"model '{spec.name}' with tp {self.tp}: chip {worst[0]} needs {worst[1] / 2**30:.1f} GiB of HBM "
                f"(weights, KV cache, activations), '{self.chip.name}' has {cap / 2**30:.1f} GiB; use a larger --tp"
            )

    # ---- per-rank program ---------------------------------------------------------------------
    def lower_rank(self, rk: _Rank, chunks: list[list[Segment]]) -> None:
        spec, em = self.spec, self.em
        with em.tagged(OpClass.setup, -1):
            self.setup_constants(rk)
        for segs in chunks:
            ncol = sum(s.n for s in segs)
            with em.tagged(OpClass.input_dma):
                self.load_input(rk, segs, ncol)
            if spec.family == "vit":
                self.patch_embed(rk, segs, ncol)
            # (BERT: the embeddings LayerNorm is folded into the input, the summed embeddings)
            self.layers(rk, segs, ncol)
            self.chunk_end(rk, segs, ncol)
        if spec.kind == "decoder" or spec.family == "vit":
            self.head(rk)

    def layers(self, rk: _Rank, segs: list[Segment], ncol: int) -> None:
        """All layers of a chunk; the middle ones are stamped out from a verified periodic block."""
        n = self.spec.layers
        if not self.replicate or n < 6:
            for L in range(n):
                self.layer(rk, L, segs, ncol)
            return
        snaps = [snapshot(self.em)]
        per_layer = sum(len(p.slabs) for name, p in self.plans.items() if name.startswith("L1."))
        L = 0
        stamped = False
        while L < n - 1:
            self.layer(rk, L, segs, ncol)
            snaps.append(snapshot(self.em))
            copies = 0
            if not stamped and 2 <= L <= 5 and n - 2 - L > 0:
                copies = try_replicate(
                    self.em,
                    snaps[L - 2],
                    snaps[L - 1],
                    snaps[L],
                    snaps[L + 1],
                    n - 2 - L,
                    rk.registry + rk.psum_ring,
                    self._hbm,
                    L,
                    n - 1,
                )
            if copies:
                stamped = True
                rk._wpos += copies * per_layer
                rk._wemitted += copies * per_layer
                self.replicated_layers += copies
                L += copies
            L += 1
        self.layer(rk, n - 1, segs, ncol)

    def setup_constants(self, rk: _Rank) -> None:
        P = self.P
        const = rk.buf_single("const")
        rk.const = const
        # ones column [P,1] and ones row [1,P] in the matmul dtypes (used for partition sums/broadcasts)
        rk.ones_col = const.tile(DType.bf16, 1, byte=0)
        rk.ones_row = const.tile(DType.bf16, P, pcount=1, byte=16)
        rk.vec(Op.memset, dst=rk.ones_col, value=1.0)
        rk.vec(Op.memset, dst=rk.ones_row, value=1.0)
        if self.spec.rotary:
            rot = rk.buf_single("rot")
            rk.rot = rot.tile(self.kdt, P)
            src = rk.hbm(rank_tensor("rot", rk.r)).hbm(self.kdt, P, P, ((1, P),))
            rk.dma(rk.rot, src)

    def load_input(self, rk: _Rank, segs: list[Segment], ncol: int) -> None:
        if self.spec.family == "vit":
            return
        ht = math.ceil(self.spec.hidden / self.P)
        tiles = rk.tiles("x", ht, self.tc * self.adt.itemsize)
        name = rank_tensor("x", rk.r)
        tokens = self.program.tensors[name].shape[1]
        col0 = self.global_col(segs[0])
        for t in range(ht):
            rows = self.fsize(self.spec.hidden, t)
            src = rk.hbm(name).hbm(
                self.adt, rows, tokens, ((1, ncol),), byte=(t * self.P * tokens + col0) * self.adt.itemsize
            )
            rk.dma(tiles[t].tile(self.adt, ncol, pcount=rows), src)

    # ---- linear layers ------------------------------------------------------------------------
    def linear(self, rk: _Rank, wname: str, xin: list[Buf], xdt: DType, ncol: int, evict) -> None:  # noqa: ANN001
        """``y^T = W^T x^T`` tile by tile; ``evict(j, psum_tile, msz)`` consumes output tile ``j``."""
        plan = self.plans[wname]
        if self.int8:
            self.load_vec(rk, rank_tensor(wname + ".scale", rk.r))
        cur_cb = -1
        outs: list[tuple[int, Tile, int]] = []
        for sl in plan.slabs:
            if sl.cb != cur_cb:
                for j, pt, msz in outs:
                    evict(j, pt, msz)
                outs = []
                cur_cb = sl.cb
                for m0 in range(0, sl.csz, self.cols):
                    msz = min(self.cols, sl.csz - m0)
                    j = (sl.c0 + m0) // self.cols
                    outs.append((j, rk.bank().tile(DType.fp32, ncol, pcount=msz), msz))
            slab, _ = rk.next_slab(wname)
            sdt = slab.ap.dtype
            for i in range(sl.nk):
                kt = sl.kt0 + i
                ks = plan.ksize(kt)
                mov = xin[kt].tile(xdt, ncol, pcount=ks)
                for jj, (_j, pt, msz) in enumerate(outs):
                    stat = slab.buf.tile(sdt, msz, pcount=ks, byte=(i * sl.csz + jj * self.cols) * sdt.itemsize)
                    rk.mm(pt, stat, mov, acc=kt > 0)
            rk.slab_done()
        for j, pt, msz in outs:
            evict(j, pt, msz)

    def scale_tile(self, rk: _Rank, wname: str, j: int, msz: int) -> Tile | None:
        """Per-output-channel int8 scale of output tile j (the op's whole scale vector is loaded once)."""
        if not self.int8:
            return None
        slot = self.load_vec(rk, rank_tensor(wname + ".scale", rk.r))
        return slot.tile(DType.fp32, 1, pcount=msz, byte=j * 4)

    def evict_copy(
        self,
        rk: _Rank,
        dst: Tile,
        pt: Tile,
        scale: Tile | None,
        bias: Tile | None = None,
        func: ActFunc = ActFunc.identity,
    ) -> None:
        if scale is None and bias is None and func == ActFunc.identity:
            rk.vec(Op.tensor_copy, dst=dst, src=pt)
        else:
            kw: dict[str, object] = {}
            if scale is not None:
                kw["scale"] = scale
            if bias is not None:
                kw["bias"] = bias
            rk.act(func, dst, pt, **kw)

    # ---- norms --------------------------------------------------------------------------------
    def norm(self, rk: _Rank, wname: str, xin: list[Buf], ncol: int, out: list[Buf], odt: DType) -> None:
        """RMSNorm or LayerNorm over features (partitions and tiles) of ``xin`` into ``out`` (dtype odt)."""
        spec, P = self.spec, self.P
        ht = math.ceil(spec.hidden / P)
        layer = spec.norm == "layer"
        g = rk.buf_single("gamma")
        gt = g.tile(DType.fp32, (2, ht) if layer else ht)
        nvec = 2 if layer else 1
        rk.dma(
            gt,
            rk.hbm(rank_tensor(wname, rk.r)).hbm(DType.fp32, P, ht, ((P * ht, nvec), (1, ht)) if layer else ((1, ht),)),
        )
        # partition sums: sum x^2 (and sum x) into PSUM rows via ones-vector matmuls
        ss = rk.bank().tile(DType.fp32, ncol, pcount=1)
        s1 = rk.bank().tile(DType.fp32, ncol, pcount=1) if layer else None
        sq = [rk.buf_single("sq0"), rk.buf_single("sq1")]
        for t in range(ht):
            rows = self.fsize(spec.hidden, t)
            x = xin[t].tile(self.adt, ncol, pcount=rows)
            sqt = sq[t % 2].tile(DType.bf16, ncol, pcount=rows)
            rk.act(ActFunc.square, sqt, x)
            rk.mm(ss, rk.ones_col.buf.tile(DType.bf16, 1, pcount=rows), sqt, acc=t > 0)
            if layer:
                rk.mm(
                    s1,
                    rk.ones_col.buf.tile(DType.bf16, 1, pcount=rows),
                    x if self.adt == DType.bf16 else sqt,
                    acc=t > 0,
                )
        h = float(spec.hidden)
        ns = rk.buf_single("nstat")
        r_f = ns.tile(DType.fp32, ncol, pcount=1)
        if layer:
            mean = ns.tile(DType.fp32, ncol, pcount=1, byte=self.tc * 4)
            rk.vec(Op.tensor_scalar, dst=mean, src=s1, op0=AluOp.mul, imm0=1.0 / h)
            # var = ss/h - mean^2 ; r = rsqrt(var + eps)
            rk.vec(Op.tensor_tensor, dst=r_f, in0=mean, in1=mean, op=AluOp.mul)
            rk.vec(Op.tensor_scalar, dst=r_f, src=r_f, op0=AluOp.mul, imm0=-h)  # -h*mean^2
            rk.vec(Op.tensor_tensor, dst=r_f, in0=ss, in1=r_f, op=AluOp.add)  # ss - h*mean^2
            rk.act(ActFunc.rsqrt, r_f, r_f, scale_imm=1.0 / h, bias_imm=spec.norm_eps)
        else:
            rk.act(ActFunc.rsqrt, r_f, ss, scale_imm=1.0 / h, bias_imm=spec.norm_eps)
        rrow = rk.buf_single("rrow").tile(DType.bf16, ncol, pcount=1)
        rk.vec(Op.tensor_copy, dst=rrow, src=r_f)
        rbc = rk.bank().tile(DType.fp32, ncol)
        rk.mm(rbc, rk.ones_row, rrow, acc=False)  # broadcast r over partitions
        rb = rk.buf_single("rbc").tile(DType.fp32, ncol)
        rk.vec(Op.tensor_copy, dst=rb, src=rbc)
        if layer:
            mrow = rk.buf_single("rrow").tile(DType.bf16, ncol, pcount=1)
            rk.vec(Op.tensor_copy, dst=mrow, src=ns.tile(DType.fp32, ncol, pcount=1, byte=self.tc * 4))
            mbc = rk.bank().tile(DType.fp32, ncol)
            rk.mm(mbc, rk.ones_row, mrow, acc=False)
            mb = rk.buf_single("mbc").tile(DType.fp32, ncol)
            rk.vec(Op.tensor_copy, dst=mb, src=mbc)
        for t in range(ht):
            rows = self.fsize(spec.hidden, t)
            x = xin[t].tile(self.adt, ncol, pcount=rows)
            tmp = sq[t % 2].tile(DType.bf16, ncol, pcount=rows)
            if layer:
                tmp32 = tmp
                rk.vec(Op.tensor_tensor, dst=tmp32, in0=x, in1=mb.buf.tile(DType.fp32, ncol, pcount=rows), op=AluOp.sub)
                rk.vec(
                    Op.tensor_tensor, dst=tmp32, in0=tmp32, in1=rb.buf.tile(DType.fp32, ncol, pcount=rows), op=AluOp.mul
                )
                rk.vec(
                    Op.tensor_scalar,
                    dst=out[t].tile(odt, ncol, pcount=rows),
                    src=tmp32,
                    scalar0=g.tile(DType.fp32, 1, pcount=rows, byte=t * 4),
                    op0=AluOp.mul,
                    scalar1=g.tile(DType.fp32, 1, pcount=rows, byte=(ht + t) * 4),
                    op1=AluOp.add,
                )
            else:
                rk.vec(Op.tensor_tensor, dst=tmp, in0=x, in1=rb.buf.tile(DType.fp32, ncol, pcount=rows), op=AluOp.mul)
                rk.act(
                    ActFunc.identity,
                    out[t].tile(odt, ncol, pcount=rows),
                    tmp,
                    scale=g.tile(DType.fp32, 1, pcount=rows, byte=t * 4),
                )

    # ---- a transformer layer ------------------------------------------------------------------
    def layer(self, rk: _Rank, L: int, segs: list[Segment], ncol: int) -> None:
        with self.em.tagged(OpClass.norm, L):
            self._layer(rk, L, segs, ncol)

    def _layer(self, rk: _Rank, L: int, segs: list[Segment], ncol: int) -> None:
        spec, P = self.spec, self.P
        # every layer starts from the same ring positions; where "other" DMAs share the weight queues they
        # start half-way round so they do not pile up on the queue that carries the layer's first slab
        rk._bank = rk._dq = rk._kv_slot = rk._vec = 0
        rk._vec_cache = {}
        rk._q_other = 0 if self.other_q0 else self.other_queues // 2
        ht = math.ceil(spec.hidden / P)
        x = rk.tiles("x", ht, self.tc * self.adt.itemsize)
        post = spec.family in ("bert", "roberta")
        if post:
            xn = x
            xdt = self.adt
            if self.mdt != self.adt:
                xn = rk.tiles("xn", ht, self.tc * self.mdt.itemsize)
                for t in range(ht):
                    rows = self.fsize(spec.hidden, t)
                    rk.vec(
                        Op.tensor_copy,
                        dst=xn[t].tile(self.mdt, ncol, pcount=rows),
                        src=x[t].tile(self.adt, ncol, pcount=rows),
                    )
                xdt = self.mdt
        else:
            xn = rk.tiles("xn", ht, self.tc * self.mdt.itemsize)
            self.norm(rk, f"L{L}.attn_norm", x, ncol, xn, self.mdt)
            xdt = self.mdt
        self.attention_block(rk, L, segs, ncol, xn, xdt)
        self.em.op_class = OpClass.norm
        if post:
            self.norm(rk, f"L{L}.attn_norm", x, ncol, x, self.adt)
            xn2 = x if self.mdt == self.adt else rk.tiles("xn2", ht, self.tc * self.mdt.itemsize)
            if xn2 is not x:
                for t in range(ht):
                    rows = self.fsize(spec.hidden, t)
                    rk.vec(
                        Op.tensor_copy,
                        dst=xn2[t].tile(self.mdt, ncol, pcount=rows),
                        src=x[t].tile(self.adt, ncol, pcount=rows),
                    )
        else:
            xn2 = rk.tiles("xn2", ht, self.tc * self.mdt.itemsize)
            self.norm(rk, f"L{L}.mlp_norm", x, ncol, xn2, self.mdt)
        if spec.is_moe:
            self.moe_block(rk, L, ncol, xn2)
        else:
            self.mlp_block(rk, L, ncol, xn2)
        if post:
            self.em.op_class = OpClass.norm
            self.norm(rk, f"L{L}.mlp_norm", x, ncol, x, self.adt)

    def bias_tile(self, rk: _Rank, name: str, which: int, n_vec: int, j: int, msz: int, ncols: int) -> Tile:
        slot = self.load_vec(rk, rank_tensor(name, rk.r), which if n_vec > 1 else 0)
        return slot.tile(DType.fp32, 1, pcount=msz, byte=j * 4)

    def residual_evict(self, rk: _Rank, L: int, name: str, which_bias: int, ncol: int) -> object:
        """Eviction for o_proj/down_proj: (+bias), all-reduce over TP, add into the residual x."""
        spec = self.spec
        ht = math.ceil(spec.hidden / self.P)
        x = rk.tiles("x", ht, self.tc * self.adt.itemsize)
        ao = rk.tiles("ao", ht, self.tc * self.adt.itemsize)
        if spec.qkv_bias:
            self.load_vec(rk, rank_tensor(f"L{L}.bo_down", rk.r), which_bias)

        def ev(j: int, pt: Tile, msz: int) -> None:
            scale = self.scale_tile(rk, name, j, msz)
            bias = self.bias_tile(rk, f"L{L}.bo_down", which_bias, 2, j, msz, ncol) if spec.qkv_bias else None
            xt = x[j].tile(self.adt, ncol, pcount=msz)
            if self.tp == 1 and scale is None and bias is None:
                rk.vec(Op.tensor_tensor, dst=xt, in0=pt, in1=xt, op=AluOp.add)
                return
            if self.tp > 1:
                # bias added once: by rank 0 only
                b = bias if rk.r == 0 else None
                a = ao[j].tile(self.adt, ncol, pcount=msz)
                self.evict_copy(rk, a, pt, scale, b)
                return
            a = ao[j].tile(self.adt, ncol, pcount=msz)
            self.evict_copy(rk, a, pt, scale, bias)
            with self.em.tagged(OpClass.residual):
                rk.vec(Op.tensor_tensor, dst=xt, in0=a, in1=xt, op=AluOp.add)

        return ev

    def all_reduce_residual(self, rk: _Rank, ncol: int) -> None:
        if self.tp == 1:
            return
        spec = self.spec
        ht = math.ceil(spec.hidden / self.P)
        x = rk.tiles("x", ht, self.tc * self.adt.itemsize)
        ao = rk.tiles("ao", ht, self.tc * self.adt.itemsize)
        # one all-reduce over the whole partial output (all tiles, contiguous in the ao role)
        whole = rk.single.get("ao_all")
        if whole is None:  # the whole partial output (all tiles); aliases order it with every tile
            whole = Buf(
                f"ao_all.c{rk.core}",
                Space.sbuf,
                rk.core,
                0,
                self.P,
                self.role_off["ao"],
                ht * self.tc * self.adt.itemsize,
            )
            link_aliases(rk.registry, whole)
            rk.single["ao_all"] = whole
        rows = min(self.P, spec.hidden)
        t = whole.tile(self.adt, dims=((self.tc, ht), (1, ncol)), pcount=rows)
        with self.em.tagged(OpClass.collective):
            self.em.emit(Op.all_reduce, rk.core, Engine.cc, 0, dst=t, src=t, group="tp", op=ReduceOp.add)
        self.em.op_class = OpClass.residual
        for j in range(ht):
            msz = self.fsize(spec.hidden, j)
            xt = x[j].tile(self.adt, ncol, pcount=msz)
            rk.vec(Op.tensor_tensor, dst=xt, in0=ao[j].tile(self.adt, ncol, pcount=msz), in1=xt, op=AluOp.add)

    def attention_block(self, rk: _Rank, L: int, segs: list[Segment], ncol: int, xn: list[Buf], xdt: DType) -> None:
        spec, P, hd = self.spec, self.P, self.hd
        kb = self.kdt
        qt = math.ceil(self.heads_r * hd / P)
        kt = math.ceil(self.kvh_r * hd / P)
        q = rk.tiles("q", qt, self.tc * kb.itemsize)
        k = rk.tiles("k", kt, self.tc * kb.itemsize)
        v = rk.tiles("v", kt, self.tc * kb.itemsize)
        bias = spec.qkv_bias

        def ev_to(dst: list[Buf], nfeat: int, name: str, which: int):  # noqa: ANN202
            def ev(j: int, pt: Tile, msz: int) -> None:
                scale = self.scale_tile(rk, name, j, msz)
                b = self.bias_tile(rk, f"L{L}.bqkv", which, 3, j, msz, ncol) if bias else None
                self.evict_copy(rk, dst[j].tile(kb, ncol, pcount=msz), pt, scale, b)

            return ev

        em = self.em
        em.op_class = OpClass.qkv
        if bias:  # the whole bias vectors, loaded once before the projections (off the eviction path)
            for which in range(3):
                self.load_vec(rk, rank_tensor(f"L{L}.bqkv", rk.r), which)
        self.linear(rk, f"L{L}.wq", xn, xdt, ncol, ev_to(q, self.heads_r * hd, f"L{L}.wq", 0))
        self.linear(rk, f"L{L}.wk", xn, xdt, ncol, ev_to(k, self.kvh_r * hd, f"L{L}.wk", 1))
        self.linear(rk, f"L{L}.wv", xn, xdt, ncol, ev_to(v, self.kvh_r * hd, f"L{L}.wv", 2))
        if spec.rotary:
            em.op_class = OpClass.rope
            self.load_rope(rk, segs)  # once for q and k (a reload would wait for q's rotation to finish)
            self.rope(rk, ncol, q, qt, self.heads_r)
            self.rope(rk, ncol, k, kt, self.kvh_r)
        attn = rk.tiles("attn", qt, self.tc * self.mdt.itemsize)
        if spec.kind == "decoder":
            em.op_class = OpClass.kv_write
            self.kv_write(rk, L, segs, k, v)
        for seg in segs:
            for g in range(self.kvh_r):
                self.attend(rk, L, seg, g, q, k, v, attn)
        em.op_class = OpClass.o_proj
        self.linear(rk, f"L{L}.wo", attn, self.mdt, ncol, self.residual_evict(rk, L, f"L{L}.wo", 0, ncol))
        self.all_reduce_residual(rk, ncol)

    def load_rope(self, rk: _Rank, segs: list[Segment]) -> None:
        """The cos/sin columns of the chunk's token positions (``cos``/``sin`` roles)."""
        P, kb = self.P, self.kdt
        tab = rk.hbm(rank_tensor("rope", rk.r))
        for which, buf in ((0, rk.buf_single("cos")), (1, rk.buf_single("sin"))):
            rk.em.new_write_epoch(buf)
            for seg in segs:
                src = tab.hbm(
                    kb, P, self.max_ctx, ((1, seg.n),), byte=(which * P * self.max_ctx + seg.t0) * kb.itemsize
                )
                rk.dma(buf.tile(kb, seg.n, byte=seg.c0 * kb.itemsize), src, partial=True)

    def rope(self, rk: _Rank, ncol: int, tiles: list[Buf], nt: int, nheads: int) -> None:
        P, kb = self.P, self.kdt
        cos = rk.buf_single("cos")
        sin = rk.buf_single("sin")
        rt = rk.buf_single("rt0")
        for t in range(nt):
            rows = min(P, nheads * self.hd - t * P)
            x = tiles[t].tile(kb, ncol, pcount=rows)
            rot = rk.bank().tile(DType.fp32, ncol, pcount=rows)
            rk.mm(rot, rk.rot.buf.tile(kb, rows, pcount=rows), x, acc=False)
            tmp = rt.tile(DType.fp32, ncol, pcount=rows)
            rk.vec(Op.tensor_tensor, dst=tmp, in0=rot, in1=sin.tile(kb, ncol, pcount=rows), op=AluOp.mul)
            rk.vec(Op.tensor_tensor, dst=x, in0=x, in1=cos.tile(kb, ncol, pcount=rows), op=AluOp.mul)
            rk.vec(Op.tensor_tensor, dst=x, in0=x, in1=tmp, op=AluOp.add)

    def kv_write(self, rk: _Rank, L: int, segs: list[Segment], k: list[Buf], v: list[Buf]) -> None:
        P, hd, kb = self.P, self.hd, self.kdt
        decode = self.wl.phase == "decode"
        kname, vname = rank_tensor(f"L{L}.k_cache", rk.r), rank_tensor(f"L{L}.v_cache", rk.r)
        kc = self.hbm_region(kname, "new") if decode else rk.hbm(kname)
        vc = self.hbm_region(vname, "new") if decode else rk.hbm(vname)
        nblk = self.max_ctx // P
        rk.em.new_write_epoch(kc)
        rk.em.new_write_epoch(vc)
        vrows = [rk.buf_single(f"vrow{i}") for i in range(V_ROW_SLOTS)]  # one buffer each: tracked apart
        nv = 0
        if decode and all(sg.n == 1 for sg in segs):
            self.stage_new_v(rk, segs, v)
        for seg in segs:
            for g in range(self.kvh_r):
                ti, p0 = self.head_loc(g)
                src = k[ti].tile(kb, seg.n, pcount=hd, pstart=p0, byte=seg.c0 * kb.itemsize)
                off = ((seg.b * self.kvh_r + g) * hd * self.max_ctx + seg.t0) * kb.itemsize
                rk.dma(kc.hbm(kb, hd, self.max_ctx, ((1, seg.n),), byte=off), src, partial=True)
                if decode and seg.n == 1:
                    # one token: its staged V row (partition = chunk column) is one contiguous cache row
                    t = seg.t0
                    off = ((((seg.b * self.kvh_r + g) * P + t % P) * nblk) + t // P) * hd * kb.itemsize
                    row = rk.buf_single("vstage").tile(kb, hd, pcount=1, pstart=seg.c0 % P, byte=g * hd * kb.itemsize)
                    rk.dma(vc.hbm(kb, 1, nblk * hd, ((1, hd),), byte=off), row, partial=True)
                    continue
                # V: transpose [hd, n] -> [n, hd] rows, then store token rows partition-major
                t = seg.t0
                while t < seg.t1:
                    n = min(seg.t1 - t, P - t % P)
                    col = seg.c0 + (t - seg.t0)
                    rowt = vrows[nv % V_ROW_SLOTS].tile(kb, hd, pcount=n)
                    nv += 1
                    self.transpose_into(rk, rowt, v[ti].tile(kb, n, pcount=hd, pstart=p0, byte=col * kb.itemsize))
                    off = ((((seg.b * self.kvh_r + g) * P + t % P) * nblk) + t // P) * hd * kb.itemsize
                    rk.dma(vc.hbm(kb, n, nblk * hd, ((1, hd),), byte=off), rowt, partial=True)
                    t += n

    def transpose_into(self, rk: _Rank, dst: Tile, src: Tile) -> None:
        """``dst[F, P] = src[P, F]^T``: a TensorE transpose into the next PSUM bank, then a vector copy out."""
        pt = rk.bank().tile(DType.fp32, dst.ap.free_size, pcount=dst.ap.partitions)
        self.em.emit(Op.transpose, rk.core, Engine.tensor, dst=pt, src=src)
        rk.vec(Op.tensor_copy, dst=dst, src=pt)

    def stage_new_v(self, rk: _Rank, segs: list[Segment], v: list[Buf]) -> None:
        """Decode: transpose each kv head's new V columns ``[hd, sequences]`` into rows ``[sequences, hd]``
        (one TensorE transpose per kv head) into the ``vstage`` role."""
        P, hd, kb = self.P, self.hd, self.kdt
        stage = rk.buf_single("vstage")
        ncol = len(segs)
        if ncol > P:
            raise LoweringError(f"decode batch {ncol} > {P} sequences per chunk is not supported by V staging")
        for g in range(self.kvh_r):
            ti, p0 = self.head_loc(g)
            self.transpose_into(
                rk,
                stage.tile(kb, hd, pcount=ncol, byte=g * hd * kb.itemsize),
                v[ti].tile(kb, ncol, pcount=hd, pstart=p0, byte=segs[0].c0 * kb.itemsize),
            )

    def split_load(
        self,
        rk: _Rank,
        dst: Buf,
        p0: int,
        rows: int,
        cols: int,
        src: Buf,
        row_stride: int,
        byte: int,
        epoch: bool = True,
    ) -> None:
        """Load ``rows`` x ``cols`` elements (HBM rows ``row_stride`` apart) into partitions ``p0..`` of
        ``dst``, as several DMAs over partition groups on different queues."""
        kb = self.kdt
        parts = max(1, min(rows // 16, self.other_queues // 2))
        per = math.ceil(rows / parts)
        if epoch:
            rk.em.new_write_epoch(dst)
        for r0 in range(0, rows, per):
            n = min(per, rows - r0)
            rk.dma(
                dst.tile(kb, cols, pcount=n, pstart=p0 + r0),
                src.hbm(kb, n, row_stride, ((1, cols),), byte=byte + r0 * row_stride * kb.itemsize),
                partial=True,
            )

    def attend(
        self, rk: _Rank, L: int, seg: Segment, g: int, q: list[Buf], k: list[Buf], v: list[Buf], attn: list[Buf]
    ) -> None:
        """Attention of the query tokens of ``seg`` for the q heads of kv head ``g``."""
        spec, P, hd, kb = self.spec, self.P, self.hd, self.kdt
        causal_prefill = spec.causal and self.wl.phase == "prefill"
        kv_len_all = seg.t1  # keys 0 .. t1 (decoder: the cache up to this token; encoder: the sequence)
        lo = 0
        if spec.sliding_window:
            lo = max(0, kv_len_all - int(spec.sliding_window))
        kv_len = kv_len_all - lo
        nblk = self.max_ctx // P
        heads = [h for h in range(g * self.group, min((g + 1) * self.group, self.heads_r))]
        stack = (not causal_prefill) and seg.n == 1 and hd == P
        em = self.em
        em.op_class = OpClass.kv_load
        slot = rk._kv_slot
        rk._kv_slot ^= 1
        kbuf = rk.buf_single(f"kbuf{slot}")
        vbuf = rk.buf_single(f"vbuf{slot}")
        ti_k, p0_k = self.head_loc(g)
        if spec.kind == "decoder":
            kname, vname = rank_tensor(f"L{L}.k_cache", rk.r), rank_tensor(f"L{L}.v_cache", rk.r)
            decode = self.wl.phase == "decode" and seg.n == 1
            kc = self.hbm_region(kname, "old") if decode else rk.hbm(kname)
            vc = self.hbm_region(vname, "old") if decode else rk.hbm(vname)
            n_hbm = kv_len - 1 if decode else kv_len  # decode: the new token comes from SBUF
            old_all = kv_len_all - 1 if decode else kv_len_all
            off = ((seg.b * self.kvh_r + g) * hd * self.max_ctx + lo) * kb.itemsize
            if n_hbm > 0:  # split over partition groups on several queues (the DMA engines work in parallel)
                self.split_load(rk, kbuf, p0_k, hd, n_hbm, kc, self.max_ctx, off)
            # V rows: all blocks of this (b, g), partition-major
            voff = ((seg.b * self.kvh_r + g) * P * nblk) * hd * kb.itemsize
            if decode:
                # cached rows of full blocks, then the partial last block: the new token's slot is left out
                # so that its row (from vstage) can be written in parallel in the same write epoch
                full, rem = divmod(old_all, P)
                rk.em.new_write_epoch(vbuf)
                if full:
                    self.split_load(rk, vbuf, 0, P, full * hd, vc, nblk * hd, voff, epoch=False)
                if rem:
                    self.split_load(rk, vbuf, 0, rem, hd, vc, nblk * hd, voff + full * hd * kb.itemsize, epoch=False)
            elif old_all > 0:
                vblk = math.ceil(old_all / P)
                vrows = min(P, old_all)
                self.split_load(rk, vbuf, 0, vrows, vblk * hd, vc, nblk * hd, voff)
            if decode:
                t = seg.t1 - 1  # position of the new token
                rk.vec(
                    Op.tensor_copy,
                    dst=kbuf.tile(kb, 1, pcount=hd, pstart=p0_k, byte=(t - lo) * kb.itemsize),
                    src=k[ti_k].tile(kb, 1, pcount=hd, pstart=p0_k, byte=seg.c0 * kb.itemsize),
                )
                rk.dma(
                    vbuf.tile(kb, hd, pcount=1, pstart=t % P, byte=(t // P) * hd * kb.itemsize),
                    rk.buf_single("vstage").tile(kb, hd, pcount=1, pstart=seg.c0 % P, byte=g * hd * kb.itemsize),
                    partial=True,
                )
        # (encoder: keys/values of this sequence are the chunk's own k/v tiles, read in place below)
        sc = rk.buf_single("sc")
        pr = rk.buf_single("pr")
        st = rk.buf_single("stats")
        blk_n = min(self.chip.tensor_engine.moving_free_max, self.bank_bytes // 4)
        groups = [heads] if stack else [[h] for h in heads]
        for hs in groups:
            qblocks = [(0, 1)] if stack else [(t, min(P, seg.n - t)) for t in range(0, seg.n, P)]
            for tq0, nq in qblocks:
                rows = len(hs) if stack else nq
                ti, p0 = self.head_loc(hs[0])
                col = seg.c0 + tq0
                if stack:
                    qs = q[ti].tile(kb, dims=((self.tc, len(hs)),), pstart=p0, pcount=hd, byte=col * kb.itemsize)
                else:
                    qs = q[ti].tile(kb, nq, pstart=p0, pcount=hd, byte=col * kb.itemsize)
                # causal: query token positions seg.t0+tq0 .. ; keys lo .. lo+kv_len
                qpos0 = seg.t0 + tq0
                n_keys = min(kv_len, qpos0 + nq - lo) if causal_prefill else kv_len
                scores = sc.tile(DType.fp32, n_keys, pcount=rows)
                em.op_class = OpClass.attn_scores
                for k0 in range(0, n_keys, blk_n):
                    nk = min(blk_n, n_keys - k0)
                    ps = rk.bank().tile(DType.fp32, nk, pcount=rows)
                    if spec.kind == "decoder":
                        mv = kbuf.tile(kb, nk, pcount=hd, pstart=p0_k, byte=k0 * kb.itemsize)
                    else:
                        mv = k[ti_k].tile(kb, nk, pcount=hd, pstart=p0_k, byte=(seg.c0 - seg.t0 + k0) * kb.itemsize)
                    rk.mm(ps, qs, mv, acc=False)
                    dst = sc.tile(DType.fp32, nk, pcount=rows, byte=k0 * 4)
                    if causal_prefill and lo + k0 + nk > qpos0:
                        mk = rk.buf_single("mask").tile(DType.fp32, nk, pcount=rows)
                        # value = key_pos - query_pos; masked where > 0
                        self.em.emit(
                            Op.iota,
                            rk.core,
                            Engine.gpsimd,
                            dst=rk.buf_single("mask").tile(DType.int32, nk, pcount=rows),
                            base=lo + k0 - qpos0,
                            channel_multiplier=-1,
                            multipliers=(1,),
                        )
                        rk.vec(
                            Op.tensor_scalar,
                            dst=mk,
                            src=rk.buf_single("mask").tile(DType.int32, nk, pcount=rows),
                            op0=AluOp.gt,
                            imm0=0.0,
                            op1=AluOp.mul,
                            imm1=-30000.0,
                        )
                        rk.vec(Op.tensor_tensor, dst=dst, in0=ps, in1=mk, op=AluOp.add)
                    else:
                        rk.vec(Op.tensor_copy, dst=dst, src=ps)
                m = st.tile(DType.fp32, 1, pcount=rows, byte=0)
                nb = st.tile(DType.fp32, 1, pcount=rows, byte=4)
                ssum = st.tile(DType.fp32, 1, pcount=rows, byte=8)
                scale = 1.0 / math.sqrt(hd)
                em.op_class = OpClass.softmax
                rk.vec(Op.tensor_reduce, dst=m, src=scores, op=ReduceOp.max, axes=1)
                rk.vec(Op.tensor_scalar, dst=nb, src=m, op0=AluOp.mul, imm0=-scale)
                probs = pr.tile(kb, n_keys, pcount=rows)
                rk.act(ActFunc.exp, probs, scores, bias=nb, scale_imm=scale, reduce_dst=ssum)
                rk.act(ActFunc.reciprocal, ssum, ssum)
                rk.vec(Op.tensor_scalar, dst=probs, src=probs, scalar0=ssum, op0=AluOp.mul)
                # out^T [hd, rows] = sum over key blocks V_blk^T . P^T
                em.op_class = OpClass.attn_pv
                po = rk.bank().tile(DType.fp32, rows, pcount=hd, pstart=p0)  # lane-aligned with the head
                pts = [rk.buf_single("pt0"), rk.buf_single("pt1")]
                nkb = math.ceil(n_keys / P)

                def stage(bi: int, n_keys: int = n_keys, rows: int = rows, pts: list[Buf] = pts) -> tuple[Tile, Tile]:
                    """P^T (and, encoder, V) of key block ``bi``, ready for its P x V matmul."""
                    k0 = bi * P
                    nk = min(P, n_keys - k0)
                    ptile = pts[bi % 2].tile(kb, rows, pcount=nk)
                    self.transpose_into(rk, ptile, pr.tile(kb, nk, pcount=rows, byte=k0 * kb.itemsize))
                    kpos = lo + k0  # absolute key position of this block's first key
                    if spec.kind == "decoder":
                        # key kpos+i lives at partition (kpos+i) % P, block (kpos+i) // P; lowering keeps
                        # blocks aligned: lo and k0 are multiples of P except with a sliding window
                        if kpos % P:
                            raise LoweringError("sliding-window start not aligned to the partition count")
                        return ptile, vbuf.tile(kb, hd, pcount=nk, byte=(kpos // P) * hd * kb.itemsize)
                    vti, vp0 = self.head_loc(g)
                    # encoder: V^T tile [hd, tokens] -> need [keys, hd]: transpose the block
                    vs = vbuf.tile(kb, hd, pcount=nk, byte=(bi % 2) * hd * kb.itemsize)
                    self.transpose_into(
                        rk, vs, v[vti].tile(kb, nk, pcount=hd, pstart=vp0, byte=(seg.c0 - seg.t0 + k0) * kb.itemsize)
                    )
                    return ptile, vs

                # software-pipelined: block bi+1's transposes are issued before block bi's matmul, so the
                # TensorE transposes the next block while the VectorE copies this one out of PSUM
                staged = stage(0)
                for bi in range(nkb):
                    nxt = stage(bi + 1) if bi + 1 < nkb else None
                    rk.mm(po, staged[1], staged[0], acc=bi > 0)
                    if nxt is not None:
                        staged = nxt
                # evict into the attention output tiles
                if stack:
                    dst = attn[ti].tile(
                        self.mdt, dims=((self.tc, len(hs)),), pstart=p0, pcount=hd, byte=col * self.mdt.itemsize
                    )
                else:
                    dst = attn[ti].tile(self.mdt, nq, pstart=p0, pcount=hd, byte=col * self.mdt.itemsize)
                rk.vec(Op.tensor_copy, dst=dst, src=po)

    # ---- MLP ----------------------------------------------------------------------------------
    def mlp_block(self, rk: _Rank, L: int, ncol: int, xn2: list[Buf], prefix: str = "", h_role: str = "h") -> None:
        spec, P = self.spec, self.P
        it = math.ceil(self.inter_r / P)
        h = rk.tiles(h_role, it, self.tc * self.mdt.itemsize)
        func = {"silu": ActFunc.silu, "gelu": ActFunc.gelu, "gelu_tanh": ActFunc.gelu_tanh, "relu": ActFunc.relu}[
            spec.activation
        ]
        pre = f"L{L}.{prefix}"
        self.em.op_class = OpClass.mlp_up
        if spec.gated_mlp:
            gact = rk.buf_single("gact")
            gates: dict[int, Tile] = {}

            def ev_gate(j: int, pt: Tile, msz: int) -> None:
                scale = self.scale_tile(rk, pre + "w_gate", j, msz)
                # activation of the gate goes straight into h; the up eviction multiplies in place
                self.evict_copy(rk, h[j].tile(self.mdt, ncol, pcount=msz), pt, scale, None, func)
                gates[j] = h[j].tile(self.mdt, ncol, pcount=msz)

            def ev_up(j: int, pt: Tile, msz: int) -> None:
                scale = self.scale_tile(rk, pre + "w_up", j, msz)
                src = pt
                if scale is not None:
                    tmp = gact.tile(DType.fp32, ncol, pcount=msz)
                    rk.act(ActFunc.identity, tmp, pt, scale=scale)
                    src = tmp
                hj = h[j].tile(self.mdt, ncol, pcount=msz)
                rk.vec(Op.tensor_tensor, dst=hj, in0=src, in1=gates[j], op=AluOp.mul)

            self.linear(rk, pre + "w_gate", xn2, self.mdt, ncol, ev_gate)
            self.linear(rk, pre + "w_up", xn2, self.mdt, ncol, ev_up)
        else:

            def ev_up1(j: int, pt: Tile, msz: int) -> None:
                scale = self.scale_tile(rk, pre + "w_up", j, msz)
                b = self.bias_tile(rk, f"L{L}.b_up", 0, 1, j, msz, ncol) if spec.qkv_bias else None
                self.evict_copy(rk, h[j].tile(self.mdt, ncol, pcount=msz), pt, scale, b, func)

            if spec.qkv_bias:
                self.load_vec(rk, rank_tensor(f"L{L}.b_up", rk.r), 0)
            self.linear(rk, pre + "w_up", xn2, self.mdt, ncol, ev_up1)
        if prefix:
            return
        self.em.op_class = OpClass.mlp_down
        self.linear(rk, pre + "w_down", h, self.mdt, ncol, self.residual_evict(rk, L, pre + "w_down", 1, ncol))
        self.all_reduce_residual(rk, ncol)

    def moe_block(self, rk: _Rank, L: int, ncol: int, xn2: list[Buf]) -> None:
        """Router (matmul + softmax) and the touched experts, each over its statically routed tokens."""
        spec, P = self.spec, self.P
        e = spec.num_experts
        route = rk.buf_single("route")
        rl = route.tile(DType.fp32, ncol, pcount=e)

        def ev_r(j: int, pt: Tile, msz: int) -> None:
            rk.act(ActFunc.exp, rl, pt)

        self.em.op_class = OpClass.moe_router
        self.linear(rk, f"L{L}.router", xn2, self.mdt, ncol, ev_r)
        ht = math.ceil(spec.hidden / P)
        x = rk.tiles("x", ht, self.tc * self.adt.itemsize)
        for ex in self.experts_touched():
            self.mlp_block(rk, L, ncol, xn2, prefix=f"e{ex}.", h_role="h")
            it = math.ceil(self.inter_r / P)
            h = rk.tiles("h", it, self.tc * self.mdt.itemsize)

            def ev_d(j: int, pt: Tile, msz: int) -> None:
                xt = x[j].tile(self.adt, ncol, pcount=msz)
                rk.vec(Op.tensor_tensor, dst=xt, in0=pt, in1=xt, op=AluOp.add)

            self.em.op_class = OpClass.mlp_down
            self.linear(rk, f"L{L}.e{ex}.w_down", h, self.mdt, ncol, ev_d)

    # ---- chunk end and head -------------------------------------------------------------------
    def chunk_end(self, rk: _Rank, segs: list[Segment], ncol: int) -> None:
        with self.em.tagged(OpClass.output_dma if self.spec.kind == "encoder" and self.spec.family != "vit"
                            else OpClass.head):
            self._chunk_end(rk, segs, ncol)

    def _chunk_end(self, rk: _Rank, segs: list[Segment], ncol: int) -> None:
        spec = self.spec
        ht = math.ceil(spec.hidden / self.P)
        x = rk.tiles("x", ht, self.tc * self.adt.itemsize)
        if spec.kind == "encoder" and spec.family != "vit":
            name = rank_tensor("hidden_out", rk.r)
            tokens = self.program.tensors[name].shape[1]
            col0 = self.global_col(segs[0])
            for t in range(ht):
                rows = self.fsize(spec.hidden, t)
                rk.dma(
                    rk.hbm(name).hbm(
                        self.adt, rows, tokens, ((1, ncol),), byte=(t * self.P * tokens + col0) * self.adt.itemsize
                    ),
                    x[t].tile(self.adt, ncol, pcount=rows),
                    partial=True,
                )
            return
        # keep the last token of every sequence that ends in this chunk (the head's input)
        xl = rk.tiles("xlast", ht, self.wl.batch * self.adt.itemsize)
        seqlen = (
            (self.wl.context + self.wl.seq) if spec.kind == "decoder" else self.seq
        )
        want = 0 if spec.family == "vit" else seqlen - 1
        picks = [(seg.b, seg.c0 + want - seg.t0) for seg in segs if seg.t0 <= want < seg.t1]
        # runs of consecutive sequences in consecutive columns (decode: the whole chunk) move in one copy
        runs: list[list[int]] = []  # [first sequence, first column, count]
        for sb, col in picks:
            if runs and runs[-1][0] + runs[-1][2] == sb and runs[-1][1] + runs[-1][2] == col:
                runs[-1][2] += 1
            else:
                runs.append([sb, col, 1])
        for sb, col, n in runs:
            for t in range(ht):
                rows = self.fsize(spec.hidden, t)
                rk.vec(
                    Op.tensor_copy,
                    dst=xl[t].tile(self.adt, n, pcount=rows, byte=sb * self.adt.itemsize),
                    src=x[t].tile(self.adt, n, pcount=rows, byte=col * self.adt.itemsize),
                    partial=True,
                )

    def head(self, rk: _Rank) -> None:
        with self.em.tagged(OpClass.norm):
            self._head(rk)

    def _head(self, rk: _Rank) -> None:
        spec, P = self.spec, self.P
        ht = math.ceil(spec.hidden / P)
        b = self.wl.batch
        xl = rk.tiles("xlast", ht, b * self.adt.itemsize)
        xn = rk.tiles("xnh", ht, b * self.mdt.itemsize)
        saved = self.tc
        self.tc = b  # norm temporaries are sized for tc >= b (b <= tc always holds here)
        self.norm(rk, "final_norm", xl, b, xn, self.mdt)
        self.tc = saved
        self.em.op_class = OpClass.head
        name = "lm_head" if spec.kind == "decoder" else "classifier"
        out = rank_tensor("logits", rk.r)
        cols = [rk.buf_single(f"locol{i}") for i in range(2)]  # separate buffers: dependencies per buffer
        rows = [rk.buf_single(f"lorow{i}") for i in range(LOGIT_ROW_SLOTS)]
        ab = self.adt.itemsize
        tpb = self.s_block // self.cols  # output tiles per column block
        n = self.plans[name].n
        last_j = (n - 1) // P
        vpad = self.program.tensors[out].shape[1]
        blk: list[Buf] = []

        # logits are written as rows [sequence, vocab] (one contiguous run per sequence and column block):
        # each evicted [features, b] tile is transposed on the TensorE into the block's PSUM bank
        # [b, features], which one copy moves to SBUF and one DMA writes (b descriptors). Feature-major
        # writes would cost one DMA element per partition and queue behind the weight stream.
        def ev(j: int, pt: Tile, msz: int) -> None:
            scale = self.scale_tile(rk, name, j, msz)
            col = cols[j % 2].tile(self.adt, b, pcount=msz)
            self.evict_copy(rk, col, pt, scale)
            jj = j % tpb
            if jj == 0:
                blk[:] = [rk.bank()]
            self.em.emit(Op.transpose, rk.core, Engine.tensor, dst=blk[0].tile(DType.fp32, msz, pcount=b,
                                                                              byte=jj * P * 4), src=col)
            if jj != tpb - 1 and j != last_j:
                return
            j0 = j - jj
            width = min(n, (j + 1) * P) - j0 * P
            row = rows[(j // tpb) % LOGIT_ROW_SLOTS].tile(self.adt, width, pcount=b)
            rk.vec(Op.tensor_copy, dst=row, src=blk[0].tile(DType.fp32, width, pcount=b))
            with self.em.tagged(OpClass.output_dma):
                rk.dma(rk.hbm(out).hbm(self.adt, b, vpad, ((1, width),), byte=j0 * P * ab), row, partial=True)

        self.linear(rk, name, xn, self.mdt, b, ev)

    def patch_embed(self, rk: _Rank, segs: list[Segment], ncol: int) -> None:
        with self.em.tagged(OpClass.input_dma):
            self._patch_embed(rk, segs, ncol)

    def _patch_embed(self, rk: _Rank, segs: list[Segment], ncol: int) -> None:
        spec, P = self.spec, self.P
        pk = spec.num_channels * spec.patch_size**2
        kt = math.ceil(pk / P)
        ht = math.ceil(spec.hidden / P)
        name = rank_tensor("patches", rk.r)
        tokens = self.program.tensors[name].shape[1]
        xin = rk.tiles("xn", kt, self.tc * self.mdt.itemsize) if kt <= ht else None
        if xin is None:
            raise LoweringError("patch size larger than the hidden size is not supported")
        col0 = self.global_col(segs[0])
        for t in range(kt):
            rows = min(P, pk - t * P)
            rk.dma(
                xin[t].tile(self.mdt, ncol, pcount=rows),
                rk.hbm(name).hbm(
                    self.mdt, rows, tokens, ((1, ncol),), byte=(t * P * tokens + col0) * self.mdt.itemsize
                ),
            )
        x = rk.tiles("x", ht, self.tc * self.adt.itemsize)
        xin_pos = rank_tensor("x", rk.r)  # position + class embeddings, feature-major
        for t in range(ht):
            rows = self.fsize(spec.hidden, t)
            rk.dma(
                x[t].tile(self.adt, ncol, pcount=rows),
                rk.hbm(xin_pos).hbm(
                    self.adt, rows, tokens, ((1, ncol),), byte=(t * P * tokens + col0) * self.adt.itemsize
                ),
            )

        def ev(j: int, pt: Tile, msz: int) -> None:
            xt = x[j].tile(self.adt, ncol, pcount=msz)
            rk.vec(Op.tensor_tensor, dst=xt, in0=pt, in1=xt, op=AluOp.add)

        self.em.op_class = OpClass.patch_embed
        self.linear(rk, "patch_embed", xin, self.mdt, ncol, ev)


def lower(
    spec: ModelSpec, workload: Workload, chip: ChipConfig, *, token_chunk: int | None = None, replicate: bool = True
) -> Lowered:
    """Lower one step of ``spec`` under ``workload`` to a program for ``chip``.

    ``replicate=False`` emits every layer instruction by instruction (the reference for the compact
    path: both give the same program)."""
    return _Lowering(spec, workload, chip, token_chunk, replicate).run()


def rope_tables(hd: int, P: int, max_ctx: int, theta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cos [P, max_ctx], sin [P, max_ctx], rot [P, P]) for heads of ``hd`` packed P // hd per tile."""
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    pos = np.arange(max_ctx, dtype=np.float64)
    ang = np.outer(np.concatenate([inv, inv]), pos)  # [hd, ctx]
    cos = np.tile(np.cos(ang), (P // hd, 1))
    sin = np.tile(np.sin(ang), (P // hd, 1))
    rot = np.zeros((P, P))
    half = hd // 2
    for base in range(0, P, hd):
        for i in range(half):
            rot[base + i + half, base + i] = -1.0  # out[i] = -x[i + half]
            rot[base + i, base + i + half] = 1.0  # out[i + half] = x[i]
    return cos, sin, rot
