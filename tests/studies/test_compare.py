"""infsim compare: table contract, Shapley attribution sums to the mean log speedup, hybrids, CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest

from infsim.cli import main
from infsim.config import CHIP_PATHS, load_chip
from infsim.config.loader import preset_names
from infsim.errors import ConfigError, InfsimError
from infsim.hw.links import Topology
from infsim.models.graph import Workload
from infsim.runner import run
from infsim.studies.compare import GROUPS, NOT_RESOURCES, chips_needed, compare, hybrid

WLS = [Workload.make("decode", 1, 256), Workload.make("prefill", 1, 128, dtype="fp8_e4m3")]


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


def test_chips_needed_holds_the_serving_stacks_buckets() -> None:
    """A serving stack compiled for the model's positions pads a decode step's KV cache to its bucket (4,095
    cached tokens for Llama-2-7B under tnx): the chip count the comparison picks must hold that, so every
    step of ``infsim compare --serving tnx`` is feasible (it was refused: 38 GiB on a 32 GiB chip)."""
    from infsim.mapping import physical_workload
    from infsim.models.lower.plan import check_feasible
    from infsim.models.spec import load_model
    from infsim.serving import load_serving

    inf2, spec, stack = load_chip("inf2"), load_model("llama-2-7b"), load_serving("tnx")
    wl = Workload.make("decode", 32, 2048)
    assert chips_needed(inf2, "llama-2-7b", [wl]) == 2
    n = chips_needed(inf2, "llama-2-7b", [wl], "tnx")
    assert n == 3
    dev = stack.device_workload(wl, stack.compiled_length(wl, spec, None))
    for chips, ok in ((n - 1, False), (n, True)):
        phys = physical_workload(dataclasses.replace(dev, tp=chips * inf2.logical_cores_per_chip), inf2)
        if ok:
            check_feasible(spec, phys, inf2)
        else:
            with pytest.raises(InfsimError, match="infeasible \\(hbm\\)"):
                check_feasible(spec, phys, inf2)


def test_all_groups_hybrid_runs_like_the_target() -> None:
    base, targ = load_chip("inf2"), load_chip("nextgen-hbm3e")
    h = hybrid(base, targ, list(GROUPS))
    a = run(h, "gpt2", phase="decode", batch=1, context=256, tp=h.cores_per_chip, fidelity="analytical")
    b = run(targ, "gpt2", phase="decode", batch=1, context=256, tp=targ.cores_per_chip, fidelity="analytical")
    assert a.latency_ms == pytest.approx(b.latency_ms, rel=1e-12)


def test_every_chip_field_is_in_exactly_one_group() -> None:
    owners: dict[str, list[str]] = {}
    for g, members in [*GROUPS.items(), ("(not a resource)", list(NOT_RESOURCES))]:
        for m in members:
            CHIP_PATHS.check(m)  # every member is a valid path
            for leaf in CHIP_PATHS.leaves():
                if leaf == m or leaf.startswith(m + "."):
                    owners.setdefault(leaf, []).append(f"{g}:{m}")
    assert [p for p in CHIP_PATHS.leaves() if p not in owners] == []
    assert {p: o for p, o in owners.items() if len(o) > 1} == {}


def test_hybrid_rejects_a_bad_group_member(monkeypatch: pytest.MonkeyPatch) -> None:
    base, targ = load_chip("inf2"), load_chip("trn2")
    monkeypatch.setitem(GROUPS, "hbm", ["hbm.bandwith_gbps"])  # a typo is an error, never silently skipped
    with pytest.raises(ConfigError, match=r"hbm\.bandwith_gbps: no such field \(did you mean hbm\.bandwidth_gbps"):
        hybrid(base, targ, ["hbm"])
    with pytest.raises(InfsimError, match="unknown resource group"):
        hybrid(base, targ, ["hmb"])


def test_hybrid_takes_exactly_the_targets_values() -> None:
    base, inf1 = load_chip("inf2"), load_chip("inf1")
    h = hybrid(base, inf1, ["precision", "compute"])
    assert h.tensor_engine.macs_per_pe_per_cycle == inf1.tensor_engine.macs_per_pe_per_cycle  # no fp8/fp32 left
    assert h.energy.mac_pj == inf1.energy.mac_pj  # a dtype's MAC energy goes with its rate
    assert h.energy.model_copy(update={"mac_pj": base.energy.mac_pj}) == base.energy and h.hbm == base.hbm
    assert h.instance == base.instance and h.links == base.links


def test_every_hybrid_of_every_preset_pair_is_a_valid_chip() -> None:
    """Fields validated together share a group: no coalition of any two presets builds an invalid chip (e.g.
    trn2's 4x4 torus on inf2's 12-chip instance)."""
    chips = [load_chip(n) for n in preset_names()]
    for base, targ in itertools.permutations(chips, 2):
        for r in range(1, len(GROUPS) + 1):
            for coal in itertools.combinations(GROUPS, r):
                Topology.from_chip(hybrid(base, targ, coal))  # raises ConfigError where invalid


@pytest.mark.parametrize("other", [n for n in preset_names() if n != "inf2"])
def test_compare_with_attribution_runs_for_every_preset_against_inf2(other: str) -> None:
    wls = [Workload.make("decode", 1, 64)]  # one small step: 2 x 127 analytical runs
    for base, targ in (("inf2", other), (other, "inf2")):
        res = compare(base, targ, "gpt2", workloads=wls)
        assert set(res.attribution) == set(GROUPS)
        assert sum(res.attribution_log.values()) == pytest.approx(
            sum(math.log(r.speedup) for r in res.rows) / len(res.rows), abs=1e-9)



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


@pytest.mark.parametrize("inf1_side", ["target", "baseline"])
def test_a_dtype_a_chip_has_no_rate_for_is_an_infeasible_workload(inf1_side: str) -> None:
    """Regression: ``compare`` with inf1 on either side aborted the whole study ("no fp8_e4m3 rate") on the
    default set's fp8 workloads. Now such a workload is listed as infeasible for that chip (limit, reason
    naming the chip, the dtype and the field), and the rows, geomeans and attribution cover the others."""
    wls = [Workload.make("decode", 1, 64), Workload.make("decode", 1, 64, dtype="fp8_e4m3")]
    base, targ = ("inf2", "inf1") if inf1_side == "target" else ("inf1", "inf2")
    res = compare(base, targ, "gpt2", workloads=wls)
    assert [(r.phase, r.dtype) for r in res.rows] == [("decode", "bf16")]
    (bad,) = res.infeasible
    assert (bad.phase, bad.batch, bad.context, bad.dtype, bad.chip, bad.limit) == (
        "decode", 1, 64, "fp8_e4m3", inf1_side, "dtype")
    assert "chip 'inf1'" in bad.reason and "fp8_e4m3" in bad.reason and "macs_per_pe_per_cycle" in bad.reason
    assert res.geomean_speedup == pytest.approx(res.rows[0].speedup)
    assert sum(res.attribution_log.values()) == pytest.approx(math.log(res.rows[0].speedup), abs=1e-9)
    assert any("cover 1 of the 2 workloads" in n for n in res.notes)
    assert res.to_dict()["infeasible"][0]["limit"] == "dtype"


def test_no_workload_both_chips_run_is_an_error() -> None:
    with pytest.raises(InfsimError, match=r"no workload of the set runs on both chips.*chip 'inf1'"):
        compare("inf2", "inf1", "gpt2", workloads=[Workload.make("decode", 1, 64, dtype="fp8_e4m3")],
                attribution=False)


def test_cli_compare_lists_infeasible_workloads(capsys) -> None:  # noqa: ANN001
    assert main(["compare", "--baseline", "inf1", "--target", "inf2", "--model", "gpt2", "--context", "64",
                 "--no-attribution"]) == 0
    out = capsys.readouterr().out  # --context 64 makes the two prefills one: 4 workloads per dtype
    assert "infeasible (4 workload(s)" in out and "over 4 of 8 workloads" in out
    assert out.count("has no tensor_engine.macs_per_pe_per_cycle rate for fp8_e4m3") == 4


def test_chips_needed_checks_every_workload_past_a_dtype_refusal() -> None:
    """A workload refused for its dtype must not end the search for the chip count the others need."""
    big = Workload.make("decode", 32, 2000)  # 8 chips of inf1 where weights + KV cache at 90% fill ask 7
    fp8 = Workload.make("decode", 1, 64, dtype="fp8_e4m3")
    chip = load_chip("inf1")
    assert chips_needed(chip, "llama-2-7b", [fp8, big]) == chips_needed(chip, "llama-2-7b", [big])
