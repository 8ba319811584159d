"""Instruction tags of lowered programs (op class and layer per instruction, :mod:`models.lower.tags`):
they cover every instruction, agree with what the instructions touch, survive layer replication and
tensor parallelism, and give the op graph's FLOPs per class."""

from __future__ import annotations

import numpy as np
import pytest

from infsim.config import load_chip
from infsim.isa import Op, Space
from infsim.models.graph import Workload
from infsim.models.lower import Lowered, lower
from infsim.models.lower.tags import GRAPH_MATMUL_CLASS, OP_CLASS_NAMES, OpClass, graph_op_class, layer_of
from infsim.models.spec import spec_from_config

CHIP = load_chip("inf2")

LLAMA = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "vocab_size": 512,
    "max_position_embeddings": 1024,
}
GPT2 = {"model_type": "gpt2", "n_embd": 128, "n_head": 2, "n_layer": 2, "n_positions": 512, "vocab_size": 384}
BERT = {"model_type": "bert", "hidden_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2,
        "intermediate_size": 256, "vocab_size": 100, "max_position_embeddings": 512}
# patches of 48 features, a hidden state of two feature tiles
VIT = {"model_type": "vit", "hidden_size": 256, "num_attention_heads": 2, "num_hidden_layers": 2,
       "intermediate_size": 256, "image_size": 16, "patch_size": 4, "num_labels": 10}
MIXTRAL = {**LLAMA, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}

CASES = {
    "llama-decode-tp2": (LLAMA, Workload.make("decode", 3, 200, tp=2)),
    "llama-prefill-int8": (LLAMA, Workload.make("prefill", 2, 40, dtype="int8")),
    "gpt2-decode": (GPT2, Workload.make("decode", 2, 100)),
    "gpt2-prefill-tp2": (GPT2, Workload.make("prefill", 1, 64, tp=2)),
    "bert-prefill": (BERT, Workload.make("prefill", 2, 32)),
    "vit-prefill": (VIT, Workload.make("prefill", 2, 17)),
    "mixtral-decode-tp2": (MIXTRAL, Workload.make("decode", 1, 64, tp=2)),
}


def _lower(case: str) -> Lowered:
    cfg, wl = CASES[case]
    return lower(spec_from_config(cfg, case), wl, CHIP)


@pytest.mark.parametrize("case", list(CASES))
def test_tags_cover_every_instruction(case: str) -> None:
    lw = _lower(case)
    n = len(lw.program)
    assert lw.op_class.dtype == np.uint8 and lw.layer.dtype == np.int16
    assert len(lw.op_class) == len(lw.layer) == n
    assert int(lw.op_class.max()) < len(OP_CLASS_NAMES)
    assert set(np.unique(lw.layer)) == {-1, *range(lw.spec.layers)}
    ops = lw.program.instr["op"]
    # nop carriers of extra waits, and nothing else, are 'sync'
    assert np.array_equal(ops == int(Op.nop), lw.op_class == OpClass.sync)
    # the classes every layer of every model has, in every layer
    for L in range(lw.spec.layers):
        present = {OP_CLASS_NAMES[c] for c in np.unique(lw.op_class[lw.layer == L])}
        assert {"norm", "qkv", "attn_scores", "softmax", "attn_pv", "o_proj", "weight_stream"} <= present
    assert np.array_equal(ops == int(Op.all_reduce), lw.op_class == OpClass.collective)
    assert (lw.select("collective").size > 0) == (lw.ranks > 1)
    assert np.all(ops[lw.select(OpClass.weight_stream)] == int(Op.dma_copy))
    with pytest.raises(ValueError, match="unknown op class 'attention'"):
        lw.select("attention")


