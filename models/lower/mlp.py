"""The MLP of a layer: gate/up projections with the activation (:func:`mlp_up`) and, for mixture-of-
experts layers, the router and the experts (:func:`moe`).

Gated MLPs evict the gate through the activation function straight into ``h`` and multiply the up
projection's eviction into it in place; plain MLPs evict the up projection through the activation (and
bias). The dense down projection, the residual add and the tensor-parallel all-reduce are the caller's
(:mod:`.transformer`), as for the attention's output projection.

MoE is a cost model more than a functional one: routing is static (the experts touched are the first
``min(experts, tokens x experts_per_token)``), every touched expert runs over all tokens of the chunk,
the router's probabilities are computed (matmul, exp) but not applied to the experts' outputs, which
are added into the residual as they are evicted (no int8 scale, no all-reduce over ranks).

Tags (:mod:`.tags`): ``mlp_up`` (gate and up, experts' included), ``mlp_down`` (experts' down),
``moe_router``. Left out: routing by the router's output (top-k selection, token permutation).
"""

from __future__ import annotations

import math

from infsim.isa import ActFunc, AluOp, DType, Engine, Op

from .. import moe as moe_routing
from .emit import Buf, Tile
from .linear import bias_tile, evict_copy, linear, scale_tile
from .plan import LoweringPlan, rank_tensor
from .rank import Rank
from .tags import OpClass

_ACT = {"silu": ActFunc.silu, "gelu": ActFunc.gelu, "gelu_tanh": ActFunc.gelu_tanh, "relu": ActFunc.relu}


def mlp_up(
    pl: LoweringPlan, rk: Rank, L: int, ncol: int, xn2: list[Buf], prefix: str = "", col0: int = 0
) -> list[Buf]:
    """Gate/up projections of layer ``L`` (weights ``L{L}.{prefix}w_gate``/``w_up``) with the activation,
    over columns ``col0 .. col0+ncol`` of ``xn2``; returns the intermediate tiles ``h`` (matmul dtype,
    from column 0), the input of the down projection."""
    spec, mdt = pl.spec, pl.mdt
    h = rk.tiles("h", math.ceil(pl.inter_r / pl.P), pl.tc * mdt.itemsize)
    func = _ACT[spec.activation]
    pre = f"L{L}.{prefix}"
    rk.em.op_class = OpClass.mlp_up
    if spec.gated_mlp:
        gact = rk.buf_single("gact")
        gates: dict[int, Tile] = {}

        def ev_gate(j: int, pt: Tile, msz: int) -> None:
            scale = scale_tile(pl, rk, pre + "w_gate", j, msz)
            # activation of the gate goes straight into h; the up eviction multiplies in place
            evict_copy(rk, h[j].tile(mdt, ncol, pcount=msz), pt, scale, None, func)
            gates[j] = h[j].tile(mdt, ncol, pcount=msz)

        def ev_up(j: int, pt: Tile, msz: int) -> None:
            scale = scale_tile(pl, rk, pre + "w_up", j, msz)
            src = pt
            if scale is not None:
                tmp = gact.tile(DType.fp32, ncol, pcount=msz)
                rk.act(ActFunc.identity, tmp, pt, scale=scale)
                src = tmp
            rk.vec(Op.tensor_tensor, dst=h[j].tile(mdt, ncol, pcount=msz), in0=src, in1=gates[j], op=AluOp.mul)

        linear(pl, rk, pre + "w_gate", xn2, mdt, ncol, ev_gate, col0)
        linear(pl, rk, pre + "w_up", xn2, mdt, ncol, ev_up, col0)
    else:

        def ev_up1(j: int, pt: Tile, msz: int) -> None:
            scale = scale_tile(pl, rk, pre + "w_up", j, msz)
            b = bias_tile(rk, f"L{L}.b_up", 0, j, msz) if spec.mlp_bias else None
            evict_copy(rk, h[j].tile(mdt, ncol, pcount=msz), pt, scale, b, func)

        if spec.mlp_bias:
            rk.load_vec(rank_tensor(f"L{L}.b_up", rk.r), 0)
        linear(pl, rk, pre + "w_up", xn2, mdt, ncol, ev_up1, col0)
    return h


