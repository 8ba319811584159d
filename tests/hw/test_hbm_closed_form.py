"""HBM closed forms (derived in infsim/hw/hbm/closed_form.py): streaming, random, bank-stride and
read/write-mix efficiency, the >= 90% streaming requirement for every preset, and the bulk-transfer
shortcut vs full simulation."""

from __future__ import annotations

import numpy as np
import pytest

from infsim.hw.hbm import HbmModel, hbm_preset_names
from infsim.hw.hbm import closed_form as cf
from infsim.hw.hbm.patterns import independent_mix
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
    lost = cf.refresh_lost_cycles(m.cfg, write)
    if write:
        predicted = t.tRCDWR + n * tbl + t.tCWL + batches * lost
    else:
        predicted = t.tRCDRD + n * tbl + t.tCL + batches * lost
    measured = res.stats.elapsed_cycles
    assert measured == pytest.approx(predicted, rel=0.005)
    # and the steady-state efficiency formula itself
    steady = m.stream_gbps(1 << 30, write) / m.peak_gbps
    assert steady == pytest.approx(cf.streaming_efficiency(m.cfg, write), abs=0.005)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_streams_at_90_percent_of_pin_bandwidth(preset: str) -> None:
    m = HbmModel(preset)
    assert m.stream_gbps(int(13.5e9)) / m.peak_gbps >= 0.90


@pytest.mark.parametrize("preset", PRESETS)
def test_random_reads_below_act_ceiling(preset: str) -> None:
    m = HbmModel(preset, overrides={"organization.channels": 2})
    ceiling = cf.random_act_ceiling(m.cfg)
    s = m.run_pattern("random", 1 << 20).stats
    assert s.row_hit_rate < 0.05
    assert 0.75 * ceiling <= s.efficiency <= ceiling


@pytest.mark.parametrize("preset", PRESETS)
def test_bank_stride_is_trc_bound(preset: str) -> None:
    m = _one_channel(preset)
    t, o, P = m.cfg.timing, m.cfg.organization, m.cfg.controller.refresh_postpone_max
    t_bank = cf.bank_stride_cycles(m.cfg)
    n = 2000
    s = m.run_pattern("bank-stride", n * o.access_bytes).stats
    batches = s.commands["REF"] // P
    predicted = n * t_bank + batches * (P * t.tRFC + t.tRP + t.tRCDRD) + t.tCL + o.burst_cycles
    assert s.elapsed_cycles == pytest.approx(predicted, rel=0.02)
    assert s.efficiency <= o.burst_cycles / t_bank


def _mixed_eff(preset: str, **over) -> tuple[float, HbmModel]:
    m = HbmModel(preset, overrides={"organization.channels": 1, **over})
    return m.run_pattern("mixed", 4 << 20).stats.efficiency, m


# every preset, its read queue deepened where needed so that the copy's read and write fronts separate
# (read_queue - write_high_watermark >= the stream's bank span: 32 bursts for hbm2-dramsim3, 128 elsewhere)
SEPARATED = [(p, {} if p == "hbm2-dramsim3" else {"controller.read_queue": 192}) for p in PRESETS]


@pytest.mark.parametrize(("preset", "over"), SEPARATED)
def test_mixed_copy_reaches_turnaround_closed_form(preset: str, over: dict) -> None:
    """50/50 copy (source and destination in the same banks): write-drain batches of hi - lo writes,
    turnarounds paid once per switch, no row conflict on a switch (closed_form.mixed_efficiency)."""
    eff, m = _mixed_eff(preset, **over)
    assert cf.copy_fronts_separated(m.cfg)
    assert eff == pytest.approx(cf.mixed_efficiency(m.cfg), rel=0.03)


def test_mixed_copy_dramsim3_preset_against_its_reference_figures() -> None:
    """The issue's case: one hbm2-dramsim3 channel. Was 44% of peak (every direction switch met a row
    conflict); DRAMsim3 itself reaches 72% on the same trace with 32-write drains, the closed form for
    our 16-write drains is 69%."""
    eff, m = _mixed_eff("hbm2-dramsim3")
    assert eff == pytest.approx(cf.mixed_efficiency(m.cfg), rel=0.03)
    assert 0.66 <= eff <= 0.73


@pytest.mark.parametrize(("preset", "read_queue"), [("hbm2-dramsim3", 32), ("hbm2-dramsim3", 48), ("hbm2-2.0", 32),
                                                    ("hbm3-6.4", 32), ("hbm3e-9.6", 64)])
def test_mixed_copy_with_fronts_in_one_bank_pays_row_conflicts(preset: str, read_queue: int) -> None:
    """When read_queue - write_high_watermark is below the stream's bank span, a direction switch finds
    its bank open with the other direction's row: the efficiency falls from the turnaround form towards
    the form with a row conflict at every switch (its lower bound)."""
    eff, m = _mixed_eff(preset, **{"controller.read_queue": read_queue})
    assert not cf.copy_fronts_separated(m.cfg)
    lower = cf.mixed_efficiency(m.cfg, row_conflicts=True)
    upper = cf.mixed_efficiency(m.cfg, row_conflicts=False)
    assert lower * 0.97 <= eff <= 0.9 * upper


@pytest.mark.parametrize("preset", PRESETS)
def test_independent_read_write_streams_follow_the_mix_closed_form(preset: str) -> None:
    """A read and a write stream at unrelated addresses (what concurrent DMA transfers are) in write shares
    0.1-0.75: the mean over 16 placements within 11% of closed_form.mixed_stream_efficiency (measured
    0.90-1.10; a placement with both fronts in one bank falls towards the every-switch-conflicts form, never
    below it), and every mix below streaming."""
    m = _one_channel(preset)
    stream = cf.streaming_efficiency(m.cfg)
    tbl = m.cfg.organization.burst_cycles
    kappa_conflict = (sum(cf.switch_cycles(m.cfg, True)) - 2 * tbl) / tbl
    w = cf.mixed_batch(m.cfg)[1]
    for f in (0.1, 0.25, 0.5, 0.75):
        effs = [m.simulate(*independent_mix(m.amap, 4096, f, seed)).stats.efficiency for seed in range(16)]
        assert float(np.mean(effs)) == pytest.approx(cf.mixed_stream_efficiency(m.cfg, f), rel=0.11)
        assert min(effs) >= 0.97 * stream / (1 + kappa_conflict * min(f / w, 1 - f))
        assert cf.mixed_stream_efficiency(m.cfg, f) < stream
    assert cf.mixed_stream_efficiency(m.cfg, 0.0) == pytest.approx(stream)
    assert cf.mixed_stream_efficiency(m.cfg, 0.5) == pytest.approx(cf.mixed_efficiency(m.cfg, row_conflicts=False))


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
