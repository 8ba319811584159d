"""Weight layout in HBM: partition-major slabs, so every DMA descriptor moves a long contiguous run.

A linear layer ``y = x W`` with ``W`` of shape ``[K, N]`` (in x out) is split into column blocks of
``S`` output features and k-tiles of ``P`` input features (``P`` = SBUF partitions; fewer where the
input is a set of attention heads that do not share tiles, see :meth:`.plan.LoweringPlan.head_loc`);
a column block is computed in output tiles of ``M`` features (the tensor engine's columns, or one head).
The k-tiles of one column block are grouped ``nk`` at a time into a *slab* stored as ``[P, nk, S]``
(partition-major): a DMA of a slab gives partition ``p`` one contiguous run of ``nk * S`` elements,
which is chosen to reach the DMA engines' minimum efficient chunk (``dma.min_efficient_chunk_bytes``).
Slabs are stored in consumption order (column block, then k-tile group), so the weights of a layer
stream through HBM sequentially. Padding: none, except the partitions beyond a partial last k-tile (zeros).

This is the layout an offline weight-preparation step (as the Neuron compiler's) would produce; the
numpy :func:`pack` builds it for functional tests.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slab:
    index: int  # position in the layer's slab sequence
    cb: int  # column block
    c0: int  # first output feature
    csz: int  # output features in the block
    kt0: int  # first k-tile
    nk: int  # k-tiles in the slab
    rows: int  # partitions of the slab (P, or the partial last k-tile when there is only one)
    offset_elems: int  # element offset of the slab in the packed tensor

    @property
    def elems(self) -> int:
        return self.rows * self.nk * self.csz


@dataclass(frozen=True, eq=False)
class LinearPlan:
    k: int
    n: int
    p: int  # partitions per k-tile
    s: int  # output features per column block
    nk: int  # k-tiles per slab
    slabs: tuple[Slab, ...]
    m: int  # output features per output tile (a matmul's stationary free size, a PSUM tile's partitions)

    @property
    def ktiles(self) -> int:
        return math.ceil(self.k / self.p)

    def ksize(self, kt: int) -> int:
        return min(self.p, self.k - kt * self.p)

    @functools.cached_property
    def total_elems(self) -> int:  # cached: the plans and feasibility checks ask it per tensor and rank
        return sum(s.elems for s in self.slabs)

    @functools.cached_property
    def max_slab_free(self) -> int:
        return max(s.nk * s.csz for s in self.slabs)


@functools.lru_cache(maxsize=4096)
def plan_linear(k: int, n: int, p: int, s: int, min_chunk_bytes: int, itemsize: int, m: int) -> LinearPlan:
    """Slab plan for a ``[k, n]`` weight in k-tiles of ``p`` partitions, column blocks of ``s`` features
    and output tiles of ``m`` features (``s`` a multiple of ``m``)."""
    kt = math.ceil(k / p)
    slabs: list[Slab] = []
    off = 0
    for cb, c0 in enumerate(range(0, n, s)):
        csz = min(s, n - c0)
        nk = max(1, min(kt, math.ceil(min_chunk_bytes / (csz * itemsize))))
        for kt0 in range(0, kt, nk):
            nkt = min(nk, kt - kt0)
            rows = p if kt > 1 else k
            slabs.append(Slab(len(slabs), cb, c0, csz, kt0, nkt, rows, off))
            off += rows * nkt * csz
    nk_nominal = max(1, min(kt, math.ceil(min_chunk_bytes / (min(s, n) * itemsize))))
    return LinearPlan(k, n, p, s, nk_nominal, tuple(slabs), m)


def pack(plan: LinearPlan, w: np.ndarray) -> np.ndarray:
    """Lay out ``w`` ([k, n]) as the plan's slabs (flat array of w's dtype)."""
    if w.shape != (plan.k, plan.n):
        raise ValueError(f"weight shape {w.shape} != plan {(plan.k, plan.n)}")
    out = np.zeros(plan.total_elems, dtype=w.dtype)
    for sl in plan.slabs:
        blk = np.zeros((sl.rows, sl.nk, sl.csz), dtype=w.dtype)
        for i in range(sl.nk):
            k0 = (sl.kt0 + i) * plan.p
            ks = min(plan.p, plan.k - k0)
            blk[:ks, i, :] = w[k0 : k0 + ks, sl.c0 : sl.c0 + sl.csz]
        out[sl.offset_elems : sl.offset_elems + sl.elems] = blk.reshape(-1)
    return out
