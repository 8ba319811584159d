"""HBM closed forms (derived in infsim/hw/hbm/model.py): streaming, random and bank-stride efficiency,
the >= 90% streaming requirement for every preset, and the bulk-transfer shortcut vs full simulation."""

from __future__ import annotations

import numpy as np
import pytest

from infsim.hw.hbm import HbmModel, hbm_preset_names
from infsim.hw.hbm.protocol import REF

PRESETS = hbm_preset_names()


def _one_channel(preset: str) -> HbmModel:
    return HbmModel(preset, overrides={"organization.channels": 1})


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("write", [False, True])
def test_streaming_matches_closed_form(preset: str, write: bool) -> None:
    m = _one_channel(preset)
    t, o, P = m.cfg.timing, m.cfg.organization, m.cfg.controller.refresh_postpone_max
    tbl = o.burst_cycles
    n = int(3.3 * P * t.tREFI / tbl)
    res = m.run_pattern("stream", n * o.access_bytes, is_write=write)
    batches = res.stats.commands["REF"] // P
    assert batches == 3
    if write:
        lost = P * t.tRFC + (t.tCWL + tbl + t.tWR) + t.tRP + t.tRCDWR - tbl
        predicted = t.tRCDWR + n * tbl + t.tCWL + batches * lost
    else:
        lost = P * t.tRFC + t.tRTP + t.tRP + t.tRCDRD - tbl
        predicted = t.tRCDRD + n * tbl + t.tCL + batches * lost
    measured = res.stats.elapsed_cycles
    assert measured == pytest.approx(predicted, rel=0.005)
    # and the steady-state efficiency formula itself
    eff = 1 - lost / (P * t.tREFI)
    steady = m.stream_gbps(1 << 30, write) / m.peak_gbps
    assert steady == pytest.approx(eff, abs=0.005)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_streams_at_90_percent_of_pin_bandwidth(preset: str) -> None:
    m = HbmModel(preset)
    assert m.stream_gbps(int(13.5e9)) / m.peak_gbps >= 0.90


@pytest.mark.parametrize("preset", PRESETS)
def test_random_reads_below_act_ceiling(preset: str) -> None:
    m = HbmModel(preset, overrides={"organization.channels": 2})
    t, o = m.cfg.timing, m.cfg.organization
    t_act = max(t.tRRD_S, t.tFAW / 4, t.tRC / o.banks)
    ceiling = min(1.0, o.burst_cycles / t_act)
    s = m.run_pattern("random", 1 << 20).stats
    assert s.row_hit_rate < 0.05
    assert 0.75 * ceiling <= s.efficiency <= ceiling


@pytest.mark.parametrize("preset", PRESETS)
def test_bank_stride_is_trc_bound(preset: str) -> None:
    m = _one_channel(preset)
    t, o, P = m.cfg.timing, m.cfg.organization, m.cfg.controller.refresh_postpone_max
    t_bank = max(t.tRC, t.tRAS + t.tRP, t.tRCDRD + t.tRTP + t.tRP)
    n = 2000
    s = m.run_pattern("bank-stride", n * o.access_bytes).stats
    batches = s.commands["REF"] // P
    predicted = n * t_bank + batches * (P * t.tRFC + t.tRP + t.tRCDRD) + t.tCL + o.burst_cycles
    assert s.elapsed_cycles == pytest.approx(predicted, rel=0.02)
    assert s.efficiency <= o.burst_cycles / t_bank


@pytest.mark.parametrize(("preset", "write"), [("hbm2-dramsim3", False), ("hbm2-dramsim3", True), ("hbm2-2.0", False)])
def test_bulk_shortcut_agrees_with_full_simulation(preset: str, write: bool) -> None:
    m = HbmModel(preset)
    for nbytes in (16 << 20, 64 << 20):
        full = m.run_pattern("stream", nbytes, is_write=write).stats.elapsed_ns
        assert m.stream_time_ns(nbytes, write, refresh="cold") == pytest.approx(full, rel=0.01)
    # the amortized (phase-averaged) estimate converges to the full simulation on long transfers
    assert m.stream_time_ns(nbytes, write) == pytest.approx(full, rel=0.01)
    # the 64 MiB case is beyond the simulated window, so it really was extrapolated
    comp, _, _, _ = m._window("stream", write)
    assert len(comp) < (64 << 20) / m.access_bytes / m.n_channels


def test_whole_model_read_is_fast() -> None:
    import time

    m = HbmModel("hbm2e-3.2", stacks=2)
    t0 = time.perf_counter()
    ns = m.stream_time_ns(int(13.5e9))
    assert time.perf_counter() - t0 < 20
    assert 13.5e9 / ns / m.peak_gbps > 0.9
    assert m.stream_time_ns(int(13.5e9)) == ns  # memoized
    assert m.stream_time_ns(int(13.5e9), refresh="cold") == pytest.approx(ns, rel=0.001)


def test_refresh_happens_every_trefi_on_average() -> None:
    m = _one_channel("hbm2-2.0")
    res = m.run_pattern("stream", 4 << 20, want_log=True)
    refs = int((res.log[:, 1] == REF).sum())
    periods = res.stats.elapsed_cycles / m.cfg.timing.tREFI
    assert abs(refs - periods) <= m.cfg.controller.refresh_postpone_max
    assert np.all(np.diff(res.log[:, 0]) >= 0)
