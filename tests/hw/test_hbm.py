"""HBM presets, address mapping, public API and the ``infsim hbm`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from preset_sources import unsourced

from infsim.cli import main
from infsim.errors import ConfigError, InfsimError
from infsim.hw.hbm import HbmModel, hbm_preset_names, load_hbm_preset
from infsim.hw.hbm.config import parse_mapping
from infsim.hw.hbm.mapping import AddressMap

EXPECTED_PEAK = {"hbm2-dramsim3": 256.0, "hbm2-2.0": 256.0, "hbm2e-3.2": 409.6, "hbm2e-3.6": 460.8,
                 "hbm3-6.4": 819.2, "hbm3e-9.6": 1228.8}


def test_presets_load_with_published_peaks() -> None:
    assert set(EXPECTED_PEAK) <= set(hbm_preset_names())
    for name, peak in EXPECTED_PEAK.items():
        cfg = load_hbm_preset(name)
        assert cfg.organization.stack_peak_gbps == pytest.approx(peak)
        assert cfg.name == name


def test_dramsim3_preset_is_exactly_dramsim3() -> None:
    c = load_hbm_preset("hbm2-dramsim3")
    o, t = c.organization, c.timing
    assert (o.channels, o.bankgroups, o.banks_per_group, o.rows, o.bus_width_bits, o.burst_length, o.tck_ns) == (
        8, 4, 4, 32768, 128, 4, 1.0)
    assert (t.tCL, t.tCWL, t.tRCDRD, t.tRCDWR, t.tRP, t.tRAS, t.tRRD_S, t.tRRD_L, t.tFAW, t.tWR) == (
        14, 4, 14, 14, 14, 34, 4, 6, 30, 16)
    assert (t.tCCD_S, t.tCCD_L, t.tWTR_S, t.tWTR_L, t.tRTP, t.tRFC, t.tREFI) == (1, 2, 6, 8, 5, 260, 3900)
    assert c.controller.address_mapping == "rorabgbachco"
    assert (c.energy.idd0_ma, c.energy.idd4r_ma, c.energy.idd4w_ma, c.energy.idd5ab_ma) == (65, 390, 500, 250)


@pytest.mark.parametrize("name", hbm_preset_names())
def test_every_preset_number_is_sourced(name: str) -> None:
    """The chip presets' rule (``preset_sources.py``): every number cites a header-defined [TAG] (defined in
    docs/references.md) in its own comment or its block's, or says assumed / inferred."""
    from infsim.hw.hbm.config import PRESET_DIR

    bad, undefined = unsourced((PRESET_DIR / f"{name}.yaml").read_text())
    assert not bad, f"{name}.yaml: numbers without a [TAG] / assumed / inferred comment:\n" + "\n".join(bad)
    assert not undefined, f"{name}.yaml: tags used but not defined in the header: {sorted(undefined)}"


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="timing.*tRC"):
        load_hbm_preset("hbm2-2.0", {"timing.tRC": 10})
    with pytest.raises(ConfigError, match="no such field"):
        load_hbm_preset("hbm2-2.0", {"timing.tXYZ": 1})
    with pytest.raises(ConfigError, match="unknown HBM preset"):
        load_hbm_preset("hbm9")
    with pytest.raises(ValueError, match="exactly once"):
        parse_mapping("RoRoBaCoCh")


@pytest.mark.parametrize("stacks", [1, 3])
def test_mapping_round_trips(stacks: int) -> None:
    amap = AddressMap.from_preset(load_hbm_preset("hbm2-2.0"), stacks)
    rng = np.random.default_rng(0)
    addr = rng.integers(0, amap.capacity_bytes // amap.access_bytes, 1000) * amap.access_bytes
    f = amap.decode(addr)
    assert np.array_equal(amap.encode(f["ch"], f["bg"], f["ba"], f["ro"], f["co"]), addr)
    assert f["ch"].max() < 16 * stacks


def test_ds3_mapping_puts_columns_lowest() -> None:
    amap = AddressMap.from_preset(load_hbm_preset("hbm2-dramsim3"))
    f = amap.decode(np.arange(40) * 64)
    assert list(f["co"][:32]) == list(range(32)) and f["ch"][32] == 1


def test_simulate_api_and_energy() -> None:
    m = HbmModel("hbm2-dramsim3", stacks=1)
    arr = np.arange(100) * 2.0
    res = m.simulate(arr, np.arange(100) * 64, np.zeros(100, bool))
    assert res.complete_ns.shape == (100,) and np.all(res.complete_ns > arr)
    s = res.stats
    assert s.energy_j["read"] > 0 and s.energy_j["activate"] > 0 and s.energy_j["write"] == 0
    # [DS3-HBM2] IDD arithmetic (docs/references.md): read burst (IDD4R - IDD3N) x VDD x 2 ns = 0.804 nJ per 64 B
    assert s.energy_j["read"] / 100 == pytest.approx(1.2 * (390 - 55) * 2 * 1e-12)
    with pytest.raises(InfsimError):
        m.simulate(arr, np.arange(99) * 64, np.zeros(100, bool))


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hbm", "--hbm", "hbm2-2.0", "--channels", "2", "--pattern", "stream", "--bytes", "256K",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("achieved_gbps", "efficiency", "row_hit_rate", "avg_latency_ns", "p99_latency_ns", "energy_j"):
        assert key in out
    assert 0.9 < out["efficiency"] <= 1.0


def test_cli_extrapolates_large_transfers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hbm", "--hbm", "hbm2-dramsim3", "--pattern", "stream", "--bytes", "13.5GB",
                 "--exact-limit", "1M", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["extrapolated"] and out["bytes"] == 13_500_000_000 and out["efficiency"] > 0.9


def test_cli_text_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hbm", "--hbm", "hbm3-6.4", "--channels", "1", "--pattern", "bank-stride", "--bytes", "8K"]) == 0
    assert "efficiency" in capsys.readouterr().out
    assert main(["hbm", "--hbm", "nope", "--pattern", "stream"]) == 1
    assert main(["hbm", "--hbm", "hbm2-2.0", "--bytes", "lots"]) == 1
    assert main(["hbm", "--hbm", "hbm2-2.0", "--channels", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "infsim: error:" in err