def moe(pl: LoweringPlan, rk: Rank, L: int, ncol: int, xn2: list[Buf]) -> list[Buf]:
    """Router, routing weights and the experts of layer ``L`` over a chunk of ``ncol`` tokens; returns the
    fp32 accumulator tiles ``moe_acc`` (feature-major, this rank's partial sum of the weighted expert
    outputs)."""
    spec, P, mdt, tc = pl.spec, pl.P, pl.mdt, pl.tc
    e_n = spec.num_experts
    route = rk.buf_single("route").tile(DType.fp32, ncol, pcount=e_n)
    wbuf = rk.buf_single("routew")
    wts = wbuf.tile(DType.bf16, ncol, pcount=e_n)
    rname = f"L{L}.router"

    def ev_r(j: int, pt: Tile, msz: int) -> None:
        scale = scale_tile(pl, rk, rname, j, msz)
        rk.act(ActFunc.exp, route, pt, **({} if scale is None else {"scale": scale}))

    rk.em.op_class = OpClass.moe_router
    linear(pl, rk, rname, xn2, mdt, ncol, ev_r)
    rk.em.op_class = OpClass.moe_combine
    # mask [experts, tokens] of every token's chosen experts (:mod:`..moe`): for slot j (experts lo ..
    # lo+g-1), v = c * m - (e - lo) * ncol with m = min(g, ncol) is in [0, ncol) exactly when token c goes
    # to expert e
    mb = rk.buf_single("moe_mask")
    v = mb.tile(DType.int32, ncol, pcount=e_n)
    a, b, mk = (mb.tile(DType.fp32, ncol, pcount=e_n, byte=i * tc * 4) for i in (1, 2, 3))
    for j, (lo, g) in enumerate(moe_routing.expert_groups(spec)):
        rk.em.emit(Op.iota, rk.core, Engine.gpsimd, dst=v, base=lo * ncol, channel_multiplier=-ncol,
                   multipliers=(min(g, ncol),))
        rk.vec(Op.tensor_scalar, dst=a, src=v, op0=AluOp.ge, imm0=0.0)
        rk.vec(Op.tensor_scalar, dst=b, src=v, op0=AluOp.lt, imm0=float(ncol))
        rk.vec(Op.tensor_tensor, dst=mk if j == 0 else a, in0=a, in1=b, op=AluOp.mul)
        if j:
            rk.vec(Op.tensor_tensor, dst=mk, in0=mk, in1=a, op=AluOp.add)
    # the router's softmax over the chosen experts: exp(logit) masked, divided by its column sum
    rk.vec(Op.tensor_tensor, dst=wts, in0=route, in1=mk, op=AluOp.mul)
    ones = rk.buf_single("moe_ones")
    den = rk.bank().tile(DType.fp32, ncol, pcount=e_n)
    rk.mm(den, ones.tile(DType.bf16, e_n, pcount=e_n), wts, acc=False)  # the sum, on every expert's row
    rk.act(ActFunc.reciprocal, route, den)
    rk.vec(Op.tensor_tensor, dst=wts, in0=wts, in1=route, op=AluOp.mul)

    acc = rk.tiles("moe_acc", pl.ht, tc * 4)
    for j in range(pl.ht):
        rk.vec(Op.memset, dst=acc[j].tile(DType.fp32, ncol, pcount=pl.fsize(spec.hidden, j)), value=0.0)
    sel = rk.buf_single("moe_sel")
    wb = rk.buf_single("moe_w")
    tmp = rk.buf_single("moe_tmp")
    for r in moe_routing.expert_runs(spec, ncol):
        n = r.c1 - r.c0
        h = mlp_up(pl, rk, L, n, xn2, prefix=f"e{r.expert}.", col0=r.c0)
        rk.em.op_class = OpClass.moe_combine
        # the run's weights (row ``expert`` of wts) broadcast over partitions: a one-hot [experts, P] matmul
        si = sel.tile(DType.int32, P, pcount=e_n)
        sb = sel.tile(DType.bf16, P, pcount=e_n, byte=P * 4)
        rk.em.emit(Op.iota, rk.core, Engine.gpsimd, dst=si, base=-r.expert, channel_multiplier=1, multipliers=(0,))
        rk.vec(Op.tensor_scalar, dst=sb, src=si, op0=AluOp.eq, imm0=0.0)
        wps = rk.bank().tile(DType.fp32, n)
        rk.mm(wps, sb, wbuf.tile(DType.bf16, n, pcount=e_n, byte=r.c0 * 2), acc=False)
        rk.vec(Op.tensor_copy, dst=wb.tile(DType.fp32, n), src=wps)
        name = f"L{L}.e{r.expert}.w_down"
        rk.em.op_class = OpClass.mlp_down

        def ev_d(j: int, pt: Tile, msz: int, c0: int = r.c0, n: int = n, name: str = name) -> None:
            scale = scale_tile(pl, rk, name, j, msz)
            t = tmp.tile(DType.fp32, n, pcount=msz)
            src = pt
            if scale is not None:
                rk.act(ActFunc.identity, t, pt, scale=scale)
                src = t
            rk.vec(Op.tensor_tensor, dst=t, in0=src, in1=wb.tile(DType.fp32, n, pcount=msz), op=AluOp.mul)
            acc_t = acc[j].tile(DType.fp32, n, pcount=msz, byte=c0 * 4)
            rk.vec(Op.tensor_tensor, dst=acc_t, in0=acc_t, in1=t, op=AluOp.add)

        linear(pl, rk, name, h, mdt, n, ev_d)
    return acc
