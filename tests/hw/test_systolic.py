"""Tensor-engine timing: the fast model (infsim.hw.systolic) against the cycle-by-cycle PE-grid
reference (infsim.hw.systolic_ref), against SCALE-Sim 3.0.0 golden outputs, and the ``infsim gemm``
command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infsim.cli import main
from infsim.config import load_chip
from infsim.config.schema import TensorEngineConfig
from infsim.errors import InfsimError
from infsim.hw.systolic import (
    gemm,
    gemm_sequence,
    matmul_cycles,
    matmul_timing,
    scalesim_gemm_cycles,
    transpose_timing,
)
from infsim.hw.systolic_ref import MatmulOp, simulate

GOLDEN = Path(__file__).parent.parent / "golden" / "scalesim_gemm.json"
RATES = (0.25, 0.5, 1.0, 2.0)


@pytest.fixture(scope="module")
def inf2_te() -> TensorEngineConfig:
    return load_chip("inf2", []).tensor_engine


def small_te(base: TensorEngineConfig, **update: object) -> TensorEngineConfig:
    return base.model_copy(update=update)


@st.composite
def engines(draw: st.DrawFn) -> dict:
    """Small tensor-engine configurations (the reference is slow on big arrays)."""
    return {
        "rows": draw(st.integers(1, 8)),
        "cols": draw(st.integers(1, 8)),
        "moving_free_max": draw(st.integers(1, 24)),
        "min_moving_cycles": draw(st.integers(0, 12)),
        "stationary_load_speedup": draw(st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0])),
        "pipeline_latency_cycles": draw(st.integers(0, 5)),
        "issue_overhead_cycles": draw(st.integers(0, 3)),
    }


@st.composite
def sequences(draw: st.DrawFn, rows: int, cols: int, nmax: int, rates: tuple[float, ...] = RATES) -> list:
    """1-4 matmuls (K, M, N, rate, reuse) where reuse keeps the previous stationary's K and M."""
    out: list[tuple[int, int, int, float, bool]] = []
    for i in range(draw(st.integers(1, 4))):
        reuse = i > 0 and draw(st.booleans())
        if reuse:
            k, m = out[-1][0], out[-1][1]
        else:
            k, m = draw(st.integers(1, rows)), draw(st.integers(1, cols))
        out.append((k, m, draw(st.integers(1, nmax)), draw(st.sampled_from(rates)), reuse))
    return out


