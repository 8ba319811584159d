"""Engine behaviour: timing rules, deadlocks, collectives, results contract, examples on every preset."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infsim.config import load_chip, preset_names
from infsim.engine.costs import cycles_to_ps
from infsim.isa import DType, Program, hbm, make, psum, sbuf
from infsim.isa.errors import DeadlockError
from infsim.sim import simulate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(glob.glob(str(ROOT / "examples" / "asm" / "*.s")))
INF2 = load_chip("inf2")


def _vec_prog(n: int = 3, chain: bool = True) -> Program:
    p = Program(1, 2)
    for i in range(n):
        kw = {}
        if chain and i > 0:
            kw = {"waits": [("s", i)]}
        eng = "vector" if i % 2 == 0 else "gpsimd"
        p.append(make("tensor_copy", sbuf(128, 512, DType.bf16), sbuf(128, 512, DType.bf16, offset=4096), engine=eng,
                      signals=[("s", 1)], **kw))
    return p


def test_chained_elementwise_times() -> None:
    r = simulate(_vec_prog(3), INF2, trace=True)
    tl = r.timeline
    ve, ge = INF2.vector_engine, INF2.gpsimd_engine
    d_v = int(cycles_to_ps(ve.fixed_overhead_cycles + 512, ve.clock_ghz))
    d_g = int(cycles_to_ps(ge.fixed_overhead_cycles + 512, ge.clock_ghz))
    assert tl.start_ps.tolist() == [0, d_v, d_v + d_g]
    assert r.total_ps == 2 * d_v + d_g
    eng = r.to_dict()["engines"]
    assert eng["core0.gpsimd"]["stall_cycles"] == r.cycles(d_v)
    assert eng["core0.vector"]["instructions"] == 2


def test_back_to_back_matmuls_pipeline() -> None:
    p = Program(1, 2)
    for _ in range(4):
        p.append(make("matmul", psum(128, 512), sbuf(128, 128, DType.bf16), sbuf(128, 512, DType.bf16, offset=4096)))
    r = simulate(p, INF2, trace=True)
    te = INF2.tensor_engine
    gaps = np.diff(r.timeline.start_ps)
    # first: LoadStationary not hidden; then stationary reused: issue interval max(N, 64) cycles
    assert gaps[0] > gaps[1]
    assert gaps[1:].tolist() == [int(cycles_to_ps(512, te.clock_ghz))] * 2
    assert r.timeline.end_ps[-1] > r.timeline.start_ps[-1] + gaps[0]  # fill/drain latency beyond the interval


def test_deadlock_names_everything() -> None:
    p = Program(1, 2)
    p.append(make("tensor_copy", sbuf(1, 1, DType.fp32), sbuf(1, 1, DType.fp32), waits=[("a", 1)], signals=[("b", 1)]))
    p.append(make("activate", sbuf(1, 1, DType.fp32), sbuf(1, 1, DType.fp32), func="exp", waits=[("b", 1)],
                  signals=[("a", 1)]))
    p.append(make("dma_copy", sbuf(1, 4, DType.fp32), sbuf(1, 4, DType.fp32, offset=64), queue=3, waits=[("a", 2)]))
    for mode in ("numba", "plain"):
        with pytest.raises(DeadlockError) as ei:
            simulate(p, INF2, mode=mode)
        msg = str(ei.value)
        for part in ("core 0 engine vector queue 0", "instruction 0", "(tensor_copy)", "semaphore 'a' >= 1",
                     "current value 0", "engine scalar", "'b' >= 1", "engine dma queue 3", "instruction 2"):
            assert part in msg, (part, msg)
    with pytest.raises(DeadlockError) as ei:  # the analytical scoreboard names the semaphores too (issue 16)
        simulate(p, INF2, fidelity="analytical")
    msg = str(ei.value)
    for part in ("core 0 engine vector queue 0: instruction 0 (tensor_copy) waits on semaphore 'a' >= 1, which only "
                 "reaches 0", "engine scalar queue 0: instruction 1 (activate) waits on semaphore 'b' >= 1",
                 "engine dma queue 3: instruction 2 (dma_copy) waits on semaphore 'a' >= 2"):
        assert part in msg, (part, msg)


def test_dma_queues_sharing_an_engine_serialise() -> None:
    def prog(q2: int) -> Program:
        p = Program(1, 2)
        p.add_tensor("x", "bf16", (128, 512))
        for q in (0, q2):
            p.append(make("dma_copy", sbuf(128, 512, DType.bf16), hbm("x", 128, 512, DType.bf16), queue=q))
        return p

    apart = simulate(prog(1), INF2, trace=True)
    shared = simulate(prog(16), INF2, trace=True)  # queue 16 -> engine 0, like queue 0
    assert apart.timeline.start_ps.tolist() == [0, 0]
    assert shared.total_ps > apart.total_ps
    # the engine alternates 64 KiB chunks (dma.arbitration_bytes) of the two 128 KiB transfers: the second
    # starts after the first's first chunk, and the first finishes one chunk before the second
    t = shared.timeline
    half = (t.occ_end_ps[1] - t.start_ps[0]) // 4
    assert t.start_ps[1] == pytest.approx(half, abs=2)
    assert t.occ_end_ps[0] == pytest.approx(3 * half, abs=2)
    # whole transfers when the arbitration granularity is unset
    whole = simulate(prog(16), load_chip("inf2", ["dma.arbitration_bytes=null"]), trace=True)
    assert whole.timeline.start_ps[1] == whole.timeline.occ_end_ps[0]
    assert whole.total_ps == pytest.approx(shared.total_ps, rel=1e-3)  # same bytes, same HBM


def test_hbm_bandwidth_is_shared_by_the_chip() -> None:
    p = Program(2, 2)
    p.add_tensor("x", "bf16", (128, 512))
    for core in (0, 1):
        for q in range(16):
            p.append(make("dma_copy", sbuf(128, 512, DType.bf16), hbm("x", 128, 512, DType.bf16), queue=q, core=core))
    fast = simulate(p, INF2)
    slow = simulate(p, load_chip("inf2", {"hbm.bandwidth_gbps": 100.0}))
    assert slow.total_ps > 1.5 * fast.total_ps
    assert slow.hbm_gbps < 100.0
    assert fast.hbm_bytes_read == 32 * 128 * 512 * 2


def test_all_reduce_ring_and_barrier() -> None:
    p = Program(2, 2)
    p.add_group("g", (0, 1))
    for c in (0, 1):
        p.append(make("all_reduce", sbuf(128, 512, DType.fp32), sbuf(128, 512, DType.fp32, offset=4096), group="g",
                      core=c))
        p.append(make("barrier", core=c, sem="bar", count=2))
    lk = INF2.links
    r = simulate(p, INF2, trace=True)
    step = lk.collective_step_overhead_ns + lk.intra_chip_latency_ns + 128 * 512 * 4 / 2 / lk.intra_chip_gbps
    assert r.timeline.end_ps[0] == pytest.approx((lk.collective_launch_overhead_ns + 2 * step) * 1000, abs=1)
    assert r.timeline.end_ps.tolist()[0] == r.timeline.end_ps.tolist()[2]
    a = simulate(p, INF2, fidelity="analytical")
    assert a.total_ps == r.total_ps


def test_result_contract_and_table() -> None:
    r = simulate(_vec_prog(4), "inf2")
    d = r.to_dict()
    for key in ("total_cycles", "total_ns", "engines", "hbm_bytes_read", "hbm_bytes_written", "energy_j"):
        assert key in d
    for e in d["engines"].values():
        assert {"busy_cycles", "instructions", "stall_cycles", "idle_cycles"} <= set(e)
        assert e["busy_cycles"] + e["stall_cycles"] + e["idle_cycles"] <= d["total_cycles"] + 2
    assert d["total_ns"] == pytest.approx(d["total_cycles"] / r.clock_ghz, abs=1)
    assert d["energy_breakdown_j"]["static"] == pytest.approx(INF2.static_power_w * r.total_ps * 1e-12)
    assert d["energy_j"] == pytest.approx(sum(d["energy_breakdown_j"].values()))
    json.dumps(d)
    t = r.engine_table()
    assert list(t.index) == ["core0.vector", "core0.gpsimd"]
    assert t.loc["core0.vector", "instructions"] == 2


def test_mac_energy() -> None:
    p = Program(1, 2)
    p.append(make("matmul", psum(128, 512), sbuf(128, 128, DType.bf16), sbuf(128, 512, DType.bf16, offset=4096)))
    r = simulate(p, INF2)
    assert r.energy_breakdown_j["mac"] == pytest.approx(128 * 128 * 512 * INF2.energy.mac_pj["bf16"] * 1e-12)
    assert r.energy_by_class_j["matmul"] > 0


@pytest.mark.skipif(not EXAMPLES, reason="examples/asm not written yet")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: Path(p).stem)
def test_examples_every_preset_and_analytical_within_10pct(path: str) -> None:
    from infsim.isa.asm import parse_file

    prog = parse_file(path)
    for chip in preset_names():
        cyc = simulate(prog, chip)
        ana = simulate(prog, chip, fidelity="analytical")
        assert cyc.total_cycles > 0
        assert abs(ana.total_ps / cyc.total_ps - 1) <= 0.10, (chip, cyc.total_ps, ana.total_ps)
        assert simulate(prog, chip, mode="plain").total_ps == cyc.total_ps


def test_analytical_within_10pct_synthetic() -> None:
    from infsim.engine.synthetic import synthetic_program

    p = synthetic_program(4000)
    for over in ({}, {"hbm.bandwidth_gbps": 60.0}):
        chip = load_chip("inf2", over)
        c, a = simulate(p, chip), simulate(p, chip, fidelity="analytical")
        assert abs(a.total_ps / c.total_ps - 1) <= 0.10


@pytest.mark.skipif(not EXAMPLES, reason="examples/asm not written yet")
def test_cli_sim_every_example_every_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from infsim.cli import main

    for path in EXAMPLES:
        for chip in preset_names():
            assert main(["sim", path, "--chip", chip, "--json"]) == 0
            d = json.loads(capsys.readouterr().out)
            assert d["total_cycles"] > 0 and d["engines"] and d["energy_j"] > 0
    # one real process, with the other options
    out = subprocess.run([sys.executable, "-m", "infsim", "sim", EXAMPLES[0], "--fidelity", "analytical",
                          "--set", "hbm.bandwidth_gbps=1600", "--trace", str(tmp_path / "t.json")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "total_cycles" in out.stdout


def test_cli_sim_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.s"
    bad.write_text("this is not assembly\n")
    out = subprocess.run([sys.executable, "-m", "infsim", "sim", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1 and "bad.s" in out.stderr and "Traceback" not in out.stderr


def test_collective_without_partner_is_a_deadlock() -> None:
    p = Program(2, 2)
    p.add_group("g", (0, 1))
    p.append(make("all_reduce", sbuf(128, 8, DType.fp32), sbuf(128, 8, DType.fp32, offset=64), group="g", core=0))
    p.append(make("nop", engine="vector", core=1))
    for mode in ("numba", "plain"):
        with pytest.raises(DeadlockError, match=r"core 0 engine cc queue 0: instruction 0 \(all_reduce\) waits for "
                                                r"collective partners: arrived cores \[0\] of \[0, 1\]"):
            simulate(p, INF2, mode=mode)
    with pytest.raises(DeadlockError, match=r"core 0 engine cc queue 0: instruction 0 \(all_reduce\) waits for the "
                                            r"cores of group 'g' \(1 of 2 arrivals\)"):
        simulate(p, INF2, fidelity="analytical")


def test_analytical_barrier_deadlock_names_the_semaphore() -> None:
    """A barrier of count 2 that only one core reaches (issue 16: the scoreboard named no semaphore)."""
    p = Program(2, 2)
    p.append(make("barrier", core=0, sem="bar", count=2))
    p.append(make("nop", engine="vector", core=1))
    with pytest.raises(DeadlockError, match=r"core 0 engine .*instruction 0 \(barrier\) waits at a barrier on "
                                            r"semaphore 'bar' for 2 arrivals; only 1 arrive"):
        simulate(p, INF2, fidelity="analytical")
