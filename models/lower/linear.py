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
    dsts: list[Tile] = []
    mszs: tuple[int, ...] = ()
    rows: dict[tuple[int, int], tuple[tuple[int, ...], list[Tile], list[bool]]] = {}  # k-tile group -> its rows
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
            dsts = [pt for _, pt, _ in outs]
            mszs = tuple(msz for _, _, msz in outs)
        slab = rk.ws.next_slab(weight)
        r = rows.get((sl.kt0, sl.nk))
        if r is None:  # the k-tiles' sizes, moving tiles and accumulate flags (the same in every column block)
            kts = range(sl.kt0, sl.kt0 + sl.nk)
            ks = tuple(plan.ksize(kt) for kt in kts)
            r = rows[(sl.kt0, sl.nk)] = (
                ks, [xin[kt].tile(xdt, ncol, pcount=k, byte=col0 * xdt.itemsize) for kt, k in zip(kts, ks)],
                [kt > 0 for kt in kts])
        stats = _stationary_grid(rk, slab.buf, slab.ap.dtype, r[0], sl.csz, plan.m, mszs)
        rk.em.matmul_grid(rk.core, dsts, stats, r[1], r[2])
        rk.ws.slab_done()
    for j, pt, msz in outs:
        evict(j, pt, msz)


def _stationary_grid(
    rk: Rank, buf: Buf, sdt: DType, ks: tuple[int, ...], csz: int, m: int, mszs: tuple[int, ...]
) -> tuple[tuple[Tile, ...], ...]:
    """The stationary tiles of a slab in ``buf`` (``[P, nk, csz]``): k-tile ``i`` (``ks[i]`` partitions) by
    output tile ``jj`` (``mszs[jj]`` features from ``jj * m``); one tuple per layout, made once per rank."""
    key = (buf, sdt, ks, csz, m, mszs)
    g = rk.stat_grids.get(key)
    if g is None:
        g = rk.stat_grids[key] = tuple(
            tuple(buf.tile(sdt, msz, pcount=k, byte=(i * csz + jj * m) * sdt.itemsize) for jj, msz in enumerate(mszs))
            for i, k in enumerate(ks)
        )
    return g


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
