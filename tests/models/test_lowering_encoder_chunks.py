"""Encoders attend to every key of their sequence, read from the token chunk's own K/V tiles, so a chunk
must hold whole sequences. Three 200-token sequences (600 tokens) once filled 512-column chunks end to end,
splitting the second sequence across two chunks: the lowered BERT was 34% off the numpy forward pass with
a race-free, valid program. The plan now rounds an encoder's chunk down to whole sequences, and refuses a
sequence longer than any chunk, at every fidelity."""

from __future__ import annotations

import numpy as np
import pytest

from infsim.config import load_chip
from infsim.isa.interp import run
from infsim.isa.validate import check
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.lower.alloc import LoweringError
from infsim.models.lower.check import find_races
from infsim.models.lower.io import make_inputs, read_hidden
from infsim.models.lower.plan import LoweringPlan
from infsim.models.reference import forward, random_params
from infsim.models.spec import spec_from_config

CHIP = load_chip("inf2")
TOL = 0.02  # bf16, as tests/models/test_lowering_families.py
BERT = {"model_type": "bert", "hidden_size": 128, "num_attention_heads": 2, "num_hidden_layers": 1,
        "intermediate_size": 256, "vocab_size": 512, "max_position_embeddings": 1024}


def test_encoder_chunks_hold_whole_sequences() -> None:
    spec = spec_from_config(BERT, "bert-tiny")
    wl = Workload.make("prefill", 3, 200)
    pl = LoweringPlan(spec, wl, CHIP)
    pl.fit()
    assert pl.tc % 200 == 0
    params = random_params(spec, 0)
    for name in params:
        if name.endswith((".wq", ".wk")):  # sharper scores: which keys a row attends to matters
            params[name] = params[name] * 4
    x = np.random.default_rng(1).normal(0, 1, (3, 200, spec.hidden))
    ref, _, _ = forward(spec, params, x)
    lw = lower(spec, wl, CHIP)
    assert not check(lw.program, CHIP)
    assert find_races(lw.program) == []
    got = read_hidden(lw, run(lw.program, make_inputs(lw, params, x), CHIP))
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert err < TOL, err


def test_encoder_sequence_longer_than_a_chunk_is_refused_at_every_fidelity() -> None:
    from infsim.runner import run_workload

    spec = spec_from_config(BERT, "bert-tiny")
    wl = Workload.make("prefill", 1, 600)
    with pytest.raises(LoweringError, match="encoder sequence of 600 tokens"):
        lower(spec, wl, CHIP)
    with pytest.raises(Exception, match="encoder sequence of 600 tokens"):
        run_workload(CHIP, spec, wl, fidelity="analytical")
