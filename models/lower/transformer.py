"""Lowering of a transformer step (op graph) to an ISA program for a chip: the orchestration.

Layout. Activations live in SBUF *feature-major*: a hidden state of ``T`` tokens is a set of tiles
``[P features, T tokens]`` (``P`` = SBUF partitions), so a linear layer is a sequence of matmuls with
the weight block as the stationary operand ``[K = P input features, M <= P output features]`` and the
activations as the moving operand ``[K, N = T tokens]``; the product ``[M, T]`` is again feature-major
(:mod:`.linear`). Weights stream from HBM in partition-major slabs (:mod:`.weights`) through a ring of
SBUF slots, loaded ahead across op boundaries (:mod:`.weight_stream`). PSUM is a ring of banks: the
eviction of one accumulation group overlaps the matmuls of the next.

The modules. :mod:`.plan` chooses the token chunk, the weight-ring depth and the SBUF placement before
anything is emitted; :mod:`.rank` holds a core's buffers and emission shortcuts; the blocks are emitted
by :mod:`.norm`, :mod:`.attention`, :mod:`.mlp` and :mod:`.head`, each instruction tagged with its
purpose and layer (:mod:`.tags`); :mod:`.emit` derives the semaphores and :mod:`.repeat` stamps out
verified periodic layers. This module declares the HBM tensors, walks the token chunks and the layers
of every rank, and owns the residual stream: the output projections of attention and MLP are added
into it, after an all-reduce of their partial outputs over the tensor-parallel ranks (Megatron column /
row split: heads and MLP features are split over cores) on the collective queue.

Token chunks. A step processes its tokens in chunks of at most ``moving_free_max`` tokens that fit in
SBUF (chosen automatically, smaller when SBUF is short). Every chunk streams the weights again (one
pass for decode); K/V of earlier chunks are read back from the HBM cache.

Dtypes. Weights bf16/fp16/fp8 feed the tensor engine directly (activations are cast to the weight dtype
by the op that produces them); int8 weights are dequantised to bf16 by the vector engine after the DMA
and their per-output-channel scales applied in the PSUM eviction. KV cache in ``kv_dtype``.

Left out: pipeline parallelism (layers over chips), sequence parallelism, overlapping the all-reduce
with the next op's matmuls; what each block leaves out is said in its module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.isa import AluOp, DType, Engine, Op, Program, ReduceOp, Space

from ..graph import Graph, Workload, build_graph
from ..spec import ModelSpec
from .alloc import LoweringError
from .attention import attention
from .emit import Buf, Emitter, Tile, link_aliases
from .head import chunk_end, head, patch_embed
from .linear import Evict, bias_tile, evict_copy, linear, scale_tile
from .mlp import mlp_up, moe
from .norm import cast, norm
from .plan import LoweringPlan, Segment, rank_tensor
from .rank import HbmBufs, Rank
from .repeat import snapshot, stamp_rank, try_replicate
from .tags import ATTENTION_CLASSES, LINEAR_CLASSES, OP_CLASS_NAMES, UNTAGGED, OpClass
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
    nops: int = 0  # nop instructions carrying waits that did not fit (op class ``sync``)
    role_off: dict[str, int] = field(default_factory=dict)  # SBUF byte offset of every role
    role_bytes: dict[str, int] = field(default_factory=dict)  # bytes per partition of every role
    #: op class (:class:`~.tags.OpClass` code) of every instruction, aligned with ``program.instr``
    op_class: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    #: transformer layer of every instruction, -1 outside the layers (see :mod:`.tags`)
    layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    replicated_layers: int = 0  # layers stamped out from a verified periodic block (see :mod:`.repeat`)
    stamped_ranks: int = 0  # ranks stamped out from a template rank (see :func:`.repeat.stamp_rank`)

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
    # per AP once (partitions, free size), then gathered per matmul: no per-instruction AP records
    free = np.prod(np.where(np.arange(4)[None, :] < aps["ndims"][:, None], aps["sizes"], 1), axis=1).astype(np.int64)
    opnd = ins["opnd"]
    st = np.take(opnd[:, 1], idx)  # (np.take gathers from a record column about twice as fast as indexing)
    k = np.take(aps["pcount"].astype(np.int64), st)
    return idx, 2 * k * np.take(free, st) * np.take(free, np.take(opnd[:, 2], idx))


class _Lowering:
    """One step's program: the plan, the program being built and its emitter, the HBM buffers."""

    def __init__(
        self, spec: ModelSpec, wl: Workload, chip: ChipConfig, token_chunk: int | None, replicate: bool = True
    ):
        self.pl = LoweringPlan(spec, wl, chip, token_chunk)
        self.program = Program(num_cores=wl.tp, cores_per_chip=chip.cores_per_chip)
        self.em = Emitter(self.program)
        self.hbm = HbmBufs(self.program)
        self.replicate = replicate
        self.replicated_layers = 0
        self.stamped_ranks = 0
        self.reserved = False  # whether layers() reserved room for the whole program
        self.chunks = 1  # token chunks of the step (set by run(); sizes the early table reservation in layers())

    def run(self) -> Lowered:
        pl = self.pl
        peak = pl.fit()
        self.declare_tensors()
        chunks = pl.segments()
        self.chunks = len(chunks)
        # ranks lower to the same instructions up to renaming (core, tensors, semaphores), but for what
        # rank_variant says: each variant is lowered once and stamped out for its other ranks
        templates: dict[object, tuple[int, int, int, int]] = {}  # variant -> (start, stop, rank, stamped layers)
        for r in range(pl.tp):
            t = templates.get(self.rank_variant(r)) if self.replicate else None
            if t is not None:
                self.program.reserve((pl.tp - r) * (t[1] - t[0]))  # room for the ranks left, in one step
            if t is not None and stamp_rank(self.em, t[0], t[1], t[2], r, self.hbm.bufs):
                self.replicated_layers += t[3]
                self.stamped_ranks += 1
                continue
            start, stamped = len(self.program), self.replicated_layers
            rk = Rank(pl, self.em, self.hbm, r)
            rk.ws.plan(pl.weight_groups([sum(seg.n for seg in c) for c in chunks]))
            self.lower_rank(rk, chunks)
            templates.setdefault(self.rank_variant(r), (start, len(self.program), r, self.replicated_layers - stamped))
        if len(self.em.tags) != len(self.program):
            raise AssertionError(f"{len(self.em.tags)} instruction tags for {len(self.program)} instructions")
        op_class, layer = self.em.tags.arrays()
        if (op_class == UNTAGGED).any():
            i = int(np.argmax(op_class == UNTAGGED))
            raise AssertionError(f"instruction {i} ({self.program[i].op.name}) was emitted without an op-class tag")
        return Lowered(
            program=self.program,
            graph=build_graph(pl.spec, pl.wl),
            spec=pl.spec,
            workload=pl.wl,
            chip=pl.chip,
            token_chunk=pl.tc,
            sbuf_peak_bytes=peak,
            plans=pl.plans,
            ranks=pl.tp,
            max_ctx=pl.max_ctx,
            nops=int((op_class == OpClass.sync).sum()),
            role_off=dict(pl.role_off),
            role_bytes=dict(pl.role_bytes),
            op_class=op_class,
            layer=layer,
            replicated_layers=self.replicated_layers,
            stamped_ranks=self.stamped_ranks,
        )

    def rank_variant(self, r: int) -> bool:
        """What distinguishes rank ``r``'s lowering from another rank's besides renaming: whether it adds the
        output biases (:meth:`residual_evict`). Everything else a rank emits depends on its number only
        through its core and its tensors' names (heads and features split evenly: :func:`~..graph.split`
        pads), which :func:`~.repeat.stamp_rank` renames."""
        return bool(self.pl.spec.o_bias or self.pl.spec.mlp_bias) and r == 0

    def declare_tensors(self) -> None:
        """The program's HBM tensors of every rank (:meth:`LoweringPlan.rank_tensors`: weights, norm weights,
        biases, caches, inputs, outputs); :class:`~infsim.feasibility.InfeasibleError` if a chip's share does
        not fit its HBM (:func:`infsim.feasibility.check_hbm`, the check every fidelity makes)."""
        from infsim.feasibility import check_hbm

        pl, p = self.pl, self.program
        cpc = pl.chip.cores_per_chip
        tensors = pl.rank_tensors()
        for r in range(pl.tp):
            for name, dt, shape, kind in tensors:
                p.add_tensor(rank_tensor(name, r), dt, shape, kind, r // cpc)
        if pl.tp > 1:
            p.add_group("tp", list(range(pl.tp)))
        per_chip: dict[int, int] = {}
        for t in p.tensors.values():
            per_chip[t.chip] = per_chip.get(t.chip, 0) + t.num_bytes
        check_hbm(per_chip, pl.chip, pl.spec.name, pl.tp)

    # ---- per-rank program ---------------------------------------------------------------------
    def lower_rank(self, rk: Rank, chunks: list[list[Segment]]) -> None:
        pl, em = self.pl, self.em
        spec = pl.spec
        with em.tagged(OpClass.setup, -1):
            self.setup_constants(rk)
        for segs in chunks:
            ncol = sum(s.n for s in segs)
            if spec.family == "vit":
                patch_embed(pl, rk, segs, ncol)
            else:
                # (BERT: the embeddings LayerNorm is folded into the input, the summed embeddings)
                x = rk.tiles("x", pl.ht, pl.tc * pl.adt.itemsize)
                with em.tagged(OpClass.input_dma):
                    rk.columns_dma(x, rank_tensor("x", rk.r), spec.hidden, pl.adt, pl.global_col(segs[0]), ncol)
                if spec.embed_scale != 1.0:  # Gemma: embeddings times sqrt(hidden)
                    with em.tagged(OpClass.embed):
                        for t in range(pl.ht):
                            xt = x[t].tile(pl.adt, ncol, pcount=pl.fsize(spec.hidden, t))
                            rk.vec(Op.tensor_scalar, dst=xt, src=xt, op0=AluOp.mul, imm0=spec.embed_scale)
            self.layers(rk, segs, ncol)
            chunk_end(pl, rk, segs, ncol)
            if rk.r == 0 and segs is chunks[0]:
                # room for the whole program at once, estimated from the first chunk of the first rank (later
                # prefill chunks are longer: a generous margin; untouched capacity costs no memory)
                self.program.reserve(int(1.5 * len(self.program) * len(chunks) * pl.tp) - len(self.program))
        if spec.kind == "decoder" or spec.family == "vit":
            head(pl, rk)

    def setup_constants(self, rk: Rank) -> None:
        """Ones column and row (partition sums and broadcasts); the rotary permutation matrix."""
        P = self.pl.P
        const = rk.buf_single("const")
        # ones column [P,1] and ones row [1,P] in the matmul dtypes (used for partition sums/broadcasts)
        rk.ones_col = const.tile(DType.bf16, 1, byte=0)
        rk.ones_row = const.tile(DType.bf16, P, pcount=1, byte=16)
        rk.vec(Op.memset, dst=rk.ones_col, value=1.0)
        rk.vec(Op.memset, dst=rk.ones_row, value=1.0)
        if self.pl.spec.is_moe:  # ones on the experts' partitions (routing-weight sums and broadcasts)
            ones = rk.buf_single("moe_ones").tile(DType.bf16, P, pcount=self.pl.spec.num_experts)
            rk.vec(Op.memset, dst=ones, value=1.0)
        if self.pl.spec.rotary:
            kdt = self.pl.kdt
            n = self.pl.hd_t * P  # the rotation matrices side by side
            rk.rot = rk.buf_single("rot").tile(kdt, n)
            dims = ((1, P),) if self.pl.hd_t == 1 else ((P * P, self.pl.hd_t), (1, P))
            rk.dma(rk.rot, rk.hbm(rank_tensor("rot", rk.r)).hbm(kdt, P, P, dims))

    def layers(self, rk: Rank, segs: list[Segment], ncol: int) -> None:
        """All layers of a chunk; the middle ones are stamped out from a verified periodic block."""
        n = self.pl.spec.layers
        if not self.replicate or n < 6:
            for L in range(n):
                self.layer(rk, L, segs, ncol)
            return
        snaps = [snapshot(self.em)]
        per_layer = sum(len(p.slabs) for name, p in self.pl.plans.items() if name.startswith("L1."))
        L = 0
        stamped = False
        while L < n - 1:
            self.layer(rk, L, segs, ncol)
            snaps.append(snapshot(self.em))
            if L == 0 and not self.reserved:
                self.reserved = True
                # room for the whole program, estimated from the first layer (the stamped layers, the rest of
                # the chunk, the other chunks and ranks), so that the table is not copied as it grows: more
                # than lower_rank's later estimate; untouched capacity costs no memory
                blk = snaps[1].n_instr - snaps[0].n_instr
                est = 1.6 * (snaps[1].n_instr + n * blk) * self.chunks * self.pl.tp
                self.program.reserve(int(est) - len(self.program))
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
                    self.hbm.bufs,
                    L,
                    n - 1,
                )
            if copies:
                stamped = True
                rk.ws.skip(copies * per_layer)
                self.replicated_layers += copies
                L += copies
            L += 1
        self.layer(rk, n - 1, segs, ncol)

    def layer(self, rk: Rank, L: int, segs: list[Segment], ncol: int) -> None:
        """Layer ``L`` of the chunk: norm, attention, output projection into the residual, norm, MLP
        (pre-norm; BERT-style post-norm models normalise the residual after each block instead)."""
        pl, em = self.pl, self.em
        rk.start_layer()
        x = rk.tiles("x", pl.ht, pl.tc * pl.adt.itemsize)
        post = pl.spec.family in ("bert", "roberta")
        with em.tagged(OpClass.norm, L):
            if post:
                xn, xdt = x, pl.adt
                if pl.mdt != pl.adt:
                    xn, xdt = rk.tiles("xn", pl.ht, pl.tc * pl.mdt.itemsize), pl.mdt
                    cast(pl, rk, x, xn, ncol)
            else:
                xn, xdt = rk.tiles("xn", pl.ht, pl.tc * pl.mdt.itemsize), pl.mdt
                norm(pl, rk, f"L{L}.attn_norm", x, ncol, xn, pl.mdt)
            attn = attention(pl, rk, L, segs, ncol, xn, xdt)
            em.op_class = OpClass.o_proj
            self.residual_projection(rk, L, "wo", attn, 0, ncol)
            em.op_class = OpClass.norm
            if post:
                norm(pl, rk, f"L{L}.attn_norm", x, ncol, x, pl.adt)
                xn2 = x if pl.mdt == pl.adt else rk.tiles("xn2", pl.ht, pl.tc * pl.mdt.itemsize)
                if xn2 is not x:
                    cast(pl, rk, x, xn2, ncol)
            else:
                xn2 = rk.tiles("xn2", pl.ht, pl.tc * pl.mdt.itemsize)
                norm(pl, rk, f"L{L}.mlp_norm", x, ncol, xn2, pl.mdt)
            if pl.spec.is_moe:
                self.moe_residual(rk, L, moe(pl, rk, L, ncol, xn2), ncol)
            else:
                h = mlp_up(pl, rk, L, ncol, xn2)
                em.op_class = OpClass.mlp_down
                self.residual_projection(rk, L, "w_down", h, 1, ncol)
            if post:
                em.op_class = OpClass.norm
                norm(pl, rk, f"L{L}.mlp_norm", x, ncol, x, pl.adt)

    # ---- the residual stream ------------------------------------------------------------------
    def residual_projection(self, rk: Rank, L: int, weight: str, xin: list[Buf], which_bias: int, ncol: int) -> None:
        """Output projection ``L{L}.{weight}`` of a block (``o_proj``: 0, ``down_proj``: 1 in the
        ``bo_down`` biases) added into the residual ``x``, all-reduced over the TP ranks (and normalised,
        with post-norms) first."""
        name = f"L{L}.{weight}"
        linear(self.pl, rk, name, xin, self.pl.mdt, ncol, self.residual_evict(rk, L, name, which_bias, ncol))
        self.all_reduce_residual(rk, ncol, f"L{L}.{('post_attn_norm', 'post_mlp_norm')[which_bias]}")

    def residual_evict(self, rk: Rank, L: int, name: str, which_bias: int, ncol: int) -> Evict:
        """Eviction for o_proj/down_proj: (+bias), into the partial output ``ao`` (TP > 1: all-reduced
        afterwards; post-norms: normalised afterwards) or added into the residual ``x``."""
        pl = self.pl
        adt = pl.adt
        has_bias = (pl.spec.o_bias, pl.spec.mlp_bias)[which_bias]
        x = rk.tiles("x", pl.ht, pl.tc * adt.itemsize)
        ao = rk.tiles("ao", pl.ht, pl.tc * adt.itemsize)
        if has_bias:
            rk.load_vec(rank_tensor(f"L{L}.bo_down", rk.r), which_bias)

        def ev(j: int, pt: Tile, msz: int) -> None:
            scale = scale_tile(pl, rk, name, j, msz)
            bias = bias_tile(rk, f"L{L}.bo_down", which_bias, j, msz) if has_bias else None
            xt = x[j].tile(adt, ncol, pcount=msz)
            if not self.via_ao and scale is None and bias is None:
                rk.vec(Op.tensor_tensor, dst=xt, in0=pt, in1=xt, op=AluOp.add)
                return
            a = ao[j].tile(adt, ncol, pcount=msz)
            if self.via_ao:
                evict_copy(rk, a, pt, scale, bias if self.rank_variant(rk.r) else None)  # bias added once: rank 0
                return
            evict_copy(rk, a, pt, scale, bias)
            with self.em.tagged(OpClass.residual):
                rk.vec(Op.tensor_tensor, dst=xt, in0=a, in1=xt, op=AluOp.add)

        return ev

    @property
    def via_ao(self) -> bool:
        """Block outputs go through the partial output ``ao`` (all-reduced and/or normalised) before the
        residual add, rather than straight into ``x`` by the eviction."""
        return self.pl.tp > 1 or self.pl.spec.post_norms

    def moe_residual(self, rk: Rank, L: int, acc: list[Buf], ncol: int) -> None:
        """The experts' combined output (fp32 ``acc``) into the residual ``x``: added directly, or (TP > 1,
        post-norms) through ``ao``, all-reduced and normalised first."""
        pl = self.pl
        adt = pl.adt
        x = rk.tiles("x", pl.ht, pl.tc * adt.itemsize)
        ao = rk.tiles("ao", pl.ht, pl.tc * adt.itemsize) if self.via_ao else x
        with self.em.tagged(OpClass.residual, L):
            for j in range(pl.ht):
                msz = pl.fsize(pl.spec.hidden, j)
                a, t = acc[j].tile(DType.fp32, ncol, pcount=msz), ao[j].tile(adt, ncol, pcount=msz)
                if self.via_ao:
                    rk.vec(Op.tensor_copy, dst=t, src=a)
                else:
                    rk.vec(Op.tensor_tensor, dst=t, in0=a, in1=t, op=AluOp.add)
        self.all_reduce_residual(rk, ncol, f"L{L}.post_mlp_norm")

    def all_reduce_residual(self, rk: Rank, ncol: int, post_norm: str) -> None:
        """TP > 1: all-reduce the partial output ``ao`` over the ranks; post-norms: normalise it with the
        weights ``post_norm``; then add it into ``x`` (nothing to do without either)."""
        pl = self.pl
        if not self.via_ao:
            return
        ht, adt = pl.ht, pl.adt
        x = rk.tiles("x", ht, pl.tc * adt.itemsize)
        ao = rk.tiles("ao", ht, pl.tc * adt.itemsize)
        if pl.tp > 1:
            # one all-reduce over the whole partial output (all tiles, contiguous in the ao role)
            whole = rk.single.get("ao_all")
            if whole is None:  # the whole partial output (all tiles); aliases order it with every tile
                nbytes = ht * pl.tc * adt.itemsize
                whole = Buf(f"ao_all.c{rk.core}", Space.sbuf, rk.core, 0, pl.P, pl.role_off["ao"], nbytes)
                link_aliases(rk.registry, whole)
                rk.single["ao_all"] = whole
            t = whole.tile(adt, dims=((pl.tc, ht), (1, ncol)), pcount=min(pl.P, pl.spec.hidden))
            with self.em.tagged(OpClass.collective):
                self.em.emit(Op.all_reduce, rk.core, Engine.cc, 0, dst=t, src=t, group="tp", op=ReduceOp.add)
        if pl.spec.post_norms:
            with self.em.tagged(OpClass.norm):
                norm(pl, rk, post_norm, ao, ncol, ao, adt)
        with self.em.tagged(OpClass.residual):
            for j in range(ht):
                msz = pl.fsize(pl.spec.hidden, j)
                xt = x[j].tile(adt, ncol, pcount=msz)
                rk.vec(Op.tensor_tensor, dst=xt, in0=ao[j].tile(adt, ncol, pcount=msz), in1=xt, op=AluOp.add)


def lower(
    spec: ModelSpec, workload: Workload, chip: ChipConfig, *, token_chunk: int | None = None, replicate: bool = True,
    validate: bool = True,
) -> Lowered:
    """Lower one step of ``spec`` under ``workload`` to a program for ``chip``.

    ``replicate=False`` emits every layer instruction by instruction (the reference for the compact
    path: both give the same program). ``validate`` (default) checks the program against the chip with
    the ISA's column-wise validator (:func:`infsim.isa.validate.check`, ~10% of the lowering's time) and
    raises :class:`LoweringError` naming the first problem: a step the lowering cannot fit on the chip is
    refused, never simulated (e.g. PSUM writes beyond ``psum.bytes_per_partition``)."""
    lw = _Lowering(spec, workload, chip, token_chunk, replicate).run()
    if validate:
        from infsim.isa.validate import check

        problems = check(lw.program, chip)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise LoweringError(f"the lowered program of '{spec.name}' {workload.phase} does not fit chip "
                                f"'{chip.name}': {problems[0]}{more}")
    return lw
