"""FastSems.crossing (running sums and binary searches) against the definition: the first known signal time at
which the applied total plus the known signals reach the waited value, for signals arriving in and out of
time order while time advances."""

from __future__ import annotations

import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from infsim.engine.semaphores import NEVER, SAT, FastSems


def _naive(signals: list[tuple[int, int]], now: int, v: int) -> int:
    applied = sum(inc for t, inc in signals if t <= now)
    if applied >= v:
        return SAT
    acc = applied
    for t, inc in sorted((t, inc) for t, inc in signals if t > now):
        acc += inc
        if acc >= v:
            return t
    return NEVER


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400), st.integers(1, 3), st.integers(0, 60)),
                      min_size=1, max_size=400))
def test_crossing_matches_the_definition(steps: list[tuple[int, int, int, int]]) -> None:
    env = simpy.Environment()
    sems = FastSems(env, 1)
    signals: list[tuple[int, int]] = []
    for advance, dt, inc, v in steps:
        if advance == 0:  # let time pass (applies the signals due)
            env.run(until=env.now + dt + 1)
        elif advance == 1:
            t = env.now + dt
            sems.signal(0, t, inc)
            signals.append((t, inc))
        else:
            assert sems.crossing(0, v) == _naive(signals, env.now, v)


def test_long_chains_trim_the_applied_prefix() -> None:
    """Thousands of signals, time advancing past most: the applied prefix is dropped and crossings stay exact."""
    env = simpy.Environment()
    sems = FastSems(env, 1)
    signals = []
    for i in range(5000):
        sems.signal(0, 10 * i + 1, 1)
        signals.append((10 * i + 1, 1))
    for now in range(0, 50_000, 997):
        env.run(until=now + 1)
        for v in (1, 2500, 4999, 5000, 5001):
            assert sems.crossing(0, v) == _naive(signals, env.now, v)
    assert len(sems.pt[0]) < 5000  # trimmed
