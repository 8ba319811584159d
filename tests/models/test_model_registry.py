"""The memory and collective model registries: a chip names its models, the CLI's ``--memory`` overrides the
chip, unknown names are errors listing the registered ones, and a registered model is used by every
fidelity."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infsim.config import load_chip
from infsim.engine.collectives import COLLECTIVE_MODELS, make_collectives, register_collectives
from infsim.engine.collectives.link import LinkCollectives
from infsim.engine.memory import MEMORY_MODELS, make_memory, register_memory
from infsim.engine.memory.dram import DramMemory
from infsim.engine.memory.simple import SimpleMemory
from infsim.errors import ConfigError, InfsimError
from infsim.fidelity.step import estimate
from infsim.isa import DType, Program, hbm, make, sbuf
from infsim.isa.opcodes import Op
from infsim.models.graph import Workload
from infsim.models.spec import load_model
from infsim.sim import simulate

ROOT = Path(__file__).resolve().parents[2]
INF2 = load_chip("inf2")


def _dma_prog() -> Program:
    """HBM-bound: 32 queues on two cores read at once."""
    p = Program(2, 2)
    p.add_tensor("x", "bf16", (128, 4096))
    for core in (0, 1):
        for q in range(16):
            p.append(make("dma_copy", sbuf(128, 4096, DType.bf16), hbm("x", 128, 4096, DType.bf16), queue=q,
                          core=core))
    return p


def _all_reduce_prog() -> Program:
    p = Program(2, 2)
    p.add_group("g", (0, 1))
    for c in (0, 1):
        p.append(make("all_reduce", sbuf(128, 512, DType.fp32), sbuf(128, 512, DType.fp32, offset=4096), group="g",
                      core=c))
    return p


def test_presets_default_to_dram_and_link() -> None:
    assert INF2.hbm.memory_model == "dram" and INF2.links.collective_model == "link"
    assert isinstance(make_memory(INF2), DramMemory)
    assert isinstance(make_memory(INF2, "simple"), SimpleMemory)
    assert isinstance(make_collectives(INF2), LinkCollectives)


@pytest.mark.parametrize("fidelity", ["cycle", "analytical"])
def test_chip_names_its_memory_model_and_the_argument_overrides_it(fidelity: str) -> None:
    simple_chip = load_chip("inf2", {"hbm.memory_model": "simple"})
    p = _dma_prog()
    by_chip = simulate(p, simple_chip, fidelity=fidelity)
    by_arg = simulate(p, INF2, fidelity=fidelity, memory="simple")
    dram = simulate(p, INF2, fidelity=fidelity)
    assert by_chip.total_ps == by_arg.total_ps
    assert dram.total_ps > by_chip.total_ps  # DRAM-level losses make the same bytes slower
    assert simulate(p, simple_chip, fidelity=fidelity, memory="dram").total_ps == dram.total_ps


def test_step_fidelity_uses_the_memory_model() -> None:
    spec = load_model("llama-2-7b")
    wl = Workload.make("decode", 1, 2048, tp=2)
    slow = {"hbm.bandwidth_gbps": 200}  # HBM-bound
    dram = estimate(spec, wl, load_chip("inf2", slow))
    simple = estimate(spec, wl, load_chip("inf2", slow), memory="simple")
    assert simple.total_ns < dram.total_ns  # the pin bandwidth without DRAM-level losses is faster
    assert estimate(spec, wl, load_chip("inf2", {**slow, "hbm.memory_model": "simple"})).total_ns == simple.total_ns


def test_unknown_names_list_the_registered_ones() -> None:
    bad = load_chip("inf2", {"hbm.memory_model": "hbm9"})
    with pytest.raises(ConfigError, match=r"chip 'inf2': hbm.memory_model: unknown memory model 'hbm9' "
                                          r"\(registered: dram, simple\)"):
        simulate(_dma_prog(), bad)
    with pytest.raises(InfsimError, match=r"unknown memory model 'hbm9' \(registered: dram, simple\)"):
        simulate(_dma_prog(), INF2, memory="hbm9")
    bad = load_chip("inf2", {"links.collective_model": "mesh"})
    for fidelity in ("cycle", "analytical"):
        with pytest.raises(ConfigError, match=r"chip 'inf2': links.collective_model: unknown collective model "
                                              r"'mesh' \(registered: link\)"):
            simulate(_all_reduce_prog(), bad, fidelity=fidelity)


def test_cli_reports_an_unknown_memory_model_in_one_line() -> None:
    example = str(ROOT / "examples" / "asm" / "softmax.s")
    out = subprocess.run([sys.executable, "-m", "infsim", "sim", example, "--set", "hbm.memory_model=hbm9"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "hbm.memory_model: unknown memory model 'hbm9' (registered: dram, simple)" in out.stderr


class _SlowCollectives:
    """A test model: every collective takes 10 ms and sends nothing."""

    def __init__(self, chip: object) -> None:
        pass

    def duration_ps(self, op: Op, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                    cores_per_chip: int) -> tuple[int, int]:
        return 10**10, 0


class _HalfMemory(SimpleMemory):
    """A test model: the simple pool at half the chip's bandwidth."""

    def __init__(self, chip: object) -> None:
        super().__init__(load_chip("inf2", {"hbm.bandwidth_gbps": INF2.hbm.bandwidth_gbps / 2}))


@pytest.fixture
def registered() -> Iterator[None]:
    register_memory("half", _HalfMemory)
    register_collectives("slow", _SlowCollectives)
    yield
    del MEMORY_MODELS["half"]
    del COLLECTIVE_MODELS["slow"]


def test_registered_models_are_used_by_every_fidelity(registered: None) -> None:
    with pytest.raises(InfsimError, match="already registered"):
        register_memory("half", _HalfMemory)
    chip = load_chip("inf2", {"hbm.memory_model": "half", "links.collective_model": "slow"})
    for fidelity in ("cycle", "analytical"):
        r = simulate(_all_reduce_prog(), chip, fidelity=fidelity)
        assert r.total_ps == 10**10
        half = simulate(_dma_prog(), chip, fidelity=fidelity)
        assert half.total_ps > simulate(_dma_prog(), INF2, fidelity=fidelity, memory="simple").total_ps
    spec = load_model("gpt2")
    wl = Workload.make("decode", 1, 128, tp=2)
    assert estimate(spec, wl, INF2).total_ns < 1e6
    assert estimate(spec, wl, chip).total_ns > 24 * 1e7  # two all-reduces per layer, 12 layers
