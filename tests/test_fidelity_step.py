"""The step-level analytical fidelity (:mod:`infsim.fidelity.step`, ``infsim run --fidelity analytical``:
closed forms per op) against the cycle engine.

* Full-size Llama-2-7B on one inf2 chip (TP 2), decode and prefill, bf16 and fp8.
* Every workload of the flagship study's default set (``infsim.studies.compare.DEFAULT_WORKLOADS``: decode batch
  1/8/32 at context 2048, prefill 512/2048, bf16 and fp8) on each chip of the study with the study's
  two chips per side, on a 2-layer Llama-2-7B (full-width layers, LM head and collectives; the layer
  count only repeats the same per-layer schedule, and 32 layers of prefill 2048 take minutes per run).
  Observed: analytical/cycle 0.91-1.05 over the 30 cases.
"""

from __future__ import annotations

import dataclasses

import pytest

from infsim.config import load_chip
from infsim.fidelity.step import estimate
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.spec import load_model
from infsim.sim import simulate
from infsim.studies.compare import DEFAULT_WORKLOADS

CHIP = load_chip("inf2")
SPEC = load_model("llama-2-7b")


@pytest.mark.parametrize(
    "phase,batch,context,tp,dtype",
    [
        ("decode", 1, 2048, 2, "bf16"),
        ("decode", 8, 2048, 2, "bf16"),
        ("decode", 1, 2048, 2, "fp8_e4m3"),
        ("prefill", 1, 512, 2, "bf16"),
    ],
)
@pytest.mark.slow  # full-size Llama-2-7B lowered and simulated cycle by cycle
def test_analytical_within_10_percent_of_cycle(phase: str, batch: int, context: int, tp: int, dtype: str) -> None:
    wl = Workload.make(phase, batch, context, tp=tp, dtype=dtype)
    est = estimate(SPEC, wl, CHIP)
    cyc = simulate(lower(SPEC, wl, CHIP).program, CHIP)
    assert est.total_ns == pytest.approx(cyc.total_ns, rel=0.10)


def test_analytical_bytes_match_graph_minimum() -> None:
    wl = Workload.make("decode", 1, 2048, tp=2)
    est = estimate(SPEC, wl, CHIP)
    assert est.total_ns > 0
    assert est.hbm_bytes == pytest.approx(est.graph.hbm_bytes(), rel=0.05)


def test_analytical_scales_with_hbm_bandwidth() -> None:
    wl = Workload.make("decode", 1, 2048, tp=2)
    slow = estimate(SPEC, wl, load_chip("inf2", ["hbm.bandwidth_gbps=200"]))
    fast = estimate(SPEC, wl, CHIP)
    assert slow.total_ns > 1.5 * fast.total_ns


_CASES = [
    pytest.param(chip, w, id=f"{chip}-{w.phase}-b{w.batch}-c{w.prompt_or_context}-{w.weight_dtype}")
    for chip in ("inf2", "nextgen-hbm3e", "nextgen-decode")
    for w in DEFAULT_WORKLOADS
]


@pytest.mark.slow  # each case lowers and simulates a 2-layer step cycle by cycle
@pytest.mark.parametrize("chip_name,workload", _CASES)
def test_default_set_analytical_within_10_percent(chip_name: str, workload: Workload) -> None:
    chip = load_chip(chip_name)
    spec = dataclasses.replace(SPEC, layers=2)
    wl = dataclasses.replace(workload, tp=2 * chip.cores_per_chip)
    est = estimate(spec, wl, chip)
    cyc = simulate(lower(spec, wl, chip).program, chip)
    assert est.total_ns == pytest.approx(cyc.total_ns, rel=0.10)
