"""Model zoo and op graphs: published parameter counts, clear errors, FLOP/byte closed forms."""

from __future__ import annotations

import json

import pytest

from infsim.models.graph import Workload, build_graph
from infsim.models.spec import ModelError, load_model, zoo_names

# Published parameter counts (model cards), in billions; our count omits position/type embeddings and
# poolers, so allow 3%.
PUBLISHED_B = {
    "llama-2-7b": 6.74,
    "llama-2-13b": 13.0,
    "llama-2-70b": 69.0,
    "llama-3-8b": 8.03,
    "llama-3-70b": 70.6,
    "mistral-7b": 7.24,
    "mixtral-8x7b": 46.7,
    "gpt2": 0.124,
    "bert-base-uncased": 0.110,
    "bert-large-uncased": 0.335,
    "vit-b-16": 0.086,
}


def test_zoo_complete() -> None:
    assert set(PUBLISHED_B) <= set(zoo_names())


@pytest.mark.parametrize("name", sorted(PUBLISHED_B))
def test_param_counts(name: str) -> None:
    m = load_model(name)
    assert m.num_params() / 1e9 == pytest.approx(PUBLISHED_B[name], rel=0.03)


def test_decode_bytes_closed_form() -> None:
    m = load_model("llama-2-7b")
    g = build_graph(m, Workload.make("decode", batch=1, context=2048))
    # weights (bf16) + KV read of 2048 tokens + KV write of one token
    kv = 2 * m.layers * m.kv_dim * 2 * (2048 + 1)
    assert g.kv_bytes() == kv
    assert g.weight_bytes() == pytest.approx(2 * (m.num_params() - m.vocab * m.hidden), rel=1e-6)
    # decode FLOPs ~ 2 x params touched + attention
    assert g.flops() == pytest.approx(
        2 * (m.num_params() - m.vocab * m.hidden) + 4 * m.layers * m.q_dim * 2049, rel=1e-3
    )


def test_fp8_weights_halve_weight_bytes() -> None:
    m = load_model("llama-2-7b")
    g16 = build_graph(m, Workload.make("decode", 1, 512, dtype="bf16"))
    g8 = build_graph(m, Workload.make("decode", 1, 512, dtype="fp8_e4m3"))
    assert g8.weight_bytes() * 2 == g16.weight_bytes()
    assert g8.flops() == g16.flops()


def test_tp_splits_and_collectives() -> None:
    m = load_model("llama-2-7b")
    g1 = build_graph(m, Workload.make("decode", 1, 128, tp=1))
    g8 = build_graph(m, Workload.make("decode", 1, 128, tp=8))
    assert g8.weight_bytes() == pytest.approx(g1.weight_bytes(), rel=1e-3)  # 32 heads split evenly over 8
    assert g1.collective_bytes() == 0
    assert g8.collective_bytes() > 0


def test_moe_touches_subset_of_experts() -> None:
    m = load_model("mixtral-8x7b")
    g1 = build_graph(m, Workload.make("decode", 1, 128))
    g64 = build_graph(m, Workload.make("decode", 64, 128))
    assert g1.weight_bytes() < g64.weight_bytes()  # batch 1 reads 2 of 8 experts per layer


def test_encoder_has_no_decode() -> None:
    with pytest.raises(ModelError, match="encoder"):
        build_graph(load_model("bert-base-uncased"), Workload.make("decode", 1, 128))


def test_too_long_context() -> None:
    with pytest.raises(ModelError, match="max_position_embeddings"):
        build_graph(load_model("gpt2"), Workload.make("decode", 1, 4096))


def test_bad_configs_name_the_field(tmp_path) -> None:
    cfg = json.loads((load_model.__globals__["ZOO_DIR"] / "llama-2-7b.json").read_text())
    del cfg["hidden_size"]
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="'hidden_size'"):
        load_model(p)
    cfg["hidden_size"] = 4096
    cfg["model_type"] = "mamba"
    p.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="unsupported architecture 'mamba'"):
        load_model(p)
    p.write_text("{ not json")
    with pytest.raises(ModelError, match=r"config.json:1:3: invalid JSON"):
        load_model(p)
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model")
