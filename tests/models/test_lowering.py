"""Lowering: functional equivalence with a numpy forward pass (through the reference interpreter),
race-freedom of the generated synchronisation, FLOPs and traffic against the op graph."""

from __future__ import annotations

import numpy as np
import pytest

from infsim.config import load_chip
from infsim.isa import Engine, Op
from infsim.isa.interp import run
from infsim.isa.validate import check
from infsim.models.graph import Workload
from infsim.models.lower import LoweringError, lower, repeat
from infsim.models.lower.check import find_races
from infsim.models.lower.emit import Emitter
from infsim.models.lower.io import make_inputs, read_logits
from infsim.models.lower.transformer import _Lowering
from infsim.models.reference import forward, random_params
from infsim.models.spec import load_model, spec_from_config

CHIP = load_chip("inf2")

LLAMA = {
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 512,
    "max_position_embeddings": 512,
}
GPT2 = {"model_type": "gpt2", "n_embd": 128, "n_head": 4, "n_layer": 2, "n_positions": 512, "vocab_size": 384}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("cfg", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_prefill_matches_numpy(cfg: dict) -> None:
    spec = spec_from_config(cfg, "tiny")
    params = random_params(spec, 0)
    x = np.random.default_rng(1).normal(0, 1, (2, 12, spec.hidden))
    ref, _, _ = forward(spec, params, x)
    lw = lower(spec, Workload.make("prefill", 2, 12), CHIP)
    assert not check(lw.program, CHIP)
    res = run(lw.program, make_inputs(lw, params, x), CHIP)
    assert _rel(read_logits(lw, res), ref) < 0.03


@pytest.mark.parametrize("cfg", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_decode_steps_with_kv_cache(cfg: dict) -> None:
    """Three decode steps; each step's K/V cache comes from the previous step's program output."""
    spec = spec_from_config(cfg, "tiny")
    params = random_params(spec, 0)
    rng = np.random.default_rng(2)
    b, c0 = 2, 9
    x0 = rng.normal(0, 1, (b, c0, spec.hidden))
    _, kc, vc = forward(spec, params, x0)
    hbm_cache = None
    for step in range(3):
        x = rng.normal(0, 1, (b, 1, spec.hidden))
        ref, kc, vc = forward(spec, params, x, pos0=c0 + step, k_cache=kc, v_cache=vc)
        lw = lower(spec, Workload.make("decode", b, c0 + step), CHIP)
        inputs = make_inputs(lw, params, x, kc, vc)
        if hbm_cache is not None:  # chain: the cache written by the previous program
            inputs.update(hbm_cache)
        res = run(lw.program, inputs, CHIP)
        assert _rel(read_logits(lw, res), ref) < 0.03, f"step {step}"
        hbm_cache = {n: res.hbm(n) for n in lw.program.tensors if "_cache" in n}


def test_tensor_parallel_two_cores() -> None:
    spec = spec_from_config(LLAMA, "tiny")
    params = random_params(spec, 0)
    x = np.random.default_rng(3).normal(0, 1, (1, 8, spec.hidden))
    ref, _, _ = forward(spec, params, x)
    lw = lower(spec, Workload.make("prefill", 1, 8, tp=2), CHIP)
    assert lw.program.num_cores == 2
    assert any(r["op"] == 14 for r in lw.program.instr)  # all_reduce
    res = run(lw.program, make_inputs(lw, params, x), CHIP)
    assert _rel(read_logits(lw, res), ref) < 0.03


@pytest.mark.parametrize("dtype,tol", [("fp8_e4m3", 0.25), ("int8", 0.08)])
def test_quantized_weights(dtype: str, tol: float) -> None:
    spec = spec_from_config(LLAMA, "tiny")
    params = random_params(spec, 0)
    x = np.random.default_rng(4).normal(0, 1, (1, 6, spec.hidden))
    ref, _, _ = forward(spec, params, x)
    lw = lower(spec, Workload.make("prefill", 1, 6, dtype=dtype), CHIP)
    res = run(lw.program, make_inputs(lw, params, x), CHIP)
    assert _rel(read_logits(lw, res), ref) < tol


@pytest.mark.parametrize("phase,tp", [("prefill", 1), ("decode", 1), ("decode", 2)])
def test_no_races(phase: str, tp: int) -> None:
    spec = spec_from_config(LLAMA, "tiny")
    lw = lower(spec, Workload.make(phase, 2, 10, tp=tp), CHIP)
    assert find_races(lw.program) == []


def test_decode_flops_match_graph_exactly() -> None:
    spec = spec_from_config(
        {**LLAMA, "hidden_size": 256, "intermediate_size": 640, "num_attention_heads": 2, "num_key_value_heads": 1}, "t"
    )
    lw = lower(spec, Workload.make("decode", 3, 200), CHIP)
    fl = lw.matmul_flops()
    assert fl["linear"] + fl["attention"] == lw.graph.flops()


def test_decode_dma_bytes_near_graph_minimum() -> None:
    """HBM bytes moved by the program's DMAs vs the op graph's minimum (static count)."""
    import dataclasses

    spec = dataclasses.replace(load_model("llama-2-7b"), layers=2)
    lw = lower(spec, Workload.make("decode", 1, 2048), CHIP)
    prog = lw.program
    aps = prog.aps
    ins = prog.instr
    d = ins[ins["op"] == 10]
    total = 0
    for col in (0, 1):
        a = aps[d["opnd"][:, col]]
        hb = a["space"] == 0
        sizes = np.where(np.arange(4)[None, :] < a["ndims"][:, None], a["sizes"], 1).prod(axis=1)
        isz = np.array([2, 2, 2, 1, 1, 1, 1, 4])[a["dtype"]]  # by DType code
        isz = np.where(a["dtype"] == 0, 4, isz)
        total += int((a["pcount"] * sizes * isz)[hb].sum())
    gmin = lw.graph.hbm_bytes()
    assert gmin <= total * 1.001
    assert total <= gmin * 1.05


def test_sbuf_overflow_names_roles() -> None:
    small = load_chip("inf2", ["sbuf.bytes_per_partition=4096"])
    with pytest.raises(LoweringError, match="needs .* bytes per partition, 4096 available"):
        lower(load_model("llama-2-7b"), Workload.make("decode", 1, 128), small)


@pytest.mark.parametrize("phase,b,c,tp", [("decode", 2, 300, 1), ("prefill", 1, 700, 1), ("decode", 1, 100, 2),
                                          ("prefill", 1, 1500, 1), ("prefill", 1, 1100, 2)])
def test_stamped_layers_equal_full_emission(phase: str, b: int, c: int, tp: int) -> None:
    """The compact path (verified periodic layers stamped out with numpy, in every token chunk; ranks stamped
    from a template) gives the same program, byte for byte (instruction records, the access-pattern table in
    order of first use, declarations) and the same instruction tags, and leaves the emitter's streams and the
    tracked HBM buffers in the state emitting every instruction leaves them (what later emission reads)."""
    spec = spec_from_config({**LLAMA, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 2,
                             "num_key_value_heads": 1, "num_hidden_layers": 12, "max_position_embeddings": 2048}, "t")
    wl = Workload.make(phase, b, c, tp=tp)
    lf, lu = _Lowering(spec, wl, CHIP, None), _Lowering(spec, wl, CHIP, None, replicate=False)
    fast, full = lf.run(), lu.run()
    chunks = -(-b * wl.seq // fast.token_chunk)
    assert fast.replicated_layers >= 4 * chunks * tp  # every chunk of every rank stamped
    assert len(fast.program) == len(full.program)
    assert fast.program.aps.tobytes() == full.program.aps.tobytes()
    assert fast.program.instr.tobytes() == full.program.instr.tobytes()
    assert fast.program.semaphores == full.program.semaphores
    assert np.array_equal(fast.op_class, full.op_class) and np.array_equal(fast.layer, full.layer)

    def streams(lo: _Lowering) -> dict:
        return {k: (st.sem, st.count, st.known) for k, st in lo.em._streams.items()}

    def hbm(lo: _Lowering) -> dict:
        return {k: (b.tensor, b.last_write, b.reads, b.war_base) for k, b in lo.hbm.bufs.items()}

    assert streams(lf) == streams(lu)
    assert hbm(lf) == hbm(lu)


@pytest.mark.parametrize("phase,dtype", [("decode", "int8"), ("prefill", "bf16"), ("decode", "fp8_e4m3")])
def test_bulk_matmuls_equal_emission(phase: str, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Emitter.matmul_grid (a slab's matmul grid packed in bulk, waits looked for only where an access is new
    or its buffer changed) gives the program emitting each matmul gives."""
    spec = spec_from_config(LLAMA, "t")
    wl = Workload.make(phase, 2, 300, tp=2, dtype=dtype)
    fast = lower(spec, wl, CHIP)

    def one_by_one(self: Emitter, core: int, dsts: list, stats: tuple, movs: list, accs: list) -> None:
        for i, mov in enumerate(movs):
            for j, dst in enumerate(dsts):
                self.emit(Op.matmul, core, Engine.tensor, dst=dst, stationary=stats[i][j], moving=mov,
                          accumulate=accs[i])

    monkeypatch.setattr(Emitter, "matmul_grid", one_by_one)
    ref = lower(spec, wl, CHIP)
    assert fast.program.semaphores == ref.program.semaphores
    assert fast.program.instr.tobytes() == ref.program.instr.tobytes()
    assert fast.program.aps.tobytes() == ref.program.aps.tobytes()
    assert np.array_equal(fast.op_class, ref.op_class) and np.array_equal(fast.layer, ref.layer)


@pytest.mark.parametrize("cfg,tp", [(LLAMA, 2), (LLAMA, 4), (GPT2, 4)], ids=["llama-tp2", "llama-tp4", "gpt2-tp4"])
def test_stamped_ranks_equal_full_emission(cfg: dict, tp: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks stamped from a template rank (renamed core, tensors, semaphores) give the program emitting every
    rank gives, byte for byte; GPT-2's rank 0 adds the output biases, so it is its own template and ranks
    2..3 are stamped from rank 1. (Stamped in pieces of 997 instructions, as large ranks are.)"""
    monkeypatch.setattr(repeat, "_PIECE", 997)
    spec = spec_from_config(cfg, "t")
    wl = Workload.make("decode", 1, 100, tp=tp)
    fast = lower(spec, wl, CHIP)
    full = lower(spec, wl, CHIP, replicate=False)
    assert fast.stamped_ranks == (tp - 1 if cfg is LLAMA else tp - 2) and full.stamped_ranks == 0
    assert fast.program.aps.tobytes() == full.program.aps.tobytes()
    assert fast.program.instr.tobytes() == full.program.instr.tobytes()
    assert fast.program.semaphores == full.program.semaphores
    assert np.array_equal(fast.op_class, full.op_class) and np.array_equal(fast.layer, full.layer)
    assert set(np.unique(fast.program.instr["core"])) == set(range(tp))


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_one_queue_per_engine_shares_queues(phase: str) -> None:
    """With one DMA queue per engine the weight stream and the other transfers share the queues (the
    lowering's fallback); the program is still correct and race-free."""
    chip = load_chip("inf2", ["dma.queues_per_core=16"])
    spec = spec_from_config(LLAMA, "tiny")
    params = random_params(spec, 0)
    rng = np.random.default_rng(3)
    b, c = 2, (12 if phase == "prefill" else 9)
    x0 = rng.normal(0, 1, (b, c, spec.hidden))
    if phase == "prefill":
        ref, _, _ = forward(spec, params, x0)
        lw = lower(spec, Workload.make("prefill", b, c), chip)
        inputs = make_inputs(lw, params, x0)
    else:
        _, kc, vc = forward(spec, params, x0)
        x = rng.normal(0, 1, (b, 1, spec.hidden))
        ref, _, _ = forward(spec, params, x, pos0=c, k_cache=kc, v_cache=vc)
        lw = lower(spec, Workload.make("decode", b, c), chip)
        inputs = make_inputs(lw, params, x, kc, vc)
    assert not check(lw.program, chip)
    assert int(lw.program.instr["queue"].max()) < 16
    assert not find_races(lw.program)
    assert _rel(read_logits(lw, run(lw.program, inputs, chip)), ref) < 0.03


def test_tensor_map_is_the_lookup_by_name() -> None:
    """repeat._tensor_map (names parsed once, vectorised) gives what looking up ``L{layer + k}.{rest}`` by
    name gives, also after tensors are added and for names a lookup cannot produce (leading zeros)."""
    from infsim.isa import DType, Program

    def by_name(p: Program, k: int) -> list[int]:
        out = []
        for i, name in enumerate(p.tensors):
            m = repeat._LAYER.match(name)
            out.append(p._tensor_index.get(f"L{int(m.group(1)) + k}.{m.group(2)}", -1) if m else i)
        return out

    p = Program(num_cores=1)
    for name in ("embed", "L0.wq.r0", "L1.wq.r0", "L2.wq.r0", "L1.wk.r0", "L2.wk.r0", "L03.wq.r0", "L4.wq.r0",
                 "head"):
        p.add_tensor(name, DType.bf16, (2,))
    for k in (1, 2, 3, 9):
        assert repeat._tensor_map(p, k).tolist() == by_name(p, k)
    p.add_tensor("L3.wq.r0", DType.bf16, (2,))  # added after the names were parsed
    p.add_tensor("L3.wk.r0", DType.bf16, (2,))
    for k in (1, 2):
        assert repeat._tensor_map(p, k).tolist() == by_name(p, k)
    assert repeat._tensor_map(Program(num_cores=1), 1).tolist() == []