def _run_both(te: TensorEngineConfig, seq: list, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ops, stats = [], []
    for (k, m, n, rate, reuse) in seq:
        stat = None if reuse else rng.integers(-4, 5, size=(k, m)).astype(float)
        stats.append(stats[-1] if reuse else stat)
        ops.append(MatmulOp(rng.integers(-4, 5, size=(k, n)).astype(float), stat, rate))
    ref = simulate(te, ops)
    for op, stat, out in zip(ops, stats, ref.outputs):
        np.testing.assert_array_equal(out, stat.T @ op.moving)
    k, m, n, rate, reuse = (np.array(col) for col in zip(*seq))
    busy, latency = matmul_timing(te, k, m, n, rate, ~reuse.astype(bool))
    assert busy.dtype == np.int64 and latency.dtype == np.int64
    np.testing.assert_array_equal(busy, ref.busy_cycles)
    np.testing.assert_array_equal(latency, ref.latency_cycles)
    start = np.concatenate([[0], np.cumsum(busy)[:-1]])
    assert (start + latency).max() == ref.complete.max()


# ---- fast model == cycle-by-cycle reference ------------------------------------------------------


@given(cfg=engines(), data=st.data())
def test_matmul_timing_matches_reference(inf2_te: TensorEngineConfig, cfg: dict, data: st.DataObject) -> None:
    te = small_te(inf2_te, **cfg)
    seq = data.draw(sequences(te.rows, te.cols, te.moving_free_max))
    _run_both(te, seq, seed=len(seq))


def test_matmul_timing_matches_reference_16x16(inf2_te: TensorEngineConfig) -> None:
    """A larger array with the preset's ratios (min 64-cycle MM, 4x LS) and LS that does and does not fit."""
    te = small_te(inf2_te, rows=16, cols=16, moving_free_max=96, min_moving_cycles=8)
    seq = [(16, 16, 96, 1.0, False), (16, 16, 5, 1.0, True), (9, 13, 3, 1.0, False),
           (16, 16, 40, 0.25, False), (16, 16, 17, 2.0, False)]
    _run_both(te, seq, seed=1)


def test_back_to_back_initiation_interval(inf2_te: TensorEngineConfig) -> None:
    """A hidden LS gives II = max(ceil(N/rate), min_moving_cycles); reuse needs no LS at all."""
    te = inf2_te
    rate = te.macs_per_pe_per_cycle["bf16"]
    ls = int(np.ceil(te.cols / te.stationary_load_speedup))
    for n in (1, te.min_moving_cycles, te.moving_free_max):
        occ = max(int(np.ceil(n / rate)), te.min_moving_cycles) + te.issue_overhead_cycles
        for new in (True, False):
            busy, _ = matmul_timing(te, np.full(6, te.rows), np.full(6, te.cols), np.full(6, n),
                                    np.full(6, rate), np.array([True] + [new] * 5))
            assert busy[0] == ls + occ
            expect = max(occ, ls) if new else occ
            assert (busy[1:] == expect).all(), (n, new, busy)


def test_isolated_matmul_cycles(inf2_te: TensorEngineConfig) -> None:
    te = inf2_te
    k, m, n = te.rows, te.cols, te.moving_free_max
    ls = int(np.ceil(m / te.stationary_load_speedup))
    expect = ls + (n - 1) + te.rows + m - 1 + te.pipeline_latency_cycles
    assert matmul_cycles(te, k, m, n, "bf16") == expect
    # fp32 streams one column every 1/rate cycles
    r32 = te.macs_per_pe_per_cycle["fp32"]
    assert matmul_cycles(te, k, m, n, "fp32") == expect + int((n - 1) / r32) - (n - 1)
    with pytest.raises(InfsimError, match="dtype"):
        matmul_cycles(te, k, m, n, "nope")


def test_transpose_is_matmul_with_identity(inf2_te: TensorEngineConfig) -> None:
    te = small_te(inf2_te, rows=8, cols=8, moving_free_max=16, min_moving_cycles=4)
    rng = np.random.default_rng(3)
    src = rng.standard_normal((6, 5))
    ref = simulate(te, [MatmulOp(np.eye(6), src, 1.0)])
    np.testing.assert_allclose(ref.outputs[0], src.T)
    busy, latency = transpose_timing(te, np.array([6]), np.array([5]), np.array([1.0]))
    assert busy[0] == ref.busy_cycles[0] and latency[0] == ref.latency_cycles[0]


def test_shape_limits_are_errors(inf2_te: TensorEngineConfig) -> None:
    te = inf2_te
    one = np.array([1.0])
    for k, m, n in ((te.rows + 1, 1, 1), (1, te.cols + 1, 1), (1, 1, te.moving_free_max + 1), (0, 1, 1)):
        with pytest.raises(InfsimError):
            matmul_timing(te, np.array([k]), np.array([m]), np.array([n]), one, np.array([True]))


# ---- GEMM ----------------------------------------------------------------------------------------


@given(m=st.integers(1, 700), n=st.integers(1, 700), k=st.integers(1, 300), df=st.sampled_from(["ws", "is"]),
       banks=st.sampled_from([None, 1, 2, 8]), dtype=st.sampled_from(["bf16", "fp32", "int8"]))
def test_gemm_walks_the_matmul_sequence(inf2_te: TensorEngineConfig, m: int, n: int, k: int, df: str,
                                        banks: int | None, dtype: str) -> None:
    te = small_te(inf2_te, rows=64, cols=32, moving_free_max=128)
    res = gemm(m, n, k, te, dtype=dtype, dataflow=df, psum_banks=banks)
    seq = gemm_sequence(m, n, k, te, dtype=dtype, dataflow=df, psum_banks=banks)
    busy, latency = matmul_timing(te, seq["k"], seq["m"], seq["n"], seq["rate"], seq["new_stationary"])
    start = np.concatenate([[0], np.cumsum(busy)[:-1]])
    assert res.total_cycles == int((start + latency).max())
    assert res.tiles == len(busy) and res.stationary_loads == int(seq["new_stationary"].sum())
    assert int((seq["k"] * seq["m"] * seq["n"]).sum()) == m * n * k == res.macs
    assert 0 < res.utilization <= 1
    assert res.total_ns == pytest.approx(res.total_cycles / te.clock_ghz)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 3000), n=st.integers(1, 3000), k=st.integers(1, 3000), df=st.sampled_from(["ws", "is"]),
       banks=st.sampled_from([None, 1, 3]), dtype=st.sampled_from(["bf16", "fp32", "int8"]),
       ls=st.sampled_from([1.0, 4.0]))
