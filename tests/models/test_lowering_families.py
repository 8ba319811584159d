"""The model families beyond Llama (Qwen2, Phi-3, Gemma, Gemma-2, Llama-3.1/3.2), sliding windows and
mixture of experts: each tiny instance lowered and run through the interpreter equals the numpy forward
pass, with a race-free program; every feature the test is about changes the reference output by far more
than the tolerance (so that a lowering ignoring it fails). Also: the zoo entries, and configs infsim
cannot model refused naming what is missing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from infsim.config import load_chip
from infsim.isa.interp import run
from infsim.isa.validate import check
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.lower.check import find_races
from infsim.models.lower.io import make_inputs, read_logits
from infsim.models.reference import forward, random_params
from infsim.models.spec import ModelError, ModelSpec, RopeScaling, load_model, spec_from_config

CHIP = load_chip("inf2")
TOL = 0.02  # bf16 activations and weights: the programs land within ~1% of the float64 reference

BASE = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "vocab_size": 512, "max_position_embeddings": 1024}
CONFIGS = {
    "qwen2": {**BASE, "model_type": "qwen2"},
    # head_dim 96: heads in tiles of their own (not packed); fused checkpoint weights; a window of 7 keys
    "phi3": {**BASE, "model_type": "phi3", "hidden_size": 192, "num_attention_heads": 2, "num_key_value_heads": 2,
             "sliding_window": 7},
    # head_dim 256 = 2 tiles per head (q_dim 512 != hidden 128); the window on layer 0 only
    "gemma2": {**BASE, "model_type": "gemma2", "head_dim": 256, "num_attention_heads": 2, "num_key_value_heads": 1,
               "sliding_window": 6, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 0.5,
               "query_pre_attn_scalar": 16},
    # Gemma (1): head_dim 256 by default, GeGLU, RMSNorm by (1 + weight), embeddings scaled; no window
    "gemma": {**BASE, "model_type": "gemma", "num_attention_heads": 2, "num_key_value_heads": 1},
    "llama3.1": {**BASE, "model_type": "llama", "rope_theta": 500000.0, "tie_word_embeddings": True,
                 "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 64, "rope_type": "llama3"}},
}
# what each family's test is about: the spec without it
WITHOUT = {
    "qwen2": [{"qkv_bias": False}],
    "phi3": [{"sliding_window": None}],
    "gemma2": [{"sliding_window": None}, {"attn_softcap": 0.0}, {"final_softcap": 0.0}, {"post_norms": False},
               {"norm_offset": 0.0}, {"embed_scale": 1.0}, {"query_pre_attn_scalar": 0.0}],
    "gemma": [{"norm_offset": 0.0}, {"embed_scale": 1.0}],
    "llama3.1": [{"rope_scaling": None}],
}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _run(spec: ModelSpec, wl: Workload, params: dict, x: np.ndarray, kc: np.ndarray | None = None,
         vc: np.ndarray | None = None) -> np.ndarray:
    lw = lower(spec, wl, CHIP)
    assert not check(lw.program, CHIP)
    assert find_races(lw.program) == []
    return read_logits(lw, run(lw.program, make_inputs(lw, params, x, kc, vc), CHIP))


def _params(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Random parameters with the features under test made to matter: q/k biases as large as the
    projections' outputs, sharper attention scores (where positions and soft-capping matter), sharper
    routing weights."""
    params = random_params(spec, 0)
    for name in params:
        if name.endswith((".bq", ".bk", ".bv")):
            params[name] = params[name] * 10
        if name.endswith((".wq", ".wk")):
            params[name] = params[name] * 4
        if name.endswith(".router"):  # routing weights far from uniform
            params[name] = params[name] * 4
    return params


@pytest.mark.parametrize("family", list(CONFIGS))
def test_family_matches_numpy(family: str) -> None:
    """Prefill of two sequences, then a decode step at TP 1 and TP 2 on the prefill's cache."""
    spec = spec_from_config(CONFIGS[family], family)
    params = _params(spec)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2, 12, spec.hidden))
    ref, kc, vc = forward(spec, params, x)
    for change in WITHOUT[family]:
        assert _rel(forward(dataclasses.replace(spec, **change), params, x)[0], ref) > 5 * TOL, change
    assert _rel(_run(spec, Workload.make("prefill", 2, 12), params, x), ref) < TOL
    x1 = rng.normal(0, 1, (2, 1, spec.hidden))
    ref1, _, _ = forward(spec, params, x1, pos0=12, k_cache=kc, v_cache=vc)
    for tp in (1, 2):
        assert _rel(_run(spec, Workload.make("decode", 2, 12, tp=tp), params, x1, kc, vc), ref1) < TOL


