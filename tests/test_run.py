"""``infsim run`` / ``infsim.run``: end-to-end steps of zoo models, TP with collectives, errors, roofline."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import infsim
from infsim.cli import main
from infsim.config import load_chip
from infsim.errors import InfsimError
from infsim.models.spec import load_model, spec_from_config, zoo_names

SMALL = {"llama": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1024,
                   "max_position_embeddings": 2048}}


@pytest.mark.parametrize("name", ["gpt2", "bert-base-uncased", "vit-b-16", "llama-2-7b"])
@pytest.mark.parametrize("fidelity", ["cycle", "analytical"])
def test_zoo_models_run(name: str, fidelity: str) -> None:
    spec = load_model(name)
    phase = "prefill" if spec.kind == "encoder" else "decode"
    r = infsim.run("inf2", name, phase=phase, batch=1, context=32, fidelity=fidelity)
    assert r.latency_ms > 0 and r.tokens_per_s > 0 and r.energy_j > 0 and r.power_w > 0
    assert r.hbm_bytes >= r.min_hbm_bytes


def _two_layer_zoo(tmp_path):
    """Every zoo config shrunk to 2 layers, written under ``tmp_path``: (name, path, spec)."""
    for name in zoo_names():
        cfg = json.loads((load_model.__globals__["ZOO_DIR"] / f"{name}.json").read_text())
        for key in ("num_hidden_layers", "n_layer"):
            if key in cfg:
                cfg[key] = 2
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(cfg))
        yield name, p, load_model(p)


@pytest.mark.slow  # every zoo model lowered and simulated
def test_every_zoo_model_is_runnable_at_small_size(tmp_path) -> None:
    """Every zoo architecture lowers and simulates (shrunk to 2 layers to keep CI fast)."""
    for name, p, spec in _two_layer_zoo(tmp_path):
        phase = "prefill" if spec.kind == "encoder" else "decode"
        r = infsim.run("inf2", p, phase=phase, batch=1, context=16, tp=2 if spec.hidden >= 4096 else 1)
        assert r.latency_ms > 0, name


@pytest.mark.slow  # every zoo architecture, both phases
@pytest.mark.parametrize("fidelity", ["analytical", "cycle"])
def test_hbm_bytes_never_below_the_graph_minimum(tmp_path, fidelity: str) -> None:
    """Every zoo architecture moves at least the graph's minimum HBM bytes (the analytical fidelity once left
    out the norm weights, the inputs and the logits: Mixtral on trn2 reported 97,454,653,440 bytes for a
    minimum of 97,460,068,352)."""
    for name, p, spec in _two_layer_zoo(tmp_path):
        for phase in ("prefill", "decode") if spec.kind == "decoder" else ("prefill",):
            r = infsim.run("trn2", p, phase=phase, batch=2, context=64, tp=2 if spec.hidden >= 4096 else 1,
                           fidelity=fidelity)
            assert r.hbm_bytes >= r.min_hbm_bytes, (name, phase)


@pytest.mark.parametrize("tp", [2, 8])
def test_tensor_parallel_runs_with_collectives(tmp_path, tp: int) -> None:
    p = tmp_path / "config.json"
    p.write_text(json.dumps({**SMALL["llama"], "num_attention_heads": 8, "num_key_value_heads": 8}))
    r = infsim.run("inf2", p, phase="decode", batch=1, context=64, tp=tp)
    assert r.chips == (tp + 1) // 2
    r1 = infsim.run("inf2", p, phase="decode", batch=1, context=64, tp=1)
    assert r.latency_ms != r1.latency_ms


def test_capacity_error() -> None:
    with pytest.raises(InfsimError, match="GiB of HBM"):
        infsim.run("inf2", "llama-2-70b", phase="decode", context=16)


def test_cli_run_json(capsys) -> None:
    assert main(["run", "--chip", "inf2", "--model", "gpt2", "--phase", "decode", "--batch", "1", "--context", "16",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("latency_ms", "tokens_per_s", "flops", "hbm_bytes", "hbm_gbps", "energy_j", "power_w"):
        assert key in d


def test_cli_run_bad_model(capsys) -> None:
    assert main(["run", "--model", "no-such-model"]) == 1
    assert "unknown model" in capsys.readouterr().err


@settings(max_examples=8, deadline=None)
@given(hidden=st.sampled_from([128, 256]), layers=st.integers(1, 2), batch=st.integers(1, 4),
       context=st.integers(1, 300), phase=st.sampled_from(["prefill", "decode"]),
       dtype=st.sampled_from(["bf16", "fp8_e4m3"]))
def test_roofline_lower_bound(hidden: int, layers: int, batch: int, context: int, phase: str, dtype: str) -> None:
    """No simulated latency is below max(FLOPs / peak FLOPs, bytes / peak bandwidth)."""
    chip = load_chip("inf2")
    cfg = {**SMALL["llama"], "hidden_size": hidden, "num_hidden_layers": layers}
    spec = spec_from_config(cfg, "rand")
    from infsim.models.graph import Workload, build_graph
    from infsim.models.lower import lower
    from infsim.sim import simulate

    wl = Workload.make(phase, batch, context, dtype=dtype)
    g = build_graph(spec, wl)
    lw = lower(spec, wl, chip)
    r = simulate(lw.program, chip)
    cores = lw.program.num_cores
    peak_flops = chip.peak_tflops(dtype) * 1e12 * cores / chip.cores_per_chip
    peak_bw = chip.hbm.bandwidth_gbps * 1e9
    bound_s = max(g.flops() / peak_flops, g.hbm_bytes() / peak_bw)
    assert r.total_ns * 1e-9 >= bound_s * (1 - 1e-9)
