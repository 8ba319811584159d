"""DMA transfer cost: descriptor decomposition and per-engine timing.

What is modelled
----------------
A ``dma_copy`` moves ``N`` elements from a source to a destination access pattern, element by element in
AP order. The DMA engine walks it as a list of *descriptors*: each descriptor moves one buffer that is
contiguous in the source **and** in the destination ([NKI-ARCH2] and [NKI-DMA] in docs/references.md).

* Contiguity of one AP is structural: the innermost free dims merge while each stride equals the
  product of the sizes inside it (size-1 dims are skipped). SBUF/PSUM partitions are separate buffers
  (a descriptor never crosses a partition); an HBM operand's partition dim is an ordinary strided dim.
  So an AP is contiguous in aligned blocks of ``run`` elements.
* Source blocks of ``Rs`` and destination blocks of ``Rd`` elements split the transfer at every multiple
  of ``Rs`` or ``Rd``: ``chunks = N/Rs + N/Rd - N/lcm(Rs, Rd)`` (closed form).
* Engine time of a transfer = ``chunks * descriptor_overhead_ns + bytes / engine_gbps``: small or strided
  chunks lose efficiency through the per-descriptor overhead (with the inf2 numbers: 37 % of peak at
  256 B chunks, 82 % at 2 KiB, 90 % at 4 KiB, matching the NKI DMA guide's curve).
* ``fixed_latency_ns`` (descriptor setup, semaphore write) is added to a transfer's completion but does
  not occupy the engine (transfers of one queue pipeline behind each other).
* ``bytes`` is the larger of the source and destination byte counts (a casting DMA reads one width
  and writes another).

The HBM side (bandwidth shared with every other DMA engine of the chip, HBM latency) is not here: the
engine passes the transfer to its memory model (:mod:`infsim.engine.memory`).

Left out: DMA transposes, descriptor-generation engines (DGE, ~600 ns on NC-v3), compression, QoS.
The accidental contiguity of non-canonical patterns (an outer stride that happens to continue the
previous block) is not merged by the closed form; the reference below does merge it, so the closed
form is an upper bound on the reference and equal to it for every sub-tile of a row-major tensor.
"""

from __future__ import annotations

import math

import numpy as np

from infsim.config.schema import DmaConfig

#: ``AP_DTYPE`` space code of HBM (isa.opcodes.Space.hbm); kept numeric for the numpy kernels.
_HBM = 0


def contiguous_run(space: int, pcount: int, pstride: int, strides: np.ndarray | list[int],
                   sizes: np.ndarray | list[int], ndims: int) -> int:
    """Elements per structurally contiguous block of one access pattern (see the module docstring)."""
    return row_pattern(space, pcount, pstride, strides, sizes, ndims)[0]


def row_pattern(space: int, pcount: int, pstride: int, strides: np.ndarray | list[int],
                sizes: np.ndarray | list[int], ndims: int) -> tuple[int, int]:
    """``(run, stride)`` in elements: the contiguous block (:func:`contiguous_run`) and the distance between
    the starts of consecutive blocks, i.e. the stride of the first dimension that breaks contiguity
    (its absolute value; ``stride == run`` when the whole pattern is one block). Dimensions further out
    are not described: a pattern of rows of rows is taken as rows at the innermost breaking stride."""
    run = 1
    for j in range(ndims - 1, -1, -1):
        sz = int(sizes[j])
        if sz == 1:
            continue
        if int(strides[j]) == run:
            run *= sz
        else:
            return run, abs(int(strides[j]))
    if space == _HBM and pcount > 1:
        if pstride == run:
            return run * pcount, run * pcount
        return run, abs(int(pstride))
    return run, run


def ap_runs(aps: np.ndarray) -> np.ndarray:
    """:func:`contiguous_run` of every row of an ``AP_DTYPE`` table (int64), vectorised over the rows."""
    return ap_row_patterns(aps)[0]