def test_gemm_extrapolation_equals_the_walk(inf2_te: TensorEngineConfig, m: int, n: int, k: int, df: str,
                                            banks: int | None, dtype: str, ls: float) -> None:
    """Long GEMMs repeat blocks that :func:`gemm` adds in one step: the same cycles as every matmul walked."""
    te = small_te(inf2_te, rows=32, cols=32, moving_free_max=64).model_copy(update={"stationary_load_speedup": ls})
    res = gemm(m, n, k, te, dtype=dtype, dataflow=df, psum_banks=banks)
    seq = gemm_sequence(m, n, k, te, dtype=dtype, dataflow=df, psum_banks=banks)
    busy, latency = matmul_timing(te, seq["k"], seq["m"], seq["n"], seq["rate"], seq["new_stationary"])
    start = np.concatenate([[0], np.cumsum(busy)[:-1]])
    assert res.total_cycles == int((start + latency).max())
    assert res.tiles == len(busy) and res.stationary_loads == int(seq["new_stationary"].sum())


def test_huge_gemm_is_closed_form_or_refused(inf2_te: TensorEngineConfig) -> None:
    """Issue 16: ``gemm 1000000 1000000 1000000`` ran for minutes, ``gemm 99999999999999999999999 1 1`` failed
    in numba's typing."""
    import time

    t0 = time.perf_counter()
    res = gemm(10**6, 10**6, 10**6, inf2_te)
    assert time.perf_counter() - t0 < 5
    assert res.tiles == 7813 * 1954 * 7813 and 0.99 < res.utilization <= 1
    with pytest.raises(InfsimError, match=r"beyond the .* cycles \(2\*\*62\) the model counts"):
        gemm(99999999999999999999999, 1, 1, inf2_te)
    with pytest.raises(InfsimError, match=r"is 1\.00e\+400 matmuls"):  # past float range (fuzzer: OverflowError)
        gemm(1, 1, 128 * 10**400, inf2_te)
    with pytest.raises(InfsimError, match=r"cycles in SCALE-Sim's closed form, beyond the .* \(2\*\*62\)"):
        gemm(1, 1, 10**400, inf2_te, dataflow="os", compat="scalesim")


