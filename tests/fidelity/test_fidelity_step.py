"""The step-level analytical fidelity (:mod:`infsim.fidelity.step`, ``infsim run --fidelity analytical``:
closed forms per op) against the cycle engine.

* Full-size Llama-2-7B on one inf2 chip (TP 2), decode and prefill, bf16 and fp8.
* Every workload of the flagship study's default set (``infsim.studies.compare.DEFAULT_WORKLOADS``: decode batch
  1/8/32 at context 2048, prefill 512/2048, bf16 and fp8) on each chip of the study with the study's
  two chips per side, on a 2-layer Llama-2-7B (full-width layers, LM head and collectives; the layer
  count only repeats the same per-layer schedule, and 32 layers of prefill 2048 take minutes per run).
  Observed: analytical/cycle 0.90-1.07 over the 30 cases.
"""

from __future__ import annotations

import dataclasses

import pytest

from infsim.config import load_chip
from infsim.fidelity.step import estimate
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.lower.plan import plan_step
from infsim.models.spec import load_model, spec_from_config
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


#: cases outside the band: none. History: nextgen-hbm3e decode b32 was 0.894 (bf16) / 0.885 (fp8) of the cycle
#: engine (strict xfails) until the step fidelity counted every K/V-queue instruction's turn behind the weight
#: stream (the V loads' sync ``nop`` carriers included, issue 13): now 0.909 / 0.903 (cycle 1767867 / 1665635 ns);
#: the other cases of the set moved up by 0-0.14 (inf2 0.95-0.99, nextgen-hbm3e 0.90-1.07, nextgen-decode
#: 0.92-1.03).
_OUTSIDE_BAND: set[str] = set()


def _case_id(chip: str, w: Workload) -> str:
    return f"{chip}-{w.phase}-b{w.batch}-c{w.prompt_or_context}-{w.weight_dtype}"


_CASES = [
    pytest.param(chip, w, id=_case_id(chip, w), marks=[pytest.mark.xfail(
        strict=True, reason="outside the band (see _OUTSIDE_BAND)"
    )] if _case_id(chip, w) in _OUTSIDE_BAND else [])
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


_FAMILIES = [
    # head_dim 256, attention and final soft-capping, post-norms, embedding scale
    pytest.param("gemma-2-9b", Workload.make("prefill", 1, 512, tp=2), None, id="gemma2-prefill"),
    pytest.param("qwen2-7b", Workload.make("decode", 1, 2048, tp=2), None, id="qwen2-decode"),  # q/k/v biases
    # head_dim 96 (a tile per head), a sliding window shorter than the context
    pytest.param("phi-3-mini-4k-instruct", Workload.make("decode", 4, 3000, tp=2), 700, id="phi3-window-decode"),
    pytest.param("phi-3-mini-4k-instruct", Workload.make("prefill", 1, 1500, tp=2), 700, id="phi3-window-prefill"),
    pytest.param("mixtral-8x7b", Workload.make("decode", 2, 1024, tp=2), None, id="mixtral-decode"),  # routing
]


@pytest.mark.parametrize("name,workload,window", _FAMILIES)
def test_families_analytical_within_10_percent_of_cycle(name: str, workload: Workload, window: int | None) -> None:
    """The features of the newer families (two full-width layers) counted as the lowering emits them.
    Observed: analytical/cycle 0.93-0.99."""
    spec = dataclasses.replace(load_model(name), layers=2)
    if window:
        spec = dataclasses.replace(spec, sliding_window=window)
    est = estimate(spec, workload, CHIP)
    cyc = simulate(lower(spec, workload, CHIP).program, CHIP)
    assert est.total_ns == pytest.approx(cyc.total_ns, rel=0.10)
    if window and workload.phase == "decode":  # the window's keys only: far less attention than the context's
        assert est.total_ns < 0.7 * estimate(dataclasses.replace(spec, sliding_window=None), workload, CHIP).total_ns


_TINY = {"model_type": "mistral", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
         "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 512, "max_position_embeddings": 1024}


@pytest.mark.parametrize(("window", "workload", "chunk"), [
    (64, Workload.make("prefill", 2, 200, tp=4), None),  # windows starting inside key blocks
    (100, Workload.make("prefill", 3, 300), None),  # chunks of 512 ending inside the second sequence
    (130, Workload.make("prefill", 2, 300, tp=2), 128),  # a window over two key blocks, chunks mid-sequence
    (None, Workload.make("prefill", 2, 300), 256),  # causal only: a chunk holding two sequences' parts
    (150, Workload.make("decode", 2, 300), None),  # decode reads the window's keys only
])
def test_step_scores_the_lowerings_attention(window: int | None, workload: Workload, chunk: int | None) -> None:
    """The analytical fidelity times the attention matmuls the lowering emits: its FLOPs of scores and
    P x V (every query block's keys from its window's start, rounded to a key block, up to its last query)
    equal those of the lowered program's matmul instructions, including token chunks that end inside a
    sequence (the step once took every chunk to start a sequence, so a chunk holding the tail of one and
    the head of the next was counted as one sequence with keys past its end)."""
    spec = spec_from_config({**_TINY, "sliding_window": window}, "m")
    if chunk is not None:  # the token chunk the lowering chooses where the moving operand is at most that
        chip = load_chip("inf2", [f"tensor_engine.moving_free_max={chunk}"])
    else:
        chip = CHIP
    lw = lower(spec, workload, chip)
    assert chunk is None or lw.token_chunk == chunk
    assert estimate(spec, workload, chip).attention_flops == lw.matmul_flops()["attention"]


def test_key_block_tiled_decode_analytical_within_10_percent_of_cycle() -> None:
    """A decode step over 16,000 cached tokens (two layers of Llama-2-7B at TP 8): the keys of a head do not
    fit in SBUF at once, so the lowering tiles attention over key blocks; the analytical fidelity counts
    the same blocks and the same attention FLOPs. Observed: analytical/cycle 0.97 (30,000 tokens: 0.97)."""
    spec = dataclasses.replace(SPEC, layers=2, max_positions=40000)
    wl = Workload.make("decode", 1, 16000, tp=8)
    assert plan_step(spec, wl, CHIP).kv_block
    est = estimate(spec, wl, CHIP)
    lw = lower(spec, wl, CHIP)
    assert est.attention_flops == lw.matmul_flops()["attention"]
    cyc = simulate(lw.program, CHIP)
    assert est.total_ns == pytest.approx(cyc.total_ns, rel=0.10)
