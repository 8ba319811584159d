"""Linear layers: ``y^T = W^T x^T`` as weight-stationary matmuls over the streamed slabs, and the PSUM
evictions that finish them (int8 scale, bias, activation).

:func:`linear` walks a weight's slabs (:mod:`.weight_stream`) column block by column block: each output
tile of up to ``cols`` features accumulates over the k-tiles in a PSUM bank, and when a column block is
complete the caller's ``evict(j, psum_tile, features)`` consumes its output tiles (copy out, add into
the residual, apply an activation, ...), so the eviction of one block overlaps the matmuls of the next.
The instructions carry the caller's tag (:mod:`.tags`), the slab loads the weight stream's.

Left out: split-K over cores, weights as the moving operand (small token counts keep the weights
stationary), fused epilogues beyond what one activation instruction does.
"""

from __future__ import annotations

from collections.abc import Callable

from infsim.isa import ActFunc, DType, Op

from .emit import Buf, Tile
from .plan import LoweringPlan, rank_tensor
from .rank import Rank

#: eviction callback of a linear layer: (output tile index, PSUM tile, features in the tile)
Evict = Callable[[int, Tile, int], None]


def linear(
    pl: LoweringPlan, rk: Rank, weight: str, xin: list[Buf], xdt: DType, ncol: int, evict: Evict, col0: int = 0
) -> None:
    """``y^T = W^T x^T`` tile by tile for ``ncol`` tokens of ``xin`` (dtype ``xdt``) from column ``col0``;
    ``evict(j, psum_tile, msz)`` consumes output tile ``j``."""
    plan = pl.plans[weight]
    if pl.int8:
        rk.load_vec(rank_tensor(weight + ".scale", rk.r))
    cur_cb = -1
    outs: list[tuple[int, Tile, int]] = []
    for sl in plan.slabs:
        if sl.cb != cur_cb:
            for j, pt, msz in outs:
                evict(j, pt, msz)
            outs = []
            cur_cb = sl.cb
            for m0 in range(0, sl.csz, plan.m):
                msz = min(plan.m, sl.csz - m0)
                j = (sl.c0 + m0) // plan.m
                outs.append((j, rk.bank().tile(DType.fp32, ncol, pcount=msz), msz))
        slab = rk.ws.next_slab(weight)
        sdt = slab.ap.dtype
        grid = []  # the slab's matmuls, emitted in bulk (Emitter.matmuls)
        for i in range(sl.nk):
            kt = sl.kt0 + i
            ks = plan.ksize(kt)
            mov = xin[kt].tile(xdt, ncol, pcount=ks, byte=col0 * xdt.itemsize)
            for jj, (_j, pt, msz) in enumerate(outs):
                stat = slab.buf.tile(sdt, msz, pcount=ks, byte=(i * sl.csz + jj * plan.m) * sdt.itemsize)
                grid.append((pt, stat, mov, kt > 0))
        rk.em.matmuls(rk.core, grid)
        rk.ws.slab_done()
    for j, pt, msz in outs:
        evict(j, pt, msz)


def scale_tile(pl: LoweringPlan, rk: Rank, weight: str, j: int, msz: int) -> Tile | None:
    """Per-output-channel int8 scale of output tile j (the op's whole scale vector is loaded once)."""
    if not pl.int8:
        return None
    slot = rk.load_vec(rank_tensor(weight + ".scale", rk.r))
    return slot.tile(DType.fp32, 1, pcount=msz, byte=j * 4)


def bias_tile(rk: Rank, name: str, which: int, j: int, msz: int) -> Tile:
    """Output tile j of bias vector ``which`` of the per-channel tensor ``name``."""
    slot = rk.load_vec(rank_tensor(name, rk.r), which)
    return slot.tile(DType.fp32, 1, pcount=msz, byte=j * 4)


def evict_copy(
    rk: Rank, dst: Tile, pt: Tile, scale: Tile | None, bias: Tile | None = None, func: ActFunc = ActFunc.identity
) -> None:
    """PSUM -> SBUF: a vector copy, or a scalar activation when there is a scale, bias or function."""
    if scale is None and bias is None and func == ActFunc.identity:
        rk.vec(Op.tensor_copy, dst=dst, src=pt)
    else:
        kw: dict[str, object] = {}
        if scale is not None:
            kw["scale"] = scale
        if bias is not None:
            kw["bias"] = bias
        rk.act(func, dst, pt, **kw)
