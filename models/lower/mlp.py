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

from infsim.isa import ActFunc, AluOp, DType, Op

from .emit import Buf, Tile
from .linear import bias_tile, evict_copy, linear, scale_tile
from .plan import LoweringPlan, rank_tensor
from .rank import Rank
from .tags import OpClass

_ACT = {"silu": ActFunc.silu, "gelu": ActFunc.gelu, "gelu_tanh": ActFunc.gelu_tanh, "relu": ActFunc.relu}


def mlp_up(pl: LoweringPlan, rk: Rank, L: int, ncol: int, xn2: list[Buf], prefix: str = "") -> list[Buf]:
    """Gate/up projections of layer ``L`` (weights ``L{L}.{prefix}w_gate``/``w_up``) with the activation;
    returns the intermediate tiles ``h`` (matmul dtype), the input of the down projection."""
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

        linear(pl, rk, pre + "w_gate", xn2, mdt, ncol, ev_gate)
        linear(pl, rk, pre + "w_up", xn2, mdt, ncol, ev_up)
    else:

        def ev_up1(j: int, pt: Tile, msz: int) -> None:
            scale = scale_tile(pl, rk, pre + "w_up", j, msz)
            b = bias_tile(rk, f"L{L}.b_up", 0, j, msz) if spec.mlp_bias else None
            evict_copy(rk, h[j].tile(mdt, ncol, pcount=msz), pt, scale, b, func)

        if spec.mlp_bias:
            rk.load_vec(rank_tensor(f"L{L}.b_up", rk.r), 0)
        linear(pl, rk, pre + "w_up", xn2, mdt, ncol, ev_up1)
    return h


def moe(pl: LoweringPlan, rk: Rank, L: int, ncol: int, xn2: list[Buf]) -> None:
    """Router (matmul + exp) and the touched experts of layer ``L``, each added into the residual ``x``."""
    rl = rk.buf_single("route").tile(DType.fp32, ncol, pcount=pl.spec.num_experts)

    def ev_r(j: int, pt: Tile, msz: int) -> None:
        rk.act(ActFunc.exp, rl, pt)

    rk.em.op_class = OpClass.moe_router
    linear(pl, rk, f"L{L}.router", xn2, pl.mdt, ncol, ev_r)
    x = rk.tiles("x", pl.ht, pl.tc * pl.adt.itemsize)
    for ex in pl.experts_touched():
        h = mlp_up(pl, rk, L, ncol, xn2, prefix=f"e{ex}.")

        def ev_d(j: int, pt: Tile, msz: int) -> None:
            xt = x[j].tile(pl.adt, ncol, pcount=msz)
            rk.vec(Op.tensor_tensor, dst=xt, in0=pt, in1=xt, op=AluOp.add)

        rk.em.op_class = OpClass.mlp_down
        linear(pl, rk, f"L{L}.e{ex}.w_down", h, pl.mdt, ncol, ev_d)
