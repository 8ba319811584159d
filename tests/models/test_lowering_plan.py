"""The step plan (models/lower/plan.py): what the step-level analytical model imports from the lowering.
It must make the lowering's choices without emitting, and so must not depend on the emitters."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from infsim.config import load_chip
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.lower.plan import plan_step
from infsim.models.spec import load_model

LOWER = Path(__file__).resolve().parents[2] / "models" / "lower"


def test_plan_imports_no_emitter() -> None:
    tree = ast.parse((LOWER / "plan.py").read_text())
    local = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert local <= {"alloc", "weights"}, local


@pytest.mark.parametrize(
    "model,phase,batch,context,tp,chip",
    [
        ("llama-2-7b", "decode", 1, 2048, 2, "inf2"),
        ("llama-2-7b", "prefill", 1, 1024, 2, "inf2"),
        ("gpt2", "prefill", 4, 512, 1, "trn2"),
        ("llama-3-8b", "decode", 8, 1024, 4, "trn2"),
    ],
)
def test_plan_step_is_the_lowerings_choice(model: str, phase: str, batch: int, context: int, tp: int,
                                           chip: str) -> None:
    spec = dataclasses.replace(load_model(model), layers=1)
    wl = Workload.make(phase, batch, context, tp=tp)
    cfg = load_chip(chip)
    plan = plan_step(spec, wl, cfg)
    lw = lower(spec, wl, cfg)
    assert plan.error is None
    assert plan.token_chunk == lw.token_chunk
    assert plan.ring_depth == sum(1 for r in lw.role_off if r.startswith("wslot"))
    layer = [p for n, p in lw.plans.items() if n.startswith("L0.")]
    assert plan.layer_slabs == sum(len(p.slabs) for p in layer)
    assert plan.max_slab_free == max(p.max_slab_free for p in layer)


def test_plan_step_reports_what_does_not_fit() -> None:
    small = load_chip("inf2", ["sbuf.bytes_per_partition=4096"])
    plan = plan_step(load_model("llama-2-7b"), Workload.make("decode", 1, 128), small)
    assert plan.token_chunk is None and plan.ring_depth is None
    assert "4096 available" in (plan.error or "")
    assert plan.layer_slabs > 0
