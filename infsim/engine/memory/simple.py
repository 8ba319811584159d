"""The bandwidth/latency HBM model behind the engine's memory interface (registered as ``simple``; the
interface is in :mod:`infsim.engine.memory`), and the shared-bandwidth pool every model here builds on.

:class:`SimpleMemory`: per chip a single pool of ``hbm.bandwidth_gbps`` shared by all DMA engines, plus a fixed
``hbm.latency_ns``. Bandwidth is handed out greedily in request order: a transfer runs at
``min(max_gbps, peak - bandwidth already promised to earlier transfers)`` at every instant until its
bytes are done (a piecewise-constant "promised rate" profile per chip), then ``latency`` is added.
Earlier transfers are never slowed by later ones. Left out: banks, rows, refresh, read/write turnaround,
address mapping (all in the DRAM-level model of ``infsim/hw/hbm``, which :mod:`.dram` charges on top of this
pool).

The pool (:func:`allocate`, :class:`RateProfile`) takes two more inputs that this model leaves neutral:

* ``eff`` per transfer (:meth:`SimpleMemory.transfer`): a transfer of ``n`` bytes occupies ``n / eff`` bytes
  of pin bandwidth (and at most ``max_gbps / eff`` of it); ``simple`` passes 1;
* a read/write mixing cost ``kappa`` with a write batch ``W``: the profile keeps the writes' part ``w`` of
  the promised rate ``rate`` (reads ``r = rate - w``), and the pool's occupied bandwidth is
  ``rate + kappa x min(w / W, r)``: the bus time of direction switches (see
  :func:`infsim.hw.hbm.closed_form.mixed_stream_efficiency`). A new transfer gets the largest rate that
  keeps that within the peak, so it pays for the switches it adds and earlier transfers keep their rate.
  ``simple`` has ``kappa = 0``: the occupied bandwidth is ``rate``, exactly as without the term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.isa.program import Program
from infsim.jit import njit_cached

from .access import HbmAccess

if TYPE_CHECKING:
    from infsim.engine.costs import Costs

if TYPE_CHECKING:
    from ..costs import Costs


@njit_cached()
def _room(used: float, w: float, peak: float, is_write: bool, kappa: float, batch: float) -> float:
    """The largest rate a new transfer of one direction can add to a segment promised ``used`` (of which
    ``w`` writes) so that ``used + x + kappa * min(writes / batch, reads)`` stays within ``peak``."""
    a0 = peak - used
    if kappa == 0.0:
        return a0
    r = used - w
    if is_write:
        x = (a0 - kappa * w / batch) / (1.0 + kappa / batch)
        if x > batch * r - w:  # the new writes outnumber what the reads can interleave with
            x = a0 - kappa * r
    else:
        x = (a0 - kappa * r) / (1.0 + kappa)
        if x > w / batch - r:
            x = a0 - kappa * w / batch
    return x


@njit_cached()
def allocate(t: np.ndarray, rate: np.ndarray, wrate: np.ndarray, m: int, start: int, nbytes: float, peak: float,
             max_rate: float, is_write: bool, kappa: float, batch: float) -> tuple[int, int]:
    """Greedy allocation on the step functions ``rate[k]`` (and its writes' part ``wrate[k]``) on
    ``[t[k], t[k+1])`` (0 after ``t[m-1]``).

    Drops breakpoints before ``start``, serves ``nbytes`` from ``start`` at ``min(max_rate, room)``
    (:func:`_room`), adds the served rate to the profile and returns ``(end, new m)``. The arrays need
    ``m + 4`` slots.
    """
    # drop segments that end at or before start (keep the one containing start)
    k0 = 0
    while k0 + 1 < m and t[k0 + 1] <= start:
        k0 += 1
    if k0 > 0:
        for j in range(k0, m):
            t[j - k0] = t[j]
            rate[j - k0] = rate[j]
            wrate[j - k0] = wrate[j]
        m -= k0
    tiny = peak * 1e-12
    remaining = nbytes
    cur = start
    k = -1
    for j in range(m):
        if t[j] <= cur:
            k = j
    end = start
    while True:
        used = rate[k] if k >= 0 else 0.0
        w = wrate[k] if k >= 0 else 0.0
        has_next = k + 1 < m
        seg_end = t[k + 1] if has_next else 0
        avail = _room(used, w, peak, is_write, kappa, batch)
        r = min(max_rate, avail) if avail > tiny else 0.0
        if r > 0.0:
            need = remaining / r
            if (not has_next) or cur + need <= seg_end:
                e = cur + need
                end = int(np.ceil(e - 1e-9))
                if end <= cur:
                    end = cur + 1
                break
            remaining -= r * (seg_end - cur)
        cur = seg_end
        k += 1
    # add the served rate on [start, end): make both breakpoints, then add min(max_rate, room) per segment
    m = _split(t, rate, wrate, m, start)
    m = _split(t, rate, wrate, m, end)
    for j in range(m):
        if t[j] >= end:
            break
        if t[j] >= start:
            avail = _room(rate[j], wrate[j], peak, is_write, kappa, batch)
            r = min(max_rate, avail) if avail > tiny else 0.0
            rate[j] += r
            if is_write:
                wrate[j] += r
    return end, m


@njit_cached()
def _split(t: np.ndarray, rate: np.ndarray, wrate: np.ndarray, m: int, x: int) -> int:
    k = 0
    while k < m and t[k] < x:
        k += 1
    if k < m and t[k] == x:
        return m
    for j in range(m, k, -1):
        t[j] = t[j - 1]
        rate[j] = rate[j - 1]
        wrate[j] = wrate[j - 1]
    t[k] = x
    rate[k] = rate[k - 1] if k > 0 else 0.0
    wrate[k] = wrate[k - 1] if k > 0 else 0.0
    return m + 1


class RateProfile:
    """Promised bandwidth (bytes/ps) of one chip's HBM as a step function, total and writes' part (arrays for
    the numba kernel :func:`allocate`)."""

    __slots__ = ("t", "rate", "wrate", "m")

    def __init__(self) -> None:
        self.t = np.zeros(64, dtype=np.int64)
        self.rate = np.zeros(64, dtype=np.float64)
        self.wrate = np.zeros(64, dtype=np.float64)
        self.m = 0

    def allocate(self, start: int, nbytes: int, peak: float, max_rate: float, is_write: bool = False,
                 kappa: float = 0.0, batch: float = 1.0) -> int:
        if nbytes <= 0:
            return start
        if self.m + 4 > len(self.t):
            grow = len(self.t)
            self.t = np.concatenate([self.t, np.zeros(grow, dtype=np.int64)])
            self.rate = np.concatenate([self.rate, np.zeros(grow)])
            self.wrate = np.concatenate([self.wrate, np.zeros(grow)])
        end, self.m = allocate(self.t, self.rate, self.wrate, self.m, start, float(nbytes), peak, max_rate,
                               is_write, kappa, batch)
        return int(end)


class SimpleMemory:
    """Per-chip shared peak bandwidth with greedy in-order allocation plus a fixed latency (module docstring).

    A transfer with efficiency ``eff`` (its instruction's value from :meth:`access`, 1 here) occupies
    ``round(nbytes / eff)`` bytes of the pool at up to ``max_gbps / eff``: subclasses that only change
    :meth:`access` or the pool's parameters (``kappa``, ``write_batch``: the ``dram`` model) are timed by the
    numba engine as well.
    """

    #: read/write mixing cost of the pool (module docstring): none in this model
    kappa: float = 0.0
    write_batch: int = 1

    def __init__(self, chip: ChipConfig):
        self.bandwidth_gbps = chip.hbm.bandwidth_gbps
        self.peak_bpps = chip.hbm.bandwidth_gbps * 1e-3  # bytes per ps
        self.latency_ps = int(round(chip.hbm.latency_ns * 1000))
        self.bytes_read: list[int] = []
        self.bytes_written: list[int] = []
        self.log: list[tuple[int, int, int, int, bool]] | None = None
        self._profiles: list[RateProfile] = []
        self._last_start = 0

    def stream_gbps(self, is_write: bool = False) -> float:
        """A long sequential stream alone on the chip's HBM gets the whole pool."""
        return self.bandwidth_gbps

    def pattern_efficiency(self, row_bytes: int, stride_bytes: int, is_write: bool = False, offset: int = 0) -> float:
        """Every access pattern moves at the pool's rate."""
        return 1.0

    def access(self, program: Program, costs: Costs) -> HbmAccess:
        """Every transfer at the pool's rate (efficiency 1)."""
        return HbmAccess.ones(len(program))

    def reset(self, num_chips: int, log: bool = False) -> None:
        self.bytes_read = [0] * num_chips
        self.bytes_written = [0] * num_chips
        self.log = [] if log else None
        self._profiles = [RateProfile() for _ in range(num_chips)]
        self._last_start = 0

    def transfer(self, chip: int, start_ps: int, nbytes: int, is_write: bool, addr: int,
                 max_gbps: float | None = None, eff: float = 1.0) -> int:
        if start_ps < self._last_start:
            raise AssertionError(f"memory requests out of time order ({start_ps} < {self._last_start})")
        self._last_start = start_ps
        charged = nbytes
        if eff != 1.0:
            charged = int(round(nbytes / eff))
            max_gbps = None if max_gbps is None else max_gbps / eff
        max_rate = self.peak_bpps if max_gbps is None else min(self.peak_bpps, max_gbps * 1e-3)
        data_end = self._profiles[chip].allocate(start_ps, charged, self.peak_bpps, max_rate, is_write, self.kappa,
                                                 float(self.write_batch))
        if is_write:
            self.bytes_written[chip] += nbytes
        else:
            self.bytes_read[chip] += nbytes
        if self.log is not None:
            self.log.append((chip, start_ps, data_end, nbytes, is_write))
        return data_end + self.latency_ps
