"""DMA descriptor model (closed form vs enumerating reference) and the SimpleMemory bandwidth model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infsim.config import load_chip
from infsim.engine.memory.simple import SimpleMemory
from infsim.hw import dma

HBM, SBUF = 0, 1


@st.composite
def subtile(draw, space):
    """A sub-tile of a row-major parent tensor: the canonical access patterns lowering produces."""
    nd = draw(st.integers(1, 3))
    parent = [draw(st.integers(1, 6)) for _ in range(nd + 1)]  # [rows, d0, .., d_{nd-1}]
    sizes = [draw(st.integers(1, p)) for p in parent]
    strides = [1] * (nd + 1)
    for j in range(nd - 1, -1, -1):
        strides[j] = strides[j + 1] * parent[j + 1]
    pcount = sizes[0]
    return (space, pcount, strides[0] if space == HBM else 0, strides[1:], sizes[1:], nd)


def _args(ap, itemsize=2):
    space, pcount, pstride, strides, sizes, nd = ap
    return (space, itemsize, 0, pcount, pstride, 0, strides, sizes)


def _closed(src, dst):
    rs = dma.contiguous_run(src[0], src[1], src[2], src[3], src[4], src[5])
    rd = dma.contiguous_run(dst[0], dst[1], dst[2], dst[3], dst[4], dst[5])
    n = src[1] * int(np.prod(src[4]))
    return int(dma.chunk_count(n, rs, rd))


@given(subtile(HBM), st.sampled_from([HBM, SBUF]), st.data())
def test_chunks_closed_form_equals_reference_on_subtiles(src, dst_space, data) -> None:
    # destination: same element count, its own canonical layout (one row per partition)
    n_rows, free = src[1], int(np.prod(src[4]))
    dst = (dst_space, n_rows, free if dst_space == HBM else 0, [1], [free], 1)
    if data.draw(st.booleans()):
        src, dst = dst, src
    assert _closed(src, dst) == dma.chunk_count_reference(_args(src), _args(dst))


@given(st.integers(1, 4), st.lists(st.tuples(st.integers(-3, 8), st.integers(1, 4)), min_size=1, max_size=3))
def test_closed_form_is_upper_bound(pcount, dims) -> None:
    strides = [d[0] for d in dims]
    sizes = [d[1] for d in dims]
    src = (SBUF, pcount, 0, strides, sizes, len(dims))
    n = pcount * int(np.prod(sizes))
    dst = (HBM, 1, 0, [1], [n], 1)
    assert _closed(src, dst) >= dma.chunk_count_reference(_args(src), _args(dst))


def test_efficiency_curve_inf2() -> None:
    cfg = load_chip("inf2").dma
    assert dma.efficiency(cfg, 256) == pytest.approx(0.37, abs=0.01)
    assert dma.efficiency(cfg, 2048) == pytest.approx(0.82, abs=0.01)
    assert dma.efficiency(cfg, 4096) == pytest.approx(0.90, abs=0.01)
    # 128 partitions x 512 bf16 into SBUF: one descriptor per partition
    t = dma.engine_time_ns(cfg, 128 * 1024, 128)
    assert t == pytest.approx(128 * cfg.descriptor_overhead_ns + 128 * 1024 / cfg.engine_gbps)


def test_simple_memory_rate_limits() -> None:
    chip = load_chip("inf2", {"hbm.bandwidth_gbps": 100.0, "hbm.latency_ns": 0})
    m = SimpleMemory(chip)
    m.reset(1)
    # a requester limited to 10 GB/s gets 10 GB/s
    assert m.transfer(0, 0, 10_000, False, 0, 10.0) == 1_000_000
    m.reset(1)
    # 20 requesters at 10 GB/s share 100 GB/s: the aggregate finishes at 20 * 10 kB / 100 GB/s = 2 us
    ends = [m.transfer(0, 0, 10_000, False, 0, 10.0) for _ in range(20)]
    assert max(ends) == 2_000_000
    assert m.bytes_read == [200_000]
    # earlier transfers keep their rate: the first 10 are not slowed by the later 10
    assert ends[:10] == [1_000_000] * 10
    with pytest.raises(AssertionError):
        m.transfer(0, 0, 1, False, 0)  # fine (same time)
        m.transfer(0, -1, 1, False, 0)  # out of time order


def test_simple_memory_latency() -> None:
    chip = load_chip("inf2")
    m = SimpleMemory(chip)
    m.reset(2, log=True)
    end = m.transfer(1, 1000, 819_200, True, 0)  # 819.2 kB at 819.2 GB/s = 1 us
    assert end == 1000 + 1_000_000 + int(chip.hbm.latency_ns * 1000)
    assert m.bytes_written == [0, 819_200] and len(m.log) == 1


@given(st.lists(st.tuples(st.sampled_from([HBM, SBUF]), st.integers(1, 4), st.integers(-3, 40), st.integers(0, 4),
                          st.lists(st.integers(-8, 40), min_size=4, max_size=4),
                          st.lists(st.integers(1, 5), min_size=4, max_size=4)), min_size=1, max_size=30))
def test_ap_runs_is_contiguous_run_of_every_row(rows) -> None:
    """The vectorised table walk gives the per-AP definition row by row, strides of any sign and sizes of 1;
    so does the (run, stride) walk of :func:`ap_row_patterns`."""
    from infsim.isa.program import AP_DTYPE, MAX_FREE_DIMS

    aps = np.zeros(len(rows), AP_DTYPE)
    for i, (space, pcount, pstride, nd, strides, sizes) in enumerate(rows):
        nd = min(nd, MAX_FREE_DIMS)
        aps[i]["space"], aps[i]["pcount"], aps[i]["pstride"], aps[i]["ndims"] = space, pcount, pstride, nd
        aps[i]["strides"][:] = (strides + [0] * MAX_FREE_DIMS)[:MAX_FREE_DIMS]
        aps[i]["sizes"][:] = (sizes + [1] * MAX_FREE_DIMS)[:MAX_FREE_DIMS]
    want = [dma.contiguous_run(int(r["space"]), int(r["pcount"]), int(r["pstride"]), r["strides"], r["sizes"],
                               int(r["ndims"])) for r in aps]
    assert dma.ap_runs(aps).tolist() == want
    run, stride = dma.ap_row_patterns(aps)
    pattern = [dma.row_pattern(int(r["space"]), int(r["pcount"]), int(r["pstride"]), r["strides"], r["sizes"],
                               int(r["ndims"])) for r in aps]
    assert list(zip(run.tolist(), stride.tolist())) == pattern
