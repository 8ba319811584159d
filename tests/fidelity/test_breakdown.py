"""The breakdown (infsim/breakdown.py): time per op category and the limiting resource, at both fidelities,
with the same categories; it adds up to the step and the two fidelities tell the same story."""

from __future__ import annotations

import dataclasses
import json

import pytest

import infsim
from infsim.breakdown import CATEGORIES, RESOURCES, Breakdown, Part, build, weight_category
from infsim.cli import main
from infsim.config import load_chip
from infsim.models.spec import load_model
from infsim.runner import run_workload

CHIP = load_chip("inf2")
SPEC2 = dataclasses.replace(load_model("llama-2-7b"), layers=2)  # full-width layers, LM head, collectives


def _both(phase: str, batch: int, context: int) -> dict[str, dict]:
    from infsim.models.graph import Workload

    wl = Workload.make(phase, batch, context, tp=2)
    return {f: run_workload(CHIP, SPEC2, wl, fidelity=f).to_dict() for f in ("analytical", "cycle")}


@pytest.fixture(scope="module")
def decode() -> dict[str, dict]:
    return _both("decode", 1, 2048)


@pytest.fixture(scope="module")
def prefill() -> dict[str, dict]:
    return _both("prefill", 1, 512)


@pytest.mark.parametrize("case", ["decode", "prefill"])
def test_same_categories_adding_up_to_the_step(case: str, request: pytest.FixtureRequest) -> None:
    for fid, r in request.getfixturevalue(case).items():
        bd = r["breakdown"]
        assert list(bd["categories"]) == list(CATEGORIES), fid
        assert sum(c["ms"] for c in bd["categories"].values()) == pytest.approx(r["latency_ms"], rel=1e-9), fid
        assert bd["total_ms"] == pytest.approx(r["latency_ms"], rel=1e-9)
        for c in bd["categories"].values():
            assert set(c["shares"]) <= set(RESOURCES) and 0 <= c["limit_share"] <= 1
            assert c["limit_share"] == max(c["shares"].values())


def test_decode_is_limited_by_the_weight_stream_and_prefill_by_the_tensor_engine(decode: dict, prefill: dict) -> None:
    """Both fidelities name the same limit: batch-1 decode streams weights (DMA engines / HBM), prefill of 512
    tokens computes them (tensor engine); the projections and MLP dominate, as the op graph says."""
    for fid in ("analytical", "cycle"):
        d, p = decode[fid]["breakdown"], prefill[fid]["breakdown"]
        assert d["step"]["limit"] in ("dma", "hbm"), fid
        assert d["categories"]["mlp"]["limit"] in ("dma", "hbm"), fid
        assert p["step"]["limit"] == "tensor" and p["categories"]["mlp"]["limit"] == "tensor", fid
        assert d["categories"]["collectives"]["limit"] == "latency", fid  # 8 kB all-reduces: fixed step costs


@pytest.mark.parametrize("case", ["decode", "prefill"])
def test_fidelities_agree_per_category(case: str, request: pytest.FixtureRequest) -> None:
    r = request.getfixturevalue(case)
    a, c = r["analytical"]["breakdown"]["categories"], r["cycle"]["breakdown"]["categories"]
    for cat in ("projections", "attention", "mlp", "lm_head"):
        assert a[cat]["ms"] == pytest.approx(c[cat]["ms"], rel=0.35), cat


def test_build_shares_and_latency() -> None:
    bd = build({"mlp": Part(100.0, {"hbm": 80.0, "tensor": 30.0}), "norms": Part(50.0, {"vector": 10.0})}, 160.0,
               "analytical")
    assert bd.categories["mlp"]["limit"] == "hbm" and bd.categories["mlp"]["limit_share"] == pytest.approx(0.8)
    assert bd.categories["norms"]["limit"] == "latency" and bd.categories["norms"]["limit_share"] == pytest.approx(0.8)
    assert bd.categories["other"]["ms"] == pytest.approx(10e-6)  # time no category covers
    assert bd.step["shares"]["hbm"] == pytest.approx(0.5)
    cols = bd.columns()
    assert cols["bd.mlp_ms"] == pytest.approx(1e-4) and cols["bd.limit"] == "hbm"


def test_runtime_slot() -> None:
    bd = build({"mlp": Part(1e6, {"hbm": 9e5})}, 1e6, "analytical").with_runtime(3.0)
    assert bd.total_ms == pytest.approx(4.0)
    assert bd.categories["runtime"]["ms"] == 3.0 and bd.step["limit"] == "runtime"
    assert "serving stack" in bd.table()
    assert Breakdown(**bd.to_dict()).to_dict() == bd.to_dict()


def test_weight_category() -> None:
    assert weight_category("L3.w_up.r0") == "mlp" and weight_category("L0.e5.w_down.r1") == "mlp"
    assert weight_category("L3.wq.r0") == "projections" and weight_category("lm_head.r2") == "lm_head"


def test_cli_prints_and_returns_the_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "gpt2", "--context", "64", "--fidelity", "analytical"]) == 0
    out = capsys.readouterr().out
    assert "limited by:" in out and "op category" in out and "projections" in out
    assert main(["run", "--model", "gpt2", "--context", "64", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["breakdown"]) == {"fidelity", "total_ms", "categories", "step"}
    assert d["breakdown"]["fidelity"] == "cycle"


def test_sweep_rows_have_breakdown_columns(tmp_path) -> None:
    from infsim.studies.sweep import run_sweep

    spec = {"base": "inf2", "axes": {"hbm.bandwidth_gbps": [400, 1600]},
            "workloads": [{"model": "gpt2", "context": 64, "tp": 1}]}
    df = run_sweep(spec, tmp_path, workers=1)
    assert {"bd.mlp_ms", "bd.attention_ms", "bd.limit", "bd.limit_share"} <= set(df.columns)
    assert (df["bd.limit"] != "").all()


def test_infsim_run_is_importable_with_breakdown() -> None:
    r = infsim.run("inf2", "gpt2", phase="prefill", batch=1, context=32, fidelity="analytical")
    assert r.breakdown["step"]["limit"] in RESOURCES
