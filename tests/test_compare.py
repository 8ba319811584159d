"""infsim compare: table contract, Shapley attribution sums to the mean log speedup, hybrids, CLI."""

from __future__ import annotations

import json
import math

import pytest

from infsim.cli import main
from infsim.compare import GROUPS, compare, hybrid
from infsim.config import load_chip
from infsim.runner import run

WLS = [("decode", 1, 256, "bf16"), ("prefill", 1, 128, "fp8_e4m3")]


@pytest.fixture(scope="module")
def result():  # noqa: ANN201
    return compare("inf2", "nextgen-hbm3e", "gpt2", workloads=WLS, chips=1)


def test_rows_and_attribution_sum(result) -> None:  # noqa: ANN001
    assert len(result.rows) == len(WLS)
    for r in result.rows:
        assert r.speedup == pytest.approx(r.baseline_latency_ms / r.target_latency_ms)
        assert r.perf_per_watt_ratio > 0 and r.target_cost_per_mtok_usd > 0
    mean_log = sum(math.log(r.speedup) for r in result.rows) / len(result.rows)
    assert sum(result.attribution_log.values()) == pytest.approx(mean_log, abs=1e-9)
    assert sum(result.attribution.values()) == pytest.approx(1.0, abs=1e-9)
    assert set(result.attribution) == set(GROUPS)


def test_all_groups_hybrid_runs_like_the_target() -> None:
    base, targ = load_chip("inf2"), load_chip("nextgen-hbm3e")
    h = hybrid(base, targ, list(GROUPS))
    a = run(h, "gpt2", phase="decode", batch=1, context=256, tp=h.cores_per_chip, fidelity="analytical")
    b = run(targ, "gpt2", phase="decode", batch=1, context=256, tp=targ.cores_per_chip, fidelity="analytical")
    assert a.latency_ms == pytest.approx(b.latency_ms, rel=1e-12)


def test_no_group_hybrid_is_the_baseline() -> None:
    base = load_chip("inf2")
    assert hybrid(base, load_chip("trn2"), []) is base


def test_cli_compare_json(tmp_path, capsys) -> None:
    out = tmp_path / "c.png"
    assert main(["compare", "--baseline", "inf2", "--target", "nextgen-decode", "--model", "llama-2-7b",
                 "--no-attribution", "--json", "--plot", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"rows", "attribution"} <= set(d)
    assert all("speedup" in r and "perf_per_watt_ratio" in r for r in d["rows"])
    assert out.exists() and out.stat().st_size > 0
