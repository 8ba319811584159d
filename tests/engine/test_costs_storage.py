"""The compact storage of :class:`~infsim.engine.costs.Costs`: DMA- and collective-only columns on their
instructions (:class:`~infsim.engine.costs.SparseColumn`) round-trip to the dense per-instruction columns,
narrowed columns keep every value or refuse loudly, and the energy sums are the dense ones'."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest

from infsim.config import load_chip
from infsim.engine.costs import COLLECTIVES, SparseColumn, compute_costs, narrow_int32, narrow_unsigned
from infsim.errors import InfsimError
from infsim.hw.energy import energy_report, per_instruction_pj
from infsim.isa import Program
from infsim.isa.opcodes import Op
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.spec import load_model

CHIP = load_chip("inf2")


@cache
def _program() -> Program:
    """A one-layer Llama decode step on two cores: DMA transfers, collectives, compute."""
    spec = dataclasses.replace(load_model("llama-2-7b"), layers=1)
    return lower(spec, Workload.make("decode", 1, 128, tp=2), CHIP).program


def test_sparse_columns_round_trip_to_dense() -> None:
    p = _program()
    c = compute_costs(p, CHIP)
    op = p.instr["op"]
    n = len(p)
    np.testing.assert_array_equal(c.dma_rows, np.flatnonzero(op == int(Op.dma_copy)))
    np.testing.assert_array_equal(c.cc_rows, np.flatnonzero(np.isin(op, [int(o) for o in COLLECTIVES])))
    assert len(c.dma_rows) and len(c.cc_rows)
    core_chip = p.instr["core"].astype(np.int64) // p.cores_per_chip
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, 500)
    for name in ("dma_engine_ps", "dma_chunks", "dma_bytes", "hbm_read", "hbm_write", "hbm_read_chip",
                 "hbm_write_chip", "hbm_read_addr", "hbm_write_addr", "cc_src_bytes", "cc_dst_bytes"):
        col = getattr(c, name)
        assert isinstance(col, SparseColumn) and len(col) == n
        dense = col.dense()
        assert dense.shape == (n,) and dense.dtype == np.int64
        np.testing.assert_array_equal(dense[col.rows], col.values)
        off = np.ones(n, bool)
        off[col.rows] = False
        fill = core_chip[off] if name.endswith("_chip") else np.zeros(off.sum(), np.int64)
        np.testing.assert_array_equal(dense[off], fill)  # elsewhere: the issuing core's chip, or zero
        np.testing.assert_array_equal(np.asarray(col), dense)
        np.testing.assert_array_equal(col[idx], dense[idx])
        np.testing.assert_array_equal(col[idx[:3]], dense[idx[:3]])  # fewer lookups than values: searched
        np.testing.assert_array_equal(col[np.arange(n)[::-1]], dense[::-1])  # more: scattered
        np.testing.assert_array_equal(col[col.rows[:7]], col.values[:7])
        assert col[int(idx[0])] == dense[idx[0]] and col[-1] == dense[-1]
        assert col.sum() == dense.sum()
    assert (c.hbm_read.values > 0).any() and (c.cc_src_bytes.values > 0).any()


def test_sparse_column_refuses_masks_and_out_of_range_indices() -> None:
    col = SparseColumn(np.array([1, 4]), np.array([10, 40]), 6)
    np.testing.assert_array_equal(col.dense(), [0, 10, 0, 0, 40, 0])
    with pytest.raises(TypeError, match="mask"):
        col[np.ones(6, bool)]
    with pytest.raises(IndexError, match="6 instructions"):
        col[np.array([6])]
    with pytest.raises(ValueError, match="2 rows but 1 values"):
        SparseColumn(np.array([1, 4]), np.array([10]), 6)


def test_narrow_columns_keep_every_value_or_refuse() -> None:
    small = np.array([0, 7, 2**32 - 1], np.int64)
    assert narrow_unsigned(small).dtype == np.uint32
    np.testing.assert_array_equal(narrow_unsigned(small), small)
    big = np.array([0, 2**32], np.int64)  # does not fit: stays int64, never wraps
    assert narrow_unsigned(big).dtype == np.int64
    np.testing.assert_array_equal(narrow_unsigned(big), big)
    np.testing.assert_array_equal(narrow_int32(np.array([-1, 2**31 - 1]), "x"), [-1, 2**31 - 1])
    with pytest.raises(InfsimError, match=r"instruction 1: barrier target 2147483648 does not fit"):
        narrow_int32(np.array([3, 2**31]), "barrier target")


def test_energy_counts_are_narrow_and_sum_as_the_dense_columns() -> None:
    p = _program()
    c = compute_costs(p, CHIP)
    assert c.mac_dtype.dtype == np.int8 and c.macs.dtype == np.uint32
    assert c.sbuf_bytes.dtype == np.uint32 and c.vector_ops.dtype == np.uint32
    hbm = (c.hbm_read.dense() + c.hbm_write.dense()).astype(np.float64)
    args = (CHIP.energy, c.macs.astype(np.float64), c.mac_dtype.astype(np.int64), c.sbuf_bytes.astype(np.int64),
            c.psum_bytes.astype(np.int64), hbm, c.vector_ops.astype(np.int64), c.scalar_ops.astype(np.int64))
    dense = dict(per_instruction_pj(*args))  # the int64/float64 columns, summed all at once as before
    total = sum(dense.values())
    ops = p.instr["op"].astype(np.int64)
    by_class = np.bincount(ops, weights=total, minlength=len(Op))
    rep = energy_report(CHIP.energy, p.instr["op"], per_instruction_pj(CHIP.energy, c.macs, c.mac_dtype, c.sbuf_bytes,
                        c.psum_bytes, hbm, c.vector_ops, c.scalar_ops), 0.0, 1000, 1)
    for k, v in dense.items():
        assert rep.by_component[k] == float(v.sum()) * 1e-12  # bit for bit
    for o in Op:
        if by_class[int(o)] > 0:
            assert rep.by_class[o.name] == float(by_class[int(o)]) * 1e-12


def test_stream_order_is_the_streams_concatenated_without_a_copy() -> None:
    p = _program()
    order = p.stream_order()
    np.testing.assert_array_equal(order, np.concatenate(list(p.streams().values())))
    assert all(np.shares_memory(order, idx) for idx in p.streams().values())


@pytest.mark.parametrize("streams,sems", [(3, 4), (24, 24)])  # the second overflows the first pass's pair buffer
def test_stream_tables_list_every_signalling_stream(streams: int, sems: int) -> None:
    from infsim.engine.numba_engine import _signallers

    rng = np.random.default_rng(streams)
    per = 30
    n = streams * per
    order = rng.permutation(n).astype(np.int64)
    begin = np.arange(streams, dtype=np.int64) * per
    lens = np.full(streams, per, np.int64)
    own = rng.integers(0, 1000, n).astype(np.int64)
    ssem = rng.integers(-1, sems, (n, 2)).astype(np.int32)
    xrow = np.full(n, -1, np.int32)
    xrow[order[0]] = -2  # one barrier, on semaphore 0
    bar_s = np.array([0], np.int32)
    sigsuf, ptr, lst = _signallers(order, begin, lens, own, ssem, xrow, bar_s, sems)
    want: dict[int, set[int]] = {s: set() for s in range(sems)}
    for k in range(streams):
        idx = order[begin[k]:begin[k] + per]
        np.testing.assert_array_equal(sigsuf[idx], np.minimum.accumulate(own[idx][::-1])[::-1])
        for i in idx:
            for s in ssem[i]:
                if s >= 0:
                    want[int(s)].add(k)
    want[0].add(0)
    for s in range(sems):
        assert lst[ptr[s]:ptr[s + 1]].tolist() == sorted(want[s])
