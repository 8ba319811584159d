"""Sweeps that teach the right thing: an axis that cannot act is reported, workloads can use all cores of the
chip (following a cores_per_chip axis) or of the instance, and static power follows the core count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infsim.cli import main
from infsim.config import load_chip
from infsim.studies.sweep import SweepError, inert_axes, load_spec, run_sweep

WL = {"model": "gpt2", "phase": "decode", "batch": 1, "context": 64}


def test_fixed_tp_makes_a_core_axis_inert_and_tp_chip_does_not(tmp_path: Path) -> None:
    fixed = run_sweep({"base": "inf2", "axes": {"cores_per_chip": [2, 4]}, "workloads": [{**WL, "tp": 2}]},
                      tmp_path / "a", workers=1)
    inert = inert_axes(fixed)
    assert list(inert) == ["axis.cores_per_chip"] and "latency_ms" not in inert["axis.cores_per_chip"]
    assert "power_w" in inert["axis.cores_per_chip"]  # static power follows the cores even when idle
    follow = run_sweep({"base": "inf2", "axes": {"cores_per_chip": [2, 4]}, "workloads": [{**WL, "tp": "chip"}]},
                       tmp_path / "b", workers=1)
    assert inert_axes(follow) == {}
    assert sorted(follow["wl.tp"]) == [2, 4]


def test_tp_instance_uses_every_core_of_the_instance() -> None:
    s = load_spec({"base": "inf2", "workloads": [{**WL, "tp": "instance"}]})
    chip = load_chip("inf2")
    assert s.workloads[0].workload(chip.cores_per_chip, chip.instance.chips).tp == 24


def test_bad_tp_names_the_workload() -> None:
    with pytest.raises(SweepError, match=r"workloads\.0: tp must be >= 1"):
        load_spec({"base": "inf2", "workloads": [{**WL, "tp": 0}]})


def test_static_power_follows_the_core_count() -> None:
    two, four = load_chip("inf2"), load_chip("inf2", {"cores_per_chip": 4})
    assert two.static_power_w == 50.0  # the preset's chip total is unchanged
    assert four.static_power_w == pytest.approx(two.energy.static_w + 4 * two.energy.static_w_per_core)
    assert four.static_power_w > two.static_power_w


def test_cli_warns_about_an_inert_axis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"base": "inf2", "axes": {"cores_per_chip": [2, 4]}, "workloads": [{**WL, "tp": 2}]}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "warning: axis cores_per_chip does not change the latency" in out and "tp: chip" in out
