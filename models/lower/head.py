"""What comes before the first layer and after the last: the ViT patch embedding, the end of a token
chunk (the encoder's hidden states written out, or the last token of every finished sequence kept for
the head) and the head (final norm, LM head / classifier, logits written as rows).

The logits are written as rows ``[sequence, vocab]``, one contiguous run per sequence and column block:
each evicted ``[features, b]`` tile is transposed on the tensor engine into the block's PSUM bank
``[b, features]``, which one copy moves to SBUF and one DMA writes (``b`` descriptors); feature-major
writes would cost one DMA element per partition and queue behind the weight stream.

Final-logit soft-capping (Gemma-2) evicts the logits through ``tanh(x / cap)`` and multiplies by the cap
in the copy of the row block.

Tags (:mod:`.tags`): ``input_dma``, ``patch_embed``, ``output_dma``, ``head`` (the last-token picks and
the soft-capping included), ``norm`` (the final norm). Left out: sampling, the all-gather of the logits over
tensor-parallel ranks (each rank writes its vocabulary shard), the embedding lookup (the program input
is the gathered embedding rows; ViT: the patches and the position embeddings).
"""

from __future__ import annotations

import math

from infsim.isa import ActFunc, AluOp, DType, Engine, Op

from .emit import Buf, Tile
from .linear import evict_copy, linear, scale_tile
from .norm import norm
from .plan import LOGIT_ROW_SLOTS, LoweringPlan, Segment, rank_tensor
from .rank import Rank
from .tags import OpClass


def patch_embed(pl: LoweringPlan, rk: Rank, segs: list[Segment], ncol: int) -> None:
    """ViT: the chunk's patches through the patch-embedding projection, added to the position (and
    class) embeddings loaded into ``x``."""
    spec, mdt = pl.spec, pl.mdt
    pk = spec.num_channels * spec.patch_size**2
    kt = math.ceil(pk / pl.P)  # <= pl.ht (LoweringPlan refuses wider patches)
    xin = rk.tiles("xn", kt, pl.tc * mdt.itemsize)
    col0 = pl.global_col(segs[0])
    x = rk.tiles("x", pl.ht, pl.tc * pl.adt.itemsize)
    with rk.em.tagged(OpClass.input_dma):
        rk.columns_dma(xin, rank_tensor("patches", rk.r), pk, mdt, col0, ncol)
        # position + class embeddings, feature-major
        rk.columns_dma(x, rank_tensor("x", rk.r), spec.hidden, pl.adt, col0, ncol)

    def ev(j: int, pt: Tile, msz: int) -> None:
        xt = x[j].tile(pl.adt, ncol, pcount=msz)
        rk.vec(Op.tensor_tensor, dst=xt, in0=pt, in1=xt, op=AluOp.add)

    with rk.em.tagged(OpClass.patch_embed):
        linear(pl, rk, "patch_embed", xin, mdt, ncol, ev)


def chunk_end(pl: LoweringPlan, rk: Rank, segs: list[Segment], ncol: int) -> None:
    """Encoders without a head write the chunk's hidden states out; the others keep the last token of
    every sequence that ends in this chunk (the head's input, role ``xlast``)."""
    spec, adt, ht = pl.spec, pl.adt, pl.ht
    x = rk.tiles("x", ht, pl.tc * adt.itemsize)
    if spec.kind == "encoder" and spec.family != "vit":
        with rk.em.tagged(OpClass.output_dma):
            out = rank_tensor("hidden_out", rk.r)
            rk.columns_dma(x, out, spec.hidden, adt, pl.global_col(segs[0]), ncol, store=True, partial=True)
        return
    xl = rk.tiles("xlast", ht, pl.wl.batch * adt.itemsize)
    seqlen = (pl.wl.context + pl.wl.seq) if spec.kind == "decoder" else pl.seq
    want = 0 if spec.family == "vit" else seqlen - 1
    picks = [(seg.b, seg.c0 + want - seg.t0) for seg in segs if seg.t0 <= want < seg.t1]
    # runs of consecutive sequences in consecutive columns (decode: the whole chunk) move in one copy
    runs: list[list[int]] = []  # [first sequence, first column, count]
    for sb, col in picks:
        if runs and runs[-1][0] + runs[-1][2] == sb and runs[-1][1] + runs[-1][2] == col:
            runs[-1][2] += 1
        else:
            runs.append([sb, col, 1])
    with rk.em.tagged(OpClass.head):
        for sb, col, n in runs:
            for t in range(ht):
                rows = pl.fsize(spec.hidden, t)
                rk.vec(
                    Op.tensor_copy,
                    dst=xl[t].tile(adt, n, pcount=rows, byte=sb * adt.itemsize),
                    src=x[t].tile(adt, n, pcount=rows, byte=col * adt.itemsize),
                    partial=True,
                )


