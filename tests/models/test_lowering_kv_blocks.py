"""Attention tiled over key blocks (:attr:`infsim.models.lower.plan.LoweringPlan.kv_block`): on a chip whose
SBUF is shrunk so that the keys of a head do not fit at once, tiny decoders lowered with the flash-style
running max and sum equal the numpy forward pass through the interpreter, over contexts of several key
blocks (decode with the new token in the last, partial block; GQA heads one per row and stacked; a
sliding window starting inside a block). The plan only tiles decode steps whose untiled plan does not
fit."""

from __future__ import annotations

import numpy as np
import pytest

from infsim.config import load_chip
from infsim.isa.interp import run
from infsim.isa.validate import check
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.lower.check import find_races
from infsim.models.lower.io import make_inputs, read_logits
from infsim.models.lower.plan import LoweringPlan, plan_step
from infsim.models.reference import forward, random_params
from infsim.models.spec import spec_from_config

TOL = 0.02  # bf16, as tests/models/test_lowering_families.py
BASE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "vocab_size": 512,
        "max_position_embeddings": 4096}
# head_dim 64 (two q heads per kv head, one row each) and head_dim 128 (decode: the group stacked)
MODELS = {"hd64": {**BASE, "model_type": "mistral", "num_attention_heads": 2, "num_key_value_heads": 1},
          "hd128": {**BASE, "model_type": "llama", "hidden_size": 256, "num_attention_heads": 2,
                    "num_key_value_heads": 1}}
SMALL = load_chip("inf2", {"sbuf.bytes_per_partition": 24000})  # too small for 1,500 keys of a head at once


def _check(spec, wl: Workload, x: np.ndarray, pos0: int = 0, kc=None, vc=None) -> None:  # noqa: ANN001
    params = random_params(spec, 0)
    for name in params:
        if name.endswith((".wq", ".wk")):  # sharper scores: the softmax's max and sum matter
            params[name] = params[name] * 4
    ref, _, _ = forward(spec, params, x, pos0, kc, vc)
    pl = LoweringPlan(spec, wl, SMALL)
    pl.fit()
    assert pl.kv_block and pl.kvmax > pl.kv_block  # several key blocks
    lw = lower(spec, wl, SMALL)
    assert not check(lw.program, SMALL)
    assert find_races(lw.program) == []
    got = read_logits(lw, run(lw.program, make_inputs(lw, params, x, kc, vc), SMALL))
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < TOL


@pytest.mark.parametrize(("model", "window"), [("hd64", None), ("hd128", None), ("hd64", 1100)])
def test_decode_over_key_blocks(model: str, window: int | None) -> None:
    """Decode after 1,500 cached tokens: key blocks of 512, the last one partial with the new token; a
    window of 1,100 keys starts at position 401, inside a V block."""
    spec = spec_from_config({**MODELS[model], "sliding_window": window}, "m")
    rng = np.random.default_rng(1)
    _, kc, vc = forward(spec, random_params(spec, 0), rng.normal(0, 1, (1, 1500, spec.hidden)))
    _check(spec, Workload.make("decode", 1, 1500), rng.normal(0, 1, (1, 1, spec.hidden)), 1500, kc, vc)


def test_tiles_only_when_untiled_does_not_fit() -> None:
    """The default inf2 SBUF holds these steps untiled (their programs unchanged); the shrunk one tiles, and
    the step plan (feasibility, analytical fidelity) reports the same key block as the lowering."""
    spec = spec_from_config(MODELS["hd128"], "m")
    wl = Workload.make("decode", 1, 1500)
    big = LoweringPlan(spec, wl, load_chip("inf2"))
    big.fit()
    assert big.kv_block == 0
    small = LoweringPlan(spec, wl, SMALL)
    small.fit()
    assert small.kv_block == 512 and plan_step(spec, wl, SMALL).kv_block == 512
