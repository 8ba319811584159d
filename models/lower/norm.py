"""RMSNorm and LayerNorm over the features of a feature-major hidden state.

Features lie on partitions (and tiles), so the reductions over them are matmuls: squares (and, for
LayerNorm, the values) of every tile are summed into one PSUM row per token by a ones-column matmul;
``1/rms`` (and the mean) come from one scalar ``rsqrt`` per token on that row and are broadcast back
over the partitions by a ones-row matmul; a vector multiply (LayerNorm: subtract, multiply) and a scale
by the norm weight (and add of the bias) per tile produce the output in the requested dtype. The norm
weights are loaded per use (``gamma`` role). :func:`cast` is the post-norm models' conversion of the
residual to the matmul dtype. All of it is tagged with the caller's tag (``norm``).

Left out: a one-pass (Welford) variance: LayerNorm's variance is ``E[x^2] - mean^2`` in fp32; norms
over anything but the hidden features.
"""

from __future__ import annotations

from infsim.isa import ActFunc, AluOp, DType, Op

from .emit import Buf
from .plan import LoweringPlan, rank_tensor
from .rank import Rank


def norm(
    pl: LoweringPlan,
    rk: Rank,
    weight: str,
    xin: list[Buf],
    ncol: int,
    out: list[Buf],
    odt: DType,
    stat_cols: int | None = None,
) -> None:
    """RMSNorm or LayerNorm over features (partitions and tiles) of ``xin`` into ``out`` (dtype ``odt``),
    with the norm weights of tensor ``weight``. ``stat_cols``: columns reserved per row of statistics
    (the token chunk unless given)."""
    spec, P, ht = pl.spec, pl.P, pl.ht
    stat_cols = pl.tc if stat_cols is None else stat_cols
    layer = spec.norm == "layer"
    g = rk.buf_single("gamma")
    gt = g.tile(DType.fp32, (2, ht) if layer else ht)
    nvec = 2 if layer else 1
    rk.dma(
        gt,
        rk.hbm(rank_tensor(weight, rk.r)).hbm(DType.fp32, P, ht, ((P * ht, nvec), (1, ht)) if layer else ((1, ht),)),
    )
    # partition sums: sum x^2 (and sum x) into PSUM rows via ones-vector matmuls
    ss = rk.bank().tile(DType.fp32, ncol, pcount=1)
    s1 = rk.bank().tile(DType.fp32, ncol, pcount=1) if layer else None
    sq = [rk.buf_single("sq0"), rk.buf_single("sq1")]
    for t in range(ht):
        rows = pl.fsize(spec.hidden, t)
        x = xin[t].tile(pl.adt, ncol, pcount=rows)
        sqt = sq[t % 2].tile(DType.bf16, ncol, pcount=rows)
        rk.act(ActFunc.square, sqt, x)
        rk.mm(ss, rk.ones_col.buf.tile(DType.bf16, 1, pcount=rows), sqt, acc=t > 0)
        if s1 is not None:
            rk.mm(s1, rk.ones_col.buf.tile(DType.bf16, 1, pcount=rows), x if pl.adt == DType.bf16 else sqt, acc=t > 0)
    h = float(spec.hidden)
    ns = rk.buf_single("nstat")
    r_f = ns.tile(DType.fp32, ncol, pcount=1)
    if s1 is not None:
        mean = ns.tile(DType.fp32, ncol, pcount=1, byte=stat_cols * 4)
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
        rk.vec(Op.tensor_copy, dst=mrow, src=ns.tile(DType.fp32, ncol, pcount=1, byte=stat_cols * 4))
        mbc = rk.bank().tile(DType.fp32, ncol)
        rk.mm(mbc, rk.ones_row, mrow, acc=False)
        mb = rk.buf_single("mbc").tile(DType.fp32, ncol)
        rk.vec(Op.tensor_copy, dst=mb, src=mbc)
    for t in range(ht):
        rows = pl.fsize(spec.hidden, t)
        x = xin[t].tile(pl.adt, ncol, pcount=rows)
        tmp = sq[t % 2].tile(DType.bf16, ncol, pcount=rows)
        o = out[t].tile(odt, ncol, pcount=rows)
        if layer:
            rk.vec(Op.tensor_tensor, dst=tmp, in0=x, in1=mb.buf.tile(DType.fp32, ncol, pcount=rows), op=AluOp.sub)
            rk.vec(Op.tensor_tensor, dst=tmp, in0=tmp, in1=rb.buf.tile(DType.fp32, ncol, pcount=rows), op=AluOp.mul)
            rk.vec(
                Op.tensor_scalar,
                dst=o,
                src=tmp,
                scalar0=g.tile(DType.fp32, 1, pcount=rows, byte=t * 4),
                op0=AluOp.mul,
                scalar1=g.tile(DType.fp32, 1, pcount=rows, byte=(ht + t) * 4),
                op1=AluOp.add,
            )
        else:
            rk.vec(Op.tensor_tensor, dst=tmp, in0=x, in1=rb.buf.tile(DType.fp32, ncol, pcount=rows), op=AluOp.mul)
            rk.act(ActFunc.identity, o, tmp, scale=g.tile(DType.fp32, 1, pcount=rows, byte=t * 4))


def cast(pl: LoweringPlan, rk: Rank, src: list[Buf], dst: list[Buf], ncol: int) -> None:
    """Copy the hidden state ``src`` (activation dtype) into ``dst`` in the matmul dtype."""
    for t in range(pl.ht):
        rows = pl.fsize(pl.spec.hidden, t)
        rk.vec(Op.tensor_copy, dst=dst[t].tile(pl.mdt, ncol, pcount=rows), src=src[t].tile(pl.adt, ncol, pcount=rows))