def head(pl: LoweringPlan, rk: Rank) -> None:
    """Final norm of the kept last tokens, then the LM head / classifier, logits written as rows."""
    spec, P, adt = pl.spec, pl.P, pl.adt
    b = pl.wl.batch
    xl = rk.tiles("xlast", pl.ht, b * adt.itemsize)
    xn = rk.tiles("xnh", pl.ht, b * pl.mdt.itemsize)
    with rk.em.tagged(OpClass.norm):
        norm(pl, rk, "final_norm", xl, b, xn, pl.mdt, stat_cols=b)  # b <= tc: the temporaries fit
    name = "lm_head" if spec.kind == "decoder" else "classifier"
    out = rank_tensor("logits", rk.r)
    cols = [rk.buf_single(f"locol{i}") for i in range(2)]  # separate buffers: dependencies per buffer
    rows = [rk.buf_single(f"lorow{i}") for i in range(LOGIT_ROW_SLOTS)]
    tpb = pl.s_block // pl.cols  # output tiles per column block
    n = pl.plans[name].n
    last_j = (n - 1) // P
    vpad = rk.hbm.program.tensors[out].shape[1]
    blk: list[Buf] = []

    cap = spec.final_softcap

    def ev(j: int, pt: Tile, msz: int) -> None:
        scale = scale_tile(pl, rk, name, j, msz)
        col = cols[j % 2].tile(adt, b, pcount=msz)
        if cap and scale is None:  # soft-capping: tanh(logits / cap) here, times cap on the way out
            rk.act(ActFunc.tanh, col, pt, scale_imm=1.0 / cap)
        else:
            evict_copy(rk, col, pt, scale)
            if cap:
                rk.act(ActFunc.tanh, col, col, scale_imm=1.0 / cap)
        jj = j % tpb
        if jj == 0:
            blk[:] = [rk.bank()]
        rk.em.emit(Op.transpose, rk.core, Engine.tensor, dst=blk[0].tile(DType.fp32, msz, pcount=b, byte=jj * P * 4),
                   src=col)
        if jj != tpb - 1 and j != last_j:
            return
        j0 = j - jj
        width = min(n, (j + 1) * P) - j0 * P
        row = rows[(j // tpb) % LOGIT_ROW_SLOTS].tile(adt, width, pcount=b)
        if cap:
            rk.vec(Op.tensor_scalar, dst=row, src=blk[0].tile(DType.fp32, width, pcount=b), op0=AluOp.mul, imm0=cap)
        else:
            rk.vec(Op.tensor_copy, dst=row, src=blk[0].tile(DType.fp32, width, pcount=b))
        with rk.em.tagged(OpClass.output_dma):
            rk.dma(rk.hbm(out).hbm(adt, b, vpad, ((1, width),), byte=j0 * P * adt.itemsize), row, partial=True)

    with rk.em.tagged(OpClass.head):
        linear(pl, rk, name, xn, pl.mdt, b, ev)