@pytest.mark.parametrize("case", list(CASES))
def test_tags_agree_with_the_tensors_touched(case: str) -> None:
    """An instruction that reads or writes a per-layer HBM tensor (weights, caches, norm weights) is
    tagged with that layer; weight slabs are loaded by 'weight_stream' DMAs, logits and encoder outputs
    written by 'output_dma' ones."""
    lw = _lower(case)
    prog = lw.program
    ins, aps = prog.instr, prog.aps
    names = list(prog.tensors)
    tensor_layer = np.array([layer_of(t) for t in names])
    slab = np.array([t.rsplit(".r", 1)[0] in lw.plans for t in names])
    output = np.array([t.startswith(("logits.", "hidden_out.")) for t in names])
    for col in range(ins["opnd"].shape[1]):
        used = ins["opnd"][:, col] >= 0
        idx = np.flatnonzero(used)
        a = aps[ins["opnd"][idx, col]]
        hb = a["space"] == int(Space.hbm)
        idx, t = idx[hb], a["tensor"][hb]
        per_layer = tensor_layer[t] >= 0
        assert np.array_equal(lw.layer[idx[per_layer]], tensor_layer[t[per_layer]])
        assert np.all(lw.op_class[idx[slab[t]]] == OpClass.weight_stream)
        assert np.all(lw.op_class[idx[output[t]]] == OpClass.output_dma)


def _graph_flops_by_class(lw: Lowered) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in lw.graph.ops:
        if op.flops:
            name = graph_op_class(op.name).name
            out[name] = out.get(name, 0) + lw.graph.ranks * op.flops
    return out


@pytest.mark.parametrize("case", ["llama-decode-tp2", "gpt2-decode", "bert-prefill", "vit-prefill"])
def test_matmul_flops_by_class_equal_the_graph(case: str) -> None:
    """Decode and encoders: every matmul class of the graph has exactly the graph's FLOPs; the
    remaining classes (norm reductions, rotary) are the lowering's own and counted as auxiliary."""
    lw = _lower(case)
    got = lw.matmul_flops_by_class()
    want = _graph_flops_by_class(lw)
    if "patch_embed" in want:  # the lowering embeds the class-token column too, the graph leaves it out
        b, t = lw.workload.batch, lw.program.tensors["patches.r0"].shape[1]  # sequences, tokens
        want["patch_embed"] = want["patch_embed"] * t // (t - b)
    assert {k: v for k, v in got.items() if k in want} == want
    assert set(got) - set(want) <= {"norm", "rope"}
    fl = lw.matmul_flops()
    assert fl["linear"] + fl["attention"] == sum(want.values())
    assert fl["aux"] == sum(v for k, v in got.items() if k not in want)


def test_causal_prefill_flops_by_class() -> None:
    """Causal prefill: the projections match the graph exactly; attention skips the key blocks the mask
    removes entirely (the graph counts the full square), so it is at most the graph's."""
    lw = _lower("llama-prefill-int8")
    got, want = lw.matmul_flops_by_class(), _graph_flops_by_class(lw)
    for k in ("qkv", "o_proj", "mlp_up", "mlp_down", "head"):
        assert got[k] == want[k], k
    for k in ("attn_scores", "attn_pv"):
        assert 0 < got[k] <= want[k]


def test_every_graph_matmul_has_a_class() -> None:
    for case in ("llama-decode-tp2", "vit-prefill", "mixtral-decode-tp2"):
        lw = _lower(case)
        for op in lw.graph.ops:
            if op.flops:
                assert graph_op_class(op.name) in set(GRAPH_MATMUL_CLASS.values())


@pytest.mark.parametrize("phase,b,c,tp", [("decode", 2, 300, 1), ("prefill", 1, 700, 1), ("decode", 1, 100, 2)])
def test_tags_identical_with_layer_replication(phase: str, b: int, c: int, tp: int) -> None:
    spec = spec_from_config({**LLAMA, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 12},
                            "t")
    wl = Workload.make(phase, b, c, tp=tp)
    fast = lower(spec, wl, CHIP)
    full = lower(spec, wl, CHIP, replicate=False)
    assert fast.replicated_layers > 0 and full.replicated_layers == 0
    assert fast.program == full.program
    assert np.array_equal(fast.op_class, full.op_class)
    assert np.array_equal(fast.layer, full.layer)
    # every rank carries the same tags in the same order
    cores = fast.program.instr["core"]
    per_rank = [fast.op_class[cores == r] for r in range(tp)]
    assert all(np.array_equal(per_rank[0], x) for x in per_rank[1:])
