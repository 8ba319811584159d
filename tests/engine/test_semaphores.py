"""The numba kernel's known-crossing lookup (infsim.engine.kernel._crossing: a galloping search from the
previous answer on the semaphore) against the definition: the time of the first known signal at which the
running total reaches the waited value. Queries come in any order, so the hint moves both ways."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from infsim.engine.kernel import NEVER, _crossing


def _naive(times: list[int], incs: list[int], v: int) -> int:
    if v <= 0:
        return -1
    acc = 0
    for t, inc in zip(times, incs, strict=True):
        acc += inc
        if acc >= v:
            return t
    return NEVER


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 16)), max_size=300),
       st.lists(st.integers(-2, 1200), min_size=1, max_size=60), st.integers(0, 7))
def test_crossing_matches_the_definition(signals: list[tuple[int, int]], queries: list[int], lead: int) -> None:
    times = np.cumsum([dt for dt, _ in signals]).astype(np.int64).tolist()
    incs = [inc for _, inc in signals]
    n = len(times)
    # semaphore 1's signals sit after `lead` entries of semaphore 0 (offsets into shared arrays)
    off = np.array([0, lead], np.int64)
    cnt = np.array([0, n], np.int64)
    sig_t = np.zeros(lead + n + 1, np.int64)
    sig_cum = np.zeros(lead + n + 1, np.int64)
    sig_t[lead:lead + n] = times
    sig_cum[lead:lead + n] = np.cumsum(incs) if n else []
    hint = np.zeros(2, np.int64)
    for v in queries:
        assert _crossing(1, v, off, cnt, sig_t, sig_cum, hint) == _naive(times, incs, v)
