"""The analytical fidelity of ``infsim run`` (closed forms per op) against the cycle engine.

Full-size Llama-2-7B on one inf2 chip (TP 2), decode and prefill, bf16 and fp8: the cases of the
flagship study's default workload set that fit in CI time (each cycle-level run takes a few seconds).
"""

from __future__ import annotations

import pytest

from infsim.config import load_chip
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.spec import load_model
from infsim.opmodel import estimate
from infsim.sim import simulate

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
