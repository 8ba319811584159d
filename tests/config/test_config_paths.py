"""Dotted config paths (infsim.config.paths): checked against the schema (defaults included), "did you mean"
suggestions, get/set/take/scale, HBM preset overrides, and the one preset resolver."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infsim.config import CHIP_PATHS, ChipConfig, load_chip
from infsim.config.loader import resolve_preset
from infsim.config.paths import UnknownFieldError
from infsim.errors import ConfigError
from infsim.hw.hbm.config import HBM_PATHS, PRESET_DIR, load_hbm_preset


def test_schema_paths() -> None:
    paths, leaves = set(CHIP_PATHS.paths()), set(CHIP_PATHS.leaves())
    assert {"hbm", "hbm.bandwidth_gbps", "tensor_engine.macs_per_pe_per_cycle"} <= paths
    # fields with defaults are paths too; a Literal-keyed mapping has one leaf per key, a str-keyed one is a leaf
    assert {"hbm.dram_preset", "vector_engine.strided_penalty", "tensor_engine.macs_per_pe_per_cycle.uint8",
            "scalar_engine.func_cost", "links.torus_dims"} <= leaves
    assert not {"hbm", "tensor_engine.macs_per_pe_per_cycle"} & leaves
    for p in paths:
        CHIP_PATHS.check(p)


@pytest.mark.parametrize(("path", "message"), [
    ("hbm.bandwith_gbps", r"^hbm\.bandwith_gbps: no such field \(did you mean hbm\.bandwidth_gbps\?\)$"),
    ("bandwidth_gbps", r"did you mean hbm\.bandwidth_gbps\?"),
    ("vector_engine.strided_penalti", r"did you mean vector_engine\.strided_penalty\?"),
    ("hbm.bandwidth_gbps.x", r"hbm\.bandwidth_gbps is a single value"),
    ("energy.mac_pj.fp4", r"no such key 'fp4' in energy\.mac_pj \(one of fp32, bf16"),
    ("hbm..stacks", r"no such field"),
    ("zzzz", r"^zzzz: no such field$"),
])
def test_unknown_paths_are_rejected(path: str, message: str) -> None:
    with pytest.raises(UnknownFieldError, match=message):
        CHIP_PATHS.check(path)


def test_get_set_take() -> None:
    chip = load_chip("inf2")
    assert CHIP_PATHS.get(chip, "hbm.bandwidth_gbps") == chip.hbm.bandwidth_gbps
    assert CHIP_PATHS.get(chip, "gpsimd_engine.reduce_extra_cycles") == 0  # left at its default by the preset
    d = chip.model_dump()
    assert CHIP_PATHS.get(d, "tensor_engine.macs_per_pe_per_cycle.uint8", default=None) is None
    with pytest.raises(ConfigError, match="uint8: not set"):
        CHIP_PATHS.get(d, "tensor_engine.macs_per_pe_per_cycle.uint8")
    data: dict = {"hbm": None}
    CHIP_PATHS.set(data, "hbm.latency_ns", 5.0)  # sections the data leaves out (or sets to null) are created
    CHIP_PATHS.set(data, "links.topology", "ring")
    assert data == {"hbm": {"latency_ns": 5.0}, "links": {"topology": "ring"}}
    with pytest.raises(UnknownFieldError):
        CHIP_PATHS.set(data, "hbm.latency", 5.0)
    # take: the source's value, or absent where the source has none
    inf1 = load_chip("inf1").model_dump()
    CHIP_PATHS.take(d, inf1, "tensor_engine.macs_per_pe_per_cycle.fp32")
    CHIP_PATHS.take(d, inf1, "hbm")
    assert "fp32" not in d["tensor_engine"]["macs_per_pe_per_cycle"] and d["hbm"] == inf1["hbm"]
    d["hbm"]["stacks"] = 99
    assert inf1["hbm"]["stacks"] != 99  # a copy


def test_scale() -> None:
    d = load_chip("inf2").model_dump()
    src = load_chip("inf2")
    CHIP_PATHS.scale(d, "tensor_engine.macs_per_pe_per_cycle.*", 2)
    CHIP_PATHS.scale(d, "/vector_engine.fixed_overhead_cycles", 3)
    CHIP_PATHS.scale(d, "/dma.fixed_latency_ns", 4)
    CHIP_PATHS.scale(d, "sbuf.bytes_per_partition", 1.5)
    assert d["tensor_engine"]["macs_per_pe_per_cycle"] == {
        k: 2 * v for k, v in src.tensor_engine.macs_per_pe_per_cycle.items()}
    assert d["vector_engine"]["fixed_overhead_cycles"] == int(src.vector_engine.fixed_overhead_cycles / 3)
    assert d["dma"]["fixed_latency_ns"] == src.dma.fixed_latency_ns / 4
    assert d["sbuf"]["bytes_per_partition"] == int(src.sbuf.bytes_per_partition * 1.5)
    assert isinstance(d["sbuf"]["bytes_per_partition"], int)
    ChipConfig.model_validate(d)
    with pytest.raises(ConfigError, match="not a mapping"):
        CHIP_PATHS.scale(d, "hbm.bandwidth_gbps.*", 2)
    with pytest.raises(ConfigError, match="not a number"):
        CHIP_PATHS.scale(d, "links.topology", 2)
    with pytest.raises(UnknownFieldError, match="did you mean dma.engine_gbps"):
        CHIP_PATHS.scale(d, "/dma.engin_gbps", 2)


def test_hbm_preset_override_of_a_default_field(tmp_path: Path) -> None:
    data = yaml.safe_load((PRESET_DIR / "hbm2-2.0.yaml").read_text())
    del data["controller"]["page_policy"]  # left at the schema's default ('open')
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(data))
    assert load_hbm_preset(p).controller.page_policy == "open"
    assert load_hbm_preset(p, {"controller.page_policy": "closed"}).controller.page_policy == "closed"
    assert load_hbm_preset(p, {"description": "x"}).description == "x"
    with pytest.raises(ConfigError, match=r"^override controller\.page_polcy=closed: no such field \(did you mean "
                                          r"controller\.page_policy\?\)"):
        load_hbm_preset(p, {"controller.page_polcy": "closed"})
    with pytest.raises(ConfigError, match=r"^override timing\.tRC=10: timing: tRC must be >= tRAS"):
        load_hbm_preset("hbm2-2.0", {"timing.tRC": 10})
    assert "organization.channels" in HBM_PATHS.leaves()


def test_one_preset_resolver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hbm2-2.0").mkdir()  # a folder named like a preset is not a preset file (chips and HBM alike)
    (tmp_path / "inf2").mkdir()
    assert load_hbm_preset("hbm2-2.0").name and load_chip("inf2").name == "inf2"
    with pytest.raises(ConfigError, match=r"unknown HBM preset 'hbm2-2.1' \(did you mean hbm2-2\.0\?; presets: "):
        load_hbm_preset("hbm2-2.1")
    with pytest.raises(ConfigError, match=r"unknown chip 'inf3' \(did you mean inf2\?; presets: "):
        load_chip("inf3")
    with pytest.raises(ConfigError, match=r"nope\.yml: no such file"):
        resolve_preset("nope.yml")
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: x\nname: y\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml:2: invalid YAML: duplicate key 'name'"):
        load_hbm_preset(dup)  # HBM presets are read by the same loader as chips