def test_gemm_matches_reference_end_to_end(inf2_te: TensorEngineConfig) -> None:
    """A whole tiled GEMM on a 4x4 array: reference cycles and the assembled product."""
    te = small_te(inf2_te, rows=4, cols=4, moving_free_max=6, min_moving_cycles=3)
    m, n, k = 9, 7, 10
    rng = np.random.default_rng(7)
    a = rng.integers(-3, 4, size=(m, k)).astype(float)
    b = rng.integers(-3, 4, size=(k, n)).astype(float)
    seq = gemm_sequence(m, n, k, te, dataflow="ws", psum_banks=2)
    # rebuild the operands in the order gemm_sequence walks them (ws: B tiles stationary, A^T streamed)
    ops, where = [], []
    c = np.zeros((n, m))            # PSUM holds C^T in ws mode
    n_mov, group = -(-m // 6), 2
    for s in range(-(-n // 4)):
        for c0 in range(0, n_mov, group):
            for kt in range(-(-k // 4)):
                for ch in range(c0, min(n_mov, c0 + group)):
                    ks, ns, ms = slice(kt * 4, kt * 4 + 4), slice(s * 4, s * 4 + 4), slice(ch * 6, ch * 6 + 6)
                    first = ch == c0
                    ops.append(MatmulOp(a[ms, ks].T, b[ks, ns] if first else None, 1.0))
                    where.append((ns, ms))
    assert len(ops) == len(seq["k"])
    assert [op.stationary is not None for op in ops] == list(seq["new_stationary"])
    ref = simulate(te, ops)
    for out, (ns, ms) in zip(ref.outputs, where):
        c[ns, ms] += out
    np.testing.assert_allclose(c.T, a @ b)
    assert gemm(m, n, k, te, dataflow="ws", psum_banks=2).total_cycles == ref.complete.max()


def test_gemm_native_large_is_near_peak(inf2_te: TensorEngineConfig) -> None:
    res = gemm(2048, 2048, 2048, inf2_te)
    ideal = 2048**3 / (inf2_te.rows * inf2_te.cols)
    assert ideal <= res.total_cycles < 1.01 * ideal
    assert 0.99 < res.utilization <= 1


def test_gemm_native_os_is_an_error(inf2_te: TensorEngineConfig) -> None:
    with pytest.raises(InfsimError, match="output-stationary"):
        gemm(8, 8, 8, inf2_te, dataflow="os")
    with pytest.raises(InfsimError, match="compat"):
        gemm(8, 8, 8, inf2_te, compat="timeloop")


# ---- SCALE-Sim compatibility -----------------------------------------------------------------------


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_golden_file_is_scalesim_3() -> None:
    doc = _golden()
    assert doc["scalesim_version"] == "3.0.0"
    cases = doc["cases"].values()
    assert len(cases) >= 20
    assert {c["dataflow"] for c in cases} == {"os", "ws", "is"}
    assert all(c["stall_cycles"] == 0 for c in cases)


@pytest.mark.parametrize("key", sorted(_golden()["cases"]))
def test_scalesim_compat_matches_golden(inf2_te: TensorEngineConfig, key: str) -> None:
    c = _golden()["cases"][key]
    te = small_te(inf2_te, rows=c["rows"], cols=c["cols"])
    res = gemm(c["m"], c["n"], c["k"], te, dataflow=c["dataflow"], compat="scalesim")
    assert res.total_cycles == c["total_cycles"]
    assert res.utilization == pytest.approx(c["utilization"], rel=1e-12)


def test_scalesim_single_fold_closed_form() -> None:
    """One fold (everything fits): OS = K + R + C - 3, WS = M + 2R + C - 3, IS = N + 2R + C - 3."""
    r, c = 8, 6
    assert scalesim_gemm_cycles(5, 4, 7, r, c, "os") == (7 + r + c - 3, 1)
    assert scalesim_gemm_cycles(5, 4, 7, r, c, "ws") == (5 + 2 * r + c - 3, 1)
    assert scalesim_gemm_cycles(5, 4, 7, r, c, "is") == (4 + 2 * r + c - 3, 1)


# ---- CLI -----------------------------------------------------------------------------------------------


def test_cli_gemm_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gemm", "256", "512", "384", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_cycles"] > 0 and 0 < out["utilization"] <= 1
    assert out["total_ns"] == pytest.approx(out["total_cycles"] / 2.8)
    assert out["tiles"] > 0 and out["dataflow"] == "ws" and out["compat"] is None


def test_cli_gemm_scalesim_matches_golden(capsys: pytest.CaptureFixture[str]) -> None:
    c = _golden()["cases"]["100x37x130_12x20_is"]
    assert main(["gemm", "100", "37", "130", "--array", "12x20", "--dataflow", "is", "--compat", "scalesim",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_cycles"] == c["total_cycles"]
    assert out["utilization"] == pytest.approx(c["utilization"], rel=1e-12)


def test_cli_gemm_text_set_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gemm", "64", "64", "64", "--set", "tensor_engine.min_moving_cycles=0"]) == 0
    assert "total_cycles" in capsys.readouterr().out
    assert main(["gemm", "8", "8", "8", "--dataflow", "os"]) == 1
    assert "output-stationary" in capsys.readouterr().err
    assert main(["gemm", "8", "8", "8", "--dtype", "fp64"]) == 1
    with pytest.raises(SystemExit) as e:
        main(["gemm", "8", "8", "8", "--array", "12"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["gemm", "0", "8", "8"])
