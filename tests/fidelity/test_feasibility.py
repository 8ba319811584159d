"""Feasibility (infsim/feasibility.py): every fidelity refuses the same steps, with the same limit, and sweeps
that cross a capacity limit record those points as infeasible rows without a latency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import infsim
from infsim.cli import main
from infsim.config import load_chip
from infsim.feasibility import InfeasibleError
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.lower.plan import check_feasible
from infsim.models.spec import load_model
from infsim.studies.sweep import run_sweep


@pytest.mark.parametrize("fidelity", ["analytical", "cycle"])
def test_llama_70b_on_one_core_is_refused_at_every_fidelity(fidelity: str) -> None:
    with pytest.raises(InfeasibleError, match=r"needs 128\.\d GiB of HBM.*hbm\.capacity_gib") as e:
        infsim.run("inf2", "llama-2-70b", tp=1, fidelity=fidelity)
    assert e.value.limit == "hbm"


def test_cli_exits_1_naming_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "llama-2-70b", "--tp", "1", "--fidelity", "analytical"]) == 1
    err = capsys.readouterr().err
    assert "infeasible (hbm)" in err and "hbm.capacity_gib" in err and "Traceback" not in err


def test_the_check_is_the_lowerings_own_count() -> None:
    """check_feasible counts exactly the HBM bytes the lowered program declares, so the cycle fidelity's
    lowering and the analytical fidelity refuse at the same capacity."""
    chip = load_chip("inf2")
    spec = load_model("gpt2")
    wl = Workload.make("decode", 4, 256, tp=2)
    plan = check_feasible(spec, wl, chip)
    lw = lower(spec, wl, chip)
    declared = sum(t.num_bytes for t in lw.program.tensors.values())
    assert plan.hbm_bytes_per_chip == {0: declared}
    need_gib = declared / 2**30
    for fid in ("analytical", "cycle"):
        tight = load_chip("inf2", {"hbm.capacity_gib": need_gib * 0.999})
        with pytest.raises(InfeasibleError, match="GiB of HBM"):
            infsim.runner.run_workload(tight, spec, wl, fidelity=fid)
        roomy = load_chip("inf2", {"hbm.capacity_gib": need_gib * 1.001})
        assert infsim.runner.run_workload(roomy, spec, wl, fidelity=fid).latency_ms > 0


def test_sbuf_too_small_is_infeasible_at_the_analytical_fidelity_too() -> None:
    """The analytical model once estimated a step the lowering cannot place in SBUF with a nominal plan."""
    chip = load_chip("inf2", {"sbuf.bytes_per_partition": 4096})
    with pytest.raises(InfeasibleError, match=r"sbuf\.bytes_per_partition") as e:
        infsim.run(chip, "gpt2", phase="prefill", context=128, fidelity="analytical")
    assert e.value.limit == "sbuf"


def test_more_chips_than_the_instance_is_infeasible() -> None:
    with pytest.raises(InfeasibleError, match=r"instance\.chips") as e:
        infsim.run("inf2", "gpt2", tp=64, fidelity="analytical")
    assert e.value.limit == "instance"


def test_a_tp_too_large_for_a_float_is_refused_as_the_instance() -> None:
    """A --tp past float range (found by the fuzzer: 10**400) is the same refusal, not an OverflowError."""
    with pytest.raises(InfeasibleError, match=r"instance\.chips") as e:
        infsim.run("inf2", "gpt2", tp=10**400, fidelity="analytical")
    assert e.value.limit == "instance"


@pytest.mark.parametrize("fidelity", ["analytical", "cycle"])
def test_sweep_across_the_capacity_limit(tmp_path: Path, fidelity: str) -> None:
    """gpt2 (bf16 weights ~0.25 GiB) on capacities below and above its need: the small ones are rows with
    feasible=False, limit 'hbm', the reason, and no latency."""
    spec = {"base": "inf2", "fidelity": fidelity, "axes": {"hbm.capacity_gib": [0.05, 0.2, 1.0, 32]},
            "workloads": [{"model": "gpt2", "phase": "decode", "batch": 1, "context": 64, "tp": 1}]}
    df = run_sweep(spec, tmp_path, workers=1).sort_values("axis.hbm.capacity_gib")
    assert df["feasible"].tolist() == [False, False, True, True]
    bad = df[~df["feasible"]]
    assert (bad["limit"] == "hbm").all() and bad["latency_ms"].isna().all()
    assert bad["error"].str.contains("GiB of HBM").all()
    assert (df[df["feasible"]]["latency_ms"] > 0).all()


def test_sweep_cli_reports_infeasible_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"base": "inf2", "axes": {"hbm.capacity_gib": [0.05, 32]},
                                "workloads": [{"model": "gpt2", "context": 64, "tp": 1}]}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 infeasible" in out and "hbm limit" in out