def ap_row_patterns(aps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`row_pattern` ``(run, stride)`` of every row of an ``AP_DTYPE`` table (int64 arrays, elements),
    vectorised over the rows: the same walk from the innermost dimension outwards, one dimension at a time
    for all rows."""
    nd = aps["ndims"].astype(np.int64)
    sizes = aps["sizes"].astype(np.int64)
    strides = aps["strides"].astype(np.int64)
    run = np.ones(len(aps), dtype=np.int64)
    stride = np.zeros(len(aps), dtype=np.int64)
    walking = np.ones(len(aps), dtype=bool)  # no dimension has broken the contiguous block yet
    for j in range(sizes.shape[1] - 1, -1, -1):
        sz = sizes[:, j]
        look = walking & (j < nd) & (sz != 1)
        grow = look & (strides[:, j] == run)
        brk = look & ~grow
        stride = np.where(brk, np.abs(strides[:, j]), stride)
        run = np.where(grow, run * sz, run)
        walking &= ~brk
    pc = aps["pcount"].astype(np.int64)
    ps = aps["pstride"].astype(np.int64)
    rows = walking & (aps["space"] == _HBM) & (pc > 1)  # HBM partitions as rows
    whole = rows & (ps == run)
    stride = np.where(walking, np.where(whole, run * pc, np.where(rows, np.abs(ps), run)), stride)
    return np.where(whole, run * pc, run), stride


def chunk_count(n_elems: np.ndarray | int, run_src: np.ndarray | int, run_dst: np.ndarray | int) -> np.ndarray:
    """Descriptors of a transfer of ``n_elems`` elements with block sizes ``run_src``/``run_dst`` (vectorised)."""
    n = np.asarray(n_elems, dtype=np.int64)
    rs = np.maximum(np.asarray(run_src, dtype=np.int64), 1)
    rd = np.maximum(np.asarray(run_dst, dtype=np.int64), 1)
    lcm = np.lcm(rs, rd)
    return n // rs + n // rd - n // lcm


def engine_time_ns(cfg: DmaConfig, nbytes: np.ndarray | int, chunks: np.ndarray | int) -> np.ndarray:
    """Time a DMA engine is occupied by a transfer, ignoring HBM contention (float ns, vectorised)."""
    return (np.asarray(chunks, dtype=np.float64) * cfg.descriptor_overhead_ns
            + np.asarray(nbytes, dtype=np.float64) / cfg.engine_gbps)


def efficiency(cfg: DmaConfig, chunk_bytes: float) -> float:
    """Fraction of the engine's peak bandwidth reached with chunks of ``chunk_bytes`` bytes."""
    t_data = chunk_bytes / cfg.engine_gbps
    return t_data / (t_data + cfg.descriptor_overhead_ns)


# ---- reference --------------------------------------------------------------------------------------

def element_addresses(space: int, itemsize: int, pstart: int, pcount: int, pstride: int, offset: int,
                      strides: list[int], sizes: list[int]) -> np.ndarray:
    """Byte address of every element in AP order; on-chip partitions are put 2^40 bytes apart."""
    idx = np.indices([pcount, *sizes]).reshape(len(sizes) + 1, -1)
    if space == _HBM:
        elem = idx[0] * pstride
        part = np.zeros_like(elem)
    else:
        elem = np.zeros(idx.shape[1], dtype=np.int64)
        part = (idx[0] + pstart).astype(np.int64) << 40
    for k, st in enumerate(strides):
        elem = elem + idx[k + 1] * st
    return part + offset + elem.astype(np.int64) * itemsize


def chunk_count_reference(src: tuple, dst: tuple) -> int:
    """Enumerate the elements and start a new descriptor wherever the source or the destination address
    does not continue the previous element's. ``src``/``dst`` are argument tuples of :func:`element_addresses`."""
    a = element_addresses(*src)
    b = element_addresses(*dst)
    if len(a) != len(b):
        raise ValueError("source and destination element counts differ")
    if len(a) == 0:
        return 0
    brk = (np.diff(a) != src[1]) | (np.diff(b) != dst[1])
    return 1 + int(np.count_nonzero(brk))


def gcd_runs(run_src: int, run_dst: int) -> int:
    """Shortest descriptor length (elements) when the blocks are misaligned (for reports)."""
    return math.gcd(run_src, run_dst)
