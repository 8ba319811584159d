"""Every fidelity refuses the same steps: whenever the lowering (the cycle fidelity's path) refuses a
workload, the analytical fidelity refuses it too, with the lowering's reason, and whatever the lowering
accepts gets a latency at analytical fidelity. Swept over a tiny instance of every zoo architecture (the
zoo config with its sizes cut), at shapes on both sides of the lowering's limits, plus shapes it does not
support (a ViT patch wider than the hidden state, a head size, too many experts).

The refusals the analytical path shares are those decided before any instruction is emitted (the
:class:`~infsim.models.lower.plan.LoweringPlan` every fidelity makes, and :mod:`infsim.feasibility`). Not
covered, as the analytical fidelity emits no program: problems the lowering's validator finds in the
emitted program (e.g. a PSUM tile beyond a bank shrunk by a chip override)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infsim.config import load_chip
from infsim.errors import InfsimError
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.spec import ModelSpec, spec_from_config
from infsim.runner import run_workload

CHIP = load_chip("inf2")
ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"
#: the sizes of the tiny instances (only the fields a config already has are replaced)
TINY = {"hidden_size": 128, "n_embd": 128, "intermediate_size": 256, "n_inner": 256, "num_attention_heads": 2,
        "n_head": 2, "num_key_value_heads": 1, "num_hidden_layers": 1, "n_layer": 1, "vocab_size": 512,
        "max_position_embeddings": 1024, "n_positions": 1024, "num_local_experts": 4, "num_experts_per_tok": 2,
        "sliding_window": 64, "image_size": 32, "patch_size": 8}
#: (phase, batch, context, tp, dtype): within the limits, and more sequences than partitions (a model with a
#: head refuses them at both phases; BERT has none)
SHAPES = [("prefill", 2, 200, 1, "bf16"), ("decode", 3, 100, 2, "int8"), ("prefill", 129, 3, 1, "bf16"),
          ("decode", 130, 5, 2, "bf16")]


def _tiny(name: str, **extra: object) -> ModelSpec:
    cfg = json.loads((ZOO / f"{name}.json").read_text())
    cfg.update({k: v for k, v in TINY.items() if k in cfg or k == "num_hidden_layers"}, **extra)
    if cfg.get("model_type") == "vit":
        cfg["hidden_size"] = 256  # a patch of 3 x 8 x 8 = 192 inputs: two partition tiles, as the hidden state
    return spec_from_config(cfg, name)


def _outcome(fn) -> str | None:  # noqa: ANN001
    try:
        fn()
    except InfsimError as e:
        return str(e)
    return None


def _agree(spec: ModelSpec, wl: Workload) -> str | None:
    """The lowering's refusal (None: accepted), after checking that the analytical fidelity agrees."""
    lowered = _outcome(lambda: lower(spec, wl, CHIP))
    analytical = _outcome(lambda: run_workload(CHIP, spec, wl, fidelity="analytical"))
    if lowered is None:
        assert analytical is None, f"{spec.name} {wl}: lowered, but the analytical fidelity refused: {analytical}"
    else:
        assert analytical is not None, f"{spec.name} {wl}: the lowering refused ({lowered}), analytical did not"
        assert lowered in analytical, f"{spec.name} {wl}: different reasons:\n{lowered}\n{analytical}"
    return lowered


@pytest.mark.parametrize("name", sorted(p.stem for p in ZOO.glob("*.json")))
def test_zoo_refusals_agree(name: str) -> None:
    spec = _tiny(name)
    for phase, batch, context, tp, dtype in SHAPES:
        if phase == "decode" and spec.kind != "decoder":
            continue
        refused = _agree(spec, Workload.make(phase, batch, context, tp=tp, dtype=dtype))
        # the sweep is on both sides of the limit: the batch within the partitions lowers everywhere
        assert (refused is not None) == (batch > CHIP.sbuf.partitions and (spec.kind == "decoder"
                                                                          or spec.family == "vit")), refused


@pytest.mark.parametrize(("name", "extra", "reason"), [
    ("vit-b-16", {"patch_size": 16}, "patch_size 16 unsupported"),  # 768 patch inputs, 256 hidden features
    ("vit-b-16", {"patch_size": 4}, None),  # 48 inputs: fits
    ("llama-2-7b", {"num_attention_heads": 8, "num_key_value_heads": 8}, "head_dim 16 unsupported"),
    ("mixtral-8x7b", {"num_local_experts": 200}, "200 experts unsupported"),
])
def test_unsupported_shapes_refused_alike(name: str, extra: dict, reason: str | None) -> None:
    """Regression: a ViT whose patch embedding has more partition tiles of inputs than the hidden state was
    refused by the lowering only when it emitted the patch embedding, and got a latency at analytical
    fidelity."""
    spec = _tiny(name, **extra)
    refused = _agree(spec, Workload.make("prefill", 1, 16))
    assert (refused is None) if reason is None else (refused is not None and reason in refused), refused


@pytest.mark.parametrize("moving_free_max", [64, 127, 128])
@pytest.mark.parametrize(("name", "phase"), [("llama-2-7b", "prefill"), ("llama-2-7b", "decode"),
                                              ("gpt2", "prefill")])
def test_moving_free_size_below_the_partitions_refused_alike(moving_free_max: int, name: str, phase: str) -> None:
    """Regression: with ``tensor_engine.moving_free_max`` below the partitions (128) the lowering accepted the
    step and emitted transposes (matmuls of N=128) beyond it, and both fidelities then failed deep in the
    systolic model's shape check. Now every fidelity refuses it up front (limit ``tensor_engine``, naming the
    field); at 128 every fidelity runs it."""
    from infsim.feasibility import InfeasibleError

    chip = load_chip("inf2", [f"tensor_engine.moving_free_max={moving_free_max}"])
    spec, wl = _tiny(name), Workload.make(phase, 2, 100)
    lowered = _outcome(lambda: lower(spec, wl, chip))
    for fidelity in ("analytical", "cycle"):
        got = _outcome(lambda: run_workload(chip, spec, wl, fidelity=fidelity))  # noqa: B023
        assert got == lowered, f"{fidelity}: {got}\nlowering: {lowered}"
    if moving_free_max >= CHIP.sbuf.partitions:
        assert lowered is None
    else:
        with pytest.raises(InfeasibleError, match=r"tensor_engine\.moving_free_max") as e:
            run_workload(chip, spec, wl, fidelity="analytical")
        assert e.value.limit == "tensor_engine"