def test_gemma2_int8() -> None:
    """int8 weights: the per-channel scales and the final soft-capping in the LM head's eviction."""
    spec = spec_from_config(CONFIGS["gemma2"], "gemma2")
    params = _params(spec)
    x = np.random.default_rng(4).normal(0, 1, (1, 6, spec.hidden))
    ref, _, _ = forward(spec, params, x)
    assert _rel(_run(spec, Workload.make("prefill", 1, 6, dtype="int8"), params, x), ref) < 0.08


MISTRAL = {**BASE, "model_type": "mistral", "num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.mark.parametrize("window", [None, 150])
def test_decode_across_v_blocks(window: int | None) -> None:
    """Decode after 400 cached tokens: V rows in four partition blocks (the last one partial); with a
    window of 150 keys starting at position 251, the DMAs move rows 123.. of one cache block and rows
    0.. of the next to partitions 0.. and 5.. of the attention's V blocks."""
    spec = spec_from_config({**MISTRAL, "sliding_window": window}, "m")
    params = _params(spec)
    rng = np.random.default_rng(2)
    _, kc, vc = forward(spec, params, rng.normal(0, 1, (1, 400, spec.hidden)))
    x = rng.normal(0, 1, (1, 1, spec.hidden))
    ref, _, _ = forward(spec, params, x, pos0=400, k_cache=kc, v_cache=vc)
    if window:
        assert _rel(forward(dataclasses.replace(spec, sliding_window=None), params, x, 400, kc, vc)[0], ref) > 5 * TOL
    assert _rel(_run(spec, Workload.make("decode", 1, 400), params, x, kc, vc), ref) < TOL


def test_prefill_window_across_query_blocks() -> None:
    """Prefill of 300 tokens with a window of 100: query blocks of 128 whose windows start at different
    positions and span several key blocks, the band mask on both sides."""
    spec = spec_from_config({**MISTRAL, "sliding_window": 100}, "m")
    params = _params(spec)
    x = np.random.default_rng(3).normal(0, 1, (1, 300, spec.hidden))
    ref, _, _ = forward(spec, params, x)
    assert _rel(forward(dataclasses.replace(spec, sliding_window=None), params, x)[0], ref) > 5 * TOL
    assert _rel(_run(spec, Workload.make("prefill", 1, 300), params, x), ref) < TOL


@pytest.mark.parametrize(("heads", "batch", "ctx", "tp", "chunk", "window"), [
    ((4, 2), 2, 200, 4, None, 64),  # the reported case: the last query block's window start for every block
    ((2, 1), 2, 200, 1, 72, 100),  # chunks of 72 columns: segments start mid-sequence, windows off key blocks
    ((2, 1), 1, 300, 2, 96, 130),  # a window longer than a key block, 300 not a multiple of the tile size
    ((2, 1), 2, 200, 2, 56, 64),  # a chunk holding the tail of one sequence and the head of the next
])
def test_prefill_window_chunks_and_tp(heads: tuple[int, int], batch: int, ctx: int, tp: int, chunk: int | None,
                                      window: int) -> None:
    """Windowed prefill whose query blocks (and token chunks) start at positions whose windows begin inside
    a key block. Regression: the lowering once loaded, for every query block, the keys of the sequence's
    last window (``lo = kv_len - window``), so that early query blocks had a negative key count (``operand
    field 'dims[0].size': -8`` for a window of 64 over 200 tokens) and later ones lost keys of their window."""
    spec = spec_from_config({**MISTRAL, "num_attention_heads": heads[0], "num_key_value_heads": heads[1],
                             "sliding_window": window, "num_hidden_layers": 1}, "m")
    params = _params(spec)
    x = np.random.default_rng(7).normal(0, 1, (batch, ctx, spec.hidden))
    ref, _, _ = forward(spec, params, x)
    assert _rel(forward(dataclasses.replace(spec, sliding_window=None), params, x)[0], ref) > 5 * TOL
    lw = lower(spec, Workload.make("prefill", batch, ctx, tp=tp), CHIP, token_chunk=chunk)
    assert not check(lw.program, CHIP)
    assert find_races(lw.program) == []
    assert _rel(read_logits(lw, run(lw.program, make_inputs(lw, params, x), CHIP)), ref) < TOL


def test_window_decode_flops_and_kv_bytes_match_graph() -> None:
    """Decode with a window reads the window's keys only: attention FLOPs equal the graph's exactly."""
    spec = spec_from_config({**MISTRAL, "sliding_window": 150, "num_hidden_layers": 1}, "m")
    lw = lower(spec, Workload.make("decode", 2, 300), CHIP)
    fl = lw.matmul_flops()
    assert fl["linear"] + fl["attention"] == lw.graph.flops()


def test_rope_scaling_types() -> None:
    spec = spec_from_config(CONFIGS["llama3.1"], "l")
    assert spec.rope_scaling == RopeScaling("llama3", 32.0, 1.0, 4.0, 64)
    lin = spec_from_config({**BASE, "model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}}, "l")
    assert lin.rope_scaling == RopeScaling("linear", 2.0)


MIXTRAL = {**BASE, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}


@pytest.mark.parametrize(("phase", "tp", "dtype"), [("prefill", 1, "bf16"), ("decode", 2, "bf16"),
                                                    ("prefill", 2, "int8"), ("decode", 1, "int8")])
def test_moe_matches_numpy(phase: str, tp: int, dtype: str) -> None:
    """Mixture of experts (static balanced routing, :mod:`infsim.models.moe`) against the numpy reference:
    the router's softmax over each token's experts weights the experts' outputs (a reference without the
    weights differs by far more than the tolerance), TP 2 all-reduces the experts' partial sums, int8
    applies the router's and the experts' scales."""
    spec = spec_from_config(MIXTRAL, "mixtral")
    params = _params(spec)
    rng = np.random.default_rng(5)
    s = 10 if phase == "prefill" else 1
    x = rng.normal(0, 1, (3, s, spec.hidden))
    kc = vc = None
    pos0 = 0
    if phase == "decode":
        _, kc, vc = forward(spec, params, rng.normal(0, 1, (3, 9, spec.hidden)))
        pos0 = 9
    wl = Workload.make(phase, 3, s if phase == "prefill" else pos0, tp=tp, dtype=dtype)
    lw = lower(spec, wl, CHIP)
    ref, _, _ = forward(spec, params, x, pos0, kc, vc, token_chunk=lw.token_chunk)
    flat = {**params}
    for L in range(spec.layers):  # uniform weights: what the output would be with the router ignored
        flat[f"L{L}.router"] = np.zeros_like(params[f"L{L}.router"])
    assert _rel(forward(spec, flat, x, pos0, kc, vc, token_chunk=lw.token_chunk)[0], ref) > 5 * TOL
    assert not check(lw.program, CHIP)
    assert find_races(lw.program) == []
    got = read_logits(lw, run(lw.program, make_inputs(lw, params, x, kc, vc), CHIP))
    assert _rel(got, ref) < (0.08 if dtype == "int8" else TOL)


def test_moe_prefill_chunks_touch_their_experts() -> None:
    """A prefill in several token chunks (the last one short): each chunk runs the experts its own tokens
    go to, and the lowering's FLOPs equal the graph's when one chunk holds every token."""
    spec = spec_from_config({**MIXTRAL, "num_local_experts": 8}, "mixtral")
    params = _params(spec)
    x = np.random.default_rng(6).normal(0, 1, (1, 11, spec.hidden))
    lw = lower(spec, Workload.make("prefill", 1, 11), CHIP, token_chunk=4)
    ref, _, _ = forward(spec, params, x, token_chunk=4)
    assert _rel(read_logits(lw, run(lw.program, make_inputs(lw, params, x), CHIP)), ref) < TOL
    one = lower(spec, Workload.make("prefill", 1, 11), CHIP)
    fl = one.matmul_flops()
    assert fl["linear"] + fl["attention"] == one.graph.flops()


def test_zoo_entries_read_their_features() -> None:
    """The zoo's configs of the new families (published Hugging Face values) give the features they have."""
    g = load_model("gemma-2-9b")
    assert (g.head_dim, g.q_dim, g.attn_softcap, g.final_softcap, g.post_norms, g.activation) == (
        256, 4096, 50.0, 30.0, True, "gelu_tanh")
    assert [g.window(L) for L in range(3)] == [4096, None, 4096] and g.tie_embeddings
    assert load_model("qwen2-7b").qkv_bias and not load_model("qwen2-7b").o_bias
    assert load_model("qwen2-7b").window(0) is None  # use_sliding_window false
    phi = load_model("phi-3-mini-4k-instruct")
    assert phi.fused_qkv and phi.fused_gate_up and phi.window(0) == 2047
    assert load_model("llama-3.1-8b").rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    assert load_model("llama-3.2-1b-instruct").tie_embeddings


@pytest.mark.parametrize(("cfg", "message"), [
    ({"model_type": "qwen3"}, r"unsupported architecture 'qwen3' \(missing: q/k RMSNorm"),
    ({"model_type": "deepseek_v3"}, r"missing: multi-head latent attention"),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, r"'rope_scaling'.*'yarn'"),
    ({"model_type": "phi3", "partial_rotary_factor": 0.5}, r"'partial_rotary_factor'.*missing: partial rotary"),
    ({"model_type": "llama", "mlp_bias": True}, r"'mlp_bias'.*missing: biases in a gated MLP"),
])
def test_unsupported_names_the_missing_feature(cfg: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        spec_from_config({**BASE, **cfg}, "m")
