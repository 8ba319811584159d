"""HBM: the numba controller reproduces the reference command log exactly on random traces, and the
independent checker finds no violation in it (and does find them in corrupted logs)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infsim.hw.hbm import HbmModel, check_log, hbm_preset_names, load_hbm_preset
from infsim.hw.hbm.protocol import ACT, PRE, RD, REF, WR

PRESETS = hbm_preset_names()


@st.composite
def traces(draw):
    name = draw(st.sampled_from(PRESETS))
    base = load_hbm_preset(name)
    postpone = draw(st.integers(1, 3))
    trefi = base.timing.tRFC * postpone + 2 * base.timing.tRC + draw(st.integers(0, 1500))
    rq = draw(st.integers(1, 8))
    wq = draw(st.integers(2, 8))
    whi = draw(st.integers(1, wq))
    overrides = {
        "organization.channels": draw(st.integers(1, 2)),
        "controller.page_policy": draw(st.sampled_from(["open", "closed"])),
        "controller.read_queue": rq,
        "controller.write_queue": wq,
        "controller.write_high_watermark": whi,
        "controller.write_low_watermark": draw(st.integers(0, whi - 1)),
        "controller.refresh_postpone_max": postpone,
        "timing.tREFI": trefi,
    }
    model = HbmModel(name, overrides=overrides)
    n = draw(st.integers(1, 60))
    horizon = draw(st.integers(0, 4000))
    arrival = np.sort(np.array(draw(st.lists(st.floats(0, horizon), min_size=n, max_size=n))))
    o = model.cfg.organization
    chans = draw(st.lists(st.integers(0, model.n_channels - 1), min_size=n, max_size=n))
    bgs = draw(st.lists(st.integers(0, o.bankgroups - 1), min_size=n, max_size=n))
    bas = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    rows = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    cols = draw(st.lists(st.integers(0, o.columns - 1), min_size=n, max_size=n))
    wr = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    addr = model.amap.encode(np.array(chans), np.array(bgs), np.array(bas), np.array(rows), np.array(cols))
    return model, arrival, addr, wr


@given(traces())
def test_fast_equals_reference_and_obeys_timing(trace) -> None:
    model, arrival, addr, wr = trace
    fast = model.simulate(arrival, addr, wr, want_log=True, engine="fast")
    ref = model.simulate(arrival, addr, wr, want_log=True, engine="ref")
    assert np.array_equal(fast.log, ref.log)
    assert np.array_equal(fast.complete_ns, ref.complete_ns)
    assert np.array_equal(fast.admit_ns, ref.admit_ns)
    assert fast.stats.commands == ref.stats.commands
    assert check_log(model.cfg, fast.log) == []
    # every request completes after it arrives
    assert np.all(fast.complete_ns >= arrival)


def _log(pattern: str, preset: str = "hbm2-dramsim3", nbytes: int = 1 << 16, **over) -> tuple[HbmModel, np.ndarray]:
    model = HbmModel(preset, overrides={"organization.channels": 2, **over})
    res = model.run_pattern(pattern, nbytes, want_log=True)
    assert check_log(model.cfg, res.log) == []
    return model, res.log.copy()


def _rules(violations) -> str:
    return " | ".join(v.rule for v in violations)


def test_checker_flags_early_rd_after_act() -> None:
    model, log = _log("random")
    i = next(i for i in range(len(log)) if log[i, 1] == RD)
    act = next(j for j in range(i - 1, -1, -1) if log[j, 1] == ACT and tuple(log[j, 2:5]) == tuple(log[i, 2:5]))
    log[i, 0] = log[act, 0] + model.cfg.timing.tRCDRD - 1
    assert "ACT->RD" in _rules(check_log(model.cfg, log))


def test_checker_flags_missing_precharge() -> None:
    model, log = _log("bank-stride")
    i = next(i for i in range(len(log)) if log[i, 1] == PRE)
    assert "already has row" in _rules(check_log(model.cfg, np.delete(log, i, axis=0)))


def test_checker_flags_missing_refresh() -> None:
    model, log = _log("stream", nbytes=4 << 20)
    assert (log[:, 1] == REF).any()
    assert "refresh" in _rules(check_log(model.cfg, log[log[:, 1] != REF]))


def test_checker_flags_tfaw_and_trrd() -> None:
    model, log = _log("random", nbytes=1 << 18)
    t = model.cfg.timing
    acts = np.nonzero((log[:, 1] == ACT) & (log[:, 2] == 0))[0]
    k = next(k for k in range(4, len(acts)) if log[acts[k], 0] - log[acts[k - 4], 0] == t.tFAW)
    log[acts[k], 0] -= 1
    rules = _rules(check_log(model.cfg, log))
    assert "tFAW" in rules


def test_checker_flags_bus_turnaround_and_double_issue() -> None:
    model, log = _log("mixed", nbytes=1 << 18)
    ch0 = np.nonzero((log[:, 2] == 0) & np.isin(log[:, 1], (RD, WR)))[0]
    pair = next((a, b) for a, b in zip(ch0, ch0[1:]) if log[a, 1] == RD and log[b, 1] == WR)
    bad = log.copy()
    bad[pair[1], 0] = bad[pair[0], 0] + model.cfg.timing.tRTW - 1
    assert "RD->WR" in _rules(check_log(model.cfg, bad))
    dup = np.insert(log, pair[0] + 1, log[pair[0]], axis=0)
    assert "two column commands" in _rules(check_log(model.cfg, dup))


@pytest.mark.parametrize("preset", PRESETS)
def test_checker_clean_on_every_pattern(preset: str) -> None:
    for pattern in ("stream", "random", "mixed", "bank-stride"):
        _log(pattern, preset, nbytes=1 << 15)


def _random_case(rng: np.random.Generator) -> tuple[HbmModel, np.ndarray, np.ndarray, np.ndarray]:
    name = PRESETS[rng.integers(len(PRESETS))]
    base = load_hbm_preset(name)
    postpone = int(rng.integers(1, 4))
    wq = int(rng.integers(2, 9))
    whi = int(rng.integers(1, wq + 1))
    overrides = {"organization.channels": 1, "controller.page_policy": ["open", "closed"][rng.integers(2)],
                 "controller.read_queue": int(rng.integers(1, 9)), "controller.write_queue": wq,
                 "controller.write_high_watermark": whi, "controller.write_low_watermark": int(rng.integers(0, whi)),
                 "controller.refresh_postpone_max": postpone,
                 "timing.tREFI": base.timing.tRFC * postpone + 2 * base.timing.tRC + int(rng.integers(0, 1500))}
    model = HbmModel(name, overrides=overrides)
    n = int(rng.integers(1, 40))
    arrival = np.sort(rng.uniform(0, rng.integers(1, 4000), n) * (rng.random() < 0.7))
    addr = model.amap.encode(0, rng.integers(0, 4, n), rng.integers(0, 2, n), rng.integers(0, 4, n),
                             rng.integers(0, 32, n))
    return model, arrival, addr, rng.random(n) < rng.random()


def test_fast_equals_reference_numpy_fuzz() -> None:
    """Cheap seeded fuzz beside the hypothesis test: many more small traces per second."""
    rng = np.random.default_rng(2024)
    for _ in range(300):
        model, arrival, addr, wr = _random_case(rng)
        fast = model.simulate(arrival, addr, wr, want_log=True)
        ref = model.simulate(arrival, addr, wr, want_log=True, engine="ref")
        assert np.array_equal(fast.log, ref.log) and np.array_equal(fast.complete_ns, ref.complete_ns)


def test_regression_drain_flag_after_queue_empties() -> None:
    """Found by the thorough hypothesis profile: the reference used to skip idle time before updating
    the write-drain flag, so the two models disagreed on the next mode."""
    model = HbmModel("hbm2-dramsim3", overrides={
        "organization.channels": 1, "controller.read_queue": 8, "controller.write_queue": 4,
        "controller.write_high_watermark": 2, "controller.write_low_watermark": 0,
        "controller.refresh_postpone_max": 2, "timing.tREFI": 2059})
    arrival = np.array([204.7, 222.8, 273.9, 336.9, 418.2, 470.2, 488.7, 504.2, 552.1, 555.6, 619.1, 694.0, 704.1,
                        744.8, 832.8, 1072.8, 1155.5, 1203.0, 1277.1, 1280.5, 1310.0, 1333.9, 1430.1, 1544.4,
                        1569.8, 1621.5, 1648.0, 1655.5, 1660.3])
    addr = np.array([41344, 1792, 101184, 107776, 128, 60736, 20032, 10432, 77568, 109120, 107904, 12160, 93568,
                     67072, 92736, 67584, 20288, 42368, 65920, 83264, 384, 125440, 34624, 74816, 36608, 109632,
                     124224, 109568, 11264])
    wr = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1], bool)
    fast = model.simulate(arrival, addr, wr, want_log=True)
    ref = model.simulate(arrival, addr, wr, want_log=True, engine="ref")
    assert np.array_equal(fast.log, ref.log)
    assert check_log(model.cfg, fast.log) == []
