"""Public HBM model: ``HbmModel(preset, stacks).simulate(...)`` and ``stream_time_ns(...)``.

The model splits requests by channel (address mapping), runs one controller per channel (numba, see
:mod:`.fast`; the protocol is defined in :mod:`.ref`) and gathers per-request completion times and
statistics (:class:`~infsim.hw.hbm.stats.HbmStats`). It does not depend on the simpy engine.

Closed forms: :mod:`.closed_form` derives streaming, random, bank-stride and read/write-mix
efficiency from the preset; ``tests/hw/test_hbm_closed_form.py`` holds the simulation to them. Every preset
reaches >= 90% on streaming reads with these policies and mappings (``rorabgbachco`` for
``hbm2-dramsim3``, ``RoBaCoBgCh`` elsewhere).

Bulk transfers (:meth:`HbmModel.stream_time_ns`): all channels see the same request shape, so one
channel is simulated for about 3.5 refresh periods (``P x tREFI``) and the rest is extrapolated by
repeating the last two whole periods ("identical repeated chunks"): with completion cycles ``T`` of the
simulated prefix, ``j1`` the first request completing after one period and ``L`` the requests completed
in the next two periods, ``T(n) = T[j1 + (n - 1 - j1) mod L] + floor((n - 1 - j1) / L) x (T[j1 + L] - T[j1])``.
The result is memoized per (pattern, direction); a 13.5 GB read costs one lookup. By default
(``refresh='amortized'``) the time is first-data latency + (n - 1) x (T[j1 + L] - T[j1]) / L, the mean over
the refresh phase at which a transfer starts; ``refresh='cold'`` is the exact start-at-cycle-0 timeline.

Strided transfers (:meth:`HbmModel.pattern_efficiency`): rows of ``row_bytes`` contiguous bytes
``stride_bytes`` apart (:func:`~.patterns.strided`), as many rows as give the busiest channel 64 bursts
(the pattern's steady state: a short transfer alone would measure the first activations of its banks,
which other traffic hides), are simulated command by command, all arriving at once, with refresh
switched off (``tREFI`` beyond the probe). A channel ``c``
serving the probe is busy from its first to its last completion plus one burst, ``T_c``; the pattern's
efficiency is its bytes over ``sum_c T_c`` of pin time, relative to the same figure for a sequential
stream of 64 bursts per channel, times the streaming efficiency with refresh (above). So it counts what the
pattern costs the channels it uses -- whole bursts for partial ones, row misses, bank conflicts inside
the transfer -- and not how evenly it spreads over the channels (a transfer confined to a few channels
is as efficient as one spread over all; see :mod:`infsim.engine.memory.dram` for why). Memoized per
(row bytes, stride, offset in the first burst, direction).

Comparison with DRAMsim3 (``hbm2-dramsim3``; DRAMsim3 is not a dependency, the figures come from a build
of its source at commit 2981759, one channel, 150k cycles): DRAMsim3 has a 32-entry read transaction
queue, a 32-entry write buffer drained when full, and per-bank command queues of 8; we have one FR-FCFS
queue per direction (64 reads, about what DRAMsim3 holds in flight on a sequential stream; 32 writes);
both use OPEN_PAGE and the same address mapping. Mean read latency from admission on one channel:
sequential reads 151 ns here, 145 ns in DRAMsim3; random reads 528 ns here, 758 ns in DRAMsim3 (it
queues more reads when they spread over banks). Streaming in both is limited by refresh (DRAMsim3's
refresh.cc issues one all-bank REF per rank every tREFI, without postponement, which by the same
derivation costs ~7.5% rather than our ~6.8%; DRAMsim3 measured 92.0% on sequential reads); random reads
in both are capped near 27% of peak by tFAW = 30 (2 / 7.5 tCK; DRAMsim3 measured 24.6%, we 24.9%);
bank-stride in both is tRC-bound at 2/48 = 4.2%. On the ``mixed`` copy (one channel) DRAMsim3 reaches
72.3% (its drains empty the whole 32-entry buffer: batches of 32 writes); ours reaches 68.5% with
batches of 16 (watermarks 24/8), whose closed form is 69.4%.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infsim.config.bounds import bounds_for
from infsim.errors import InfsimError

from .config import HbmPresetConfig, HbmTiming, load_hbm_preset
from .fast import simulate_channel_fast
from .mapping import AddressMap, digit_sum
from .patterns import generate, strided
from .protocol import param_vector, refresh_offset
from .stats import HbmStats, build_stats

#: channels (all stacks together) the model simulates at most: the bulk-transfer window generates about
#: 90k requests per channel (~1 GB of memory at 256 channels)
MAX_CHANNELS = 256


@dataclass
class HbmResult:
    """Per-request completion (and admission) times in ns, statistics, and the command log if asked."""

    complete_ns: np.ndarray
    admit_ns: np.ndarray
    stats: HbmStats
    log: np.ndarray | None = None  # rows: cycle, cmd, channel, bankgroup, bank, row, col


class HbmModel:
    """DRAM-command-level model of ``stacks`` HBM stacks of one preset."""

    def __init__(self, preset: str | Path | HbmPresetConfig, stacks: int = 1, overrides: dict | None = None):
        if stacks < 1:
            raise InfsimError(f"stacks must be >= 1, got {stacks}")
        self.cfg = load_hbm_preset(preset, overrides)
        self.stacks = stacks
        self.amap = AddressMap.from_preset(self.cfg, stacks)
        self.params = param_vector(self.cfg)
        self.n_channels = self.cfg.organization.channels * stacks
        if self.n_channels > MAX_CHANNELS:
            raise InfsimError(f"HBM: {stacks} stack(s) x {self.cfg.organization.channels} channels = "
                              f"{self.n_channels} channels, more than the {MAX_CHANNELS} the DRAM-level model "
                              "simulates (its bulk-transfer window grows with the channel count)")
        self._memo: dict[tuple[str, bool], tuple[np.ndarray, int, int, int]] = {}
        self._pattern_memo: dict[tuple[int, int, int, bool], float] = {}
        self._no_refresh: HbmModel | None = None
        self.window_periods = 3.5  # refresh periods (P x tREFI) simulated for the bulk-transfer shortcut
        self.probe_bursts_per_channel = 64  # bursts per channel of a strided-transfer probe

    @property
    def peak_gbps(self) -> float:
        return self.cfg.organization.stack_peak_gbps * self.stacks

    @property
    def access_bytes(self) -> int:
        return self.cfg.organization.access_bytes

    def simulate(self, arrival_ns: np.ndarray, addr: np.ndarray, is_write: np.ndarray, want_log: bool = False,
                 engine: str = "fast") -> HbmResult:
        """Run every request (one burst at ``addr``, arriving at ``arrival_ns``) through the controllers.

        ``engine='ref'`` uses the plain-Python reference (small traces only)."""
        arrival_ns = np.asarray(arrival_ns, dtype=np.float64)
        addr = np.asarray(addr, dtype=np.int64)
        is_write = np.asarray(is_write, dtype=np.bool_)
        n = len(addr)
        if not (len(arrival_ns) == n == len(is_write)):
            raise InfsimError("arrival_ns, addr and is_write must have the same length")
        if n and (arrival_ns.min() < 0 or addr.min() < 0):
            raise InfsimError("arrival times and addresses must be >= 0")
        tck = self.cfg.organization.tck_ns
        arrive = np.ceil(arrival_ns / tck - 1e-9).astype(np.int64)
        f = self.amap.decode(addr)
        admit = np.zeros(n, dtype=np.int64)
        complete = np.zeros(n, dtype=np.int64)
        counts = np.zeros((self.n_channels, 6), dtype=np.int64)
        open_cycles = np.zeros(self.n_channels, dtype=np.int64)
        logs = []
        order = np.lexsort((np.arange(n), arrive, f["ch"]))
        bounds = np.searchsorted(f["ch"][order], np.arange(self.n_channels + 1))
        t0 = time.perf_counter()
        for ch in range(self.n_channels):
            idx = order[bounds[ch]:bounds[ch + 1]]
            if len(idx) == 0:
                continue
            off = refresh_offset(ch, self.n_channels, self.cfg.timing.tREFI)
            args = (self.params, arrive[idx], f["bg"][idx], f["ba"][idx], f["ro"][idx], f["co"][idx], is_write[idx])
            if engine == "ref":
                from .ref import simulate_channel

                r = simulate_channel(*args, ref_offset=off)
                a, c, lg, oc = r.admit, r.complete, r.log, r.open_cycles
                cnt = np.bincount(lg[:, 1], minlength=6) if len(lg) else np.zeros(6, dtype=np.int64)
            elif engine == "fast":
                a, c, lg, oc, cnt = simulate_channel_fast(*args, off, want_log)
            else:
                raise InfsimError(f"unknown engine '{engine}' (fast or ref)")
            admit[idx], complete[idx], counts[ch], open_cycles[ch] = a, c, cnt, oc
            if want_log and len(lg):
                logs.append(np.insert(lg, 2, ch, axis=1))
        wall = time.perf_counter() - t0
        stats = build_stats(self.cfg, self.stacks, arrive, admit, complete, f["ch"], counts, open_cycles, wall)
        log = None
        if want_log:
            log = np.concatenate(logs) if logs else np.zeros((0, 7), dtype=np.int64)
            log = log[np.lexsort((log[:, 2], log[:, 0]))]
        return HbmResult(complete_ns=complete * tck, admit_ns=admit * tck, stats=stats, log=log)

    def run_pattern(self, pattern: str, nbytes: int, is_write: bool = False, seed: int = 0,
                    want_log: bool = False) -> HbmResult:
        """Simulate ``nbytes`` of a named pattern (see :mod:`.patterns`) command by command."""
        n = max(1, math.ceil(nbytes / self.access_bytes))
        arr, addr, wr = generate(self.amap, pattern, n, is_write, seed)
        return self.simulate(arr, addr, wr, want_log=want_log)

    # ---- bulk transfers -------------------------------------------------------------------------
    def _period_cycles(self) -> int:
        return self.cfg.controller.refresh_postpone_max * self.cfg.timing.tREFI

    def _window(self, pattern: str, is_write: bool) -> tuple[np.ndarray, int, int, int]:
        """Memoized single-channel simulation: (completion cycles, j1, L, delta)."""
        key = (pattern, is_write)
        if key in self._memo:
            return self._memo[key]
        period = self._period_cycles()
        tbl = self.cfg.organization.burst_cycles
        m = int(self.window_periods * period / tbl) + 64  # requests per channel (~window_periods at peak)
        if pattern == "stream" and self.amap.fields[-1] == "ch":
            # channel 0's share of the sequential stream, without generating the other channels' requests:
            # one burst of every n_channels, the one whose (hashed) channel is 0
            k = np.arange(m, dtype=np.int64)
            nch = self.n_channels
            lane = (-digit_sum(k, nch)) % nch if self.amap.hashed else 0
            addr = (k * nch + lane) * self.access_bytes
            wr = np.full(m, bool(is_write))
        else:
            _, addr, wr = generate(self.amap, pattern, m * self.n_channels, is_write)
        f = self.amap.decode(addr)
        sel = np.nonzero(f["ch"] == 0)[0]
        cyc = np.zeros(len(sel), dtype=np.int64)
        _, comp, _, _, _ = simulate_channel_fast(self.params, cyc, f["bg"][sel], f["ba"][sel], f["ro"][sel],
                                                 f["co"][sel], wr[sel], 0, False)
        comp = np.maximum.accumulate(comp)
        j1 = int(np.searchsorted(comp, period, side="right"))
        j2 = int(np.searchsorted(comp, 3 * period, side="right"))
        if j2 >= len(comp) or j2 <= j1:  # slower patterns: fall back to whatever whole periods were covered
            j1 = int(np.searchsorted(comp, 0.5 * period, side="right"))
            j2 = len(comp) - 1
        res = (comp, j1, j2 - j1, int(comp[j2] - comp[j1]))
        self._memo[key] = res
        return res

    def stream_time_ns(self, nbytes: int, is_write: bool = False, pattern: str = "stream",
                       refresh: str = "amortized") -> float:
        """Time to move ``nbytes`` with ``pattern`` over all channels (steady-state extrapolation, memoized).

        ``refresh='cold'``: the transfer starts on a fresh model at cycle 0 (exact single-channel
        simulation within the window, periodic extrapolation beyond), so transfers shorter than one
        postponement period pay no refresh. ``refresh='amortized'`` (default, for the engine): first-data
        latency plus the steady-state time per request including refresh, i.e. the mean over the refresh
        phase at which a transfer starts."""
        if nbytes <= 0:
            return 0.0
        if refresh not in ("amortized", "cold"):
            raise InfsimError(f"refresh must be 'amortized' or 'cold', got '{refresh}'")
        n = math.ceil(math.ceil(nbytes / self.access_bytes) / self.n_channels)
        comp, j1, length, delta = self._window(pattern, is_write)
        if refresh == "amortized":
            cyc = float(comp[0]) + (n - 1) * delta / length
        elif n <= len(comp):
            cyc = float(comp[n - 1])
        else:
            k = n - 1 - j1
            cyc = float(comp[j1 + k % length]) + float(k // length) * delta  # float: no int64 overflow
        return cyc * self.cfg.organization.tck_ns

    def stream_gbps(self, nbytes: int, is_write: bool = False, pattern: str = "stream",
                    refresh: str = "amortized") -> float:
        """Achieved GB/s of a bulk transfer (from :meth:`stream_time_ns`)."""
        return nbytes / self.stream_time_ns(nbytes, is_write, pattern, refresh)

    # ---- strided transfers ------------------------------------------------------------------------
    def _busy_time(self, addr: np.ndarray, is_write: bool) -> float:
        """Sum over channels of first-to-last completion plus one burst (cycles), refresh switched off."""
        never = int(bounds_for(HbmTiming, "tREFI", 1)[1])  # the largest tREFI the config accepts
        if self._no_refresh is None:
            self._no_refresh = HbmModel(self.cfg, self.stacks, overrides={"timing.tREFI": never})
        res = self._no_refresh.simulate(np.zeros(len(addr)), addr, np.full(len(addr), is_write))
        ch = self.amap.decode(addr)["ch"]
        comp = res.complete_ns / self.cfg.organization.tck_ns
        if len(comp) and comp.max() >= never:  # the first REF falls due at tREFI or later: none did
            raise InfsimError(f"pattern probe of {len(addr)} bursts ran past tREFI = {never} cycles; "
                              "refresh would have fallen inside it")
        first = np.full(self.n_channels, np.inf)
        last = np.full(self.n_channels, -np.inf)
        np.minimum.at(first, ch, comp)
        np.maximum.at(last, ch, comp)
        used = np.isfinite(first)
        return float((last[used] - first[used]).sum() + used.sum() * self.cfg.organization.burst_cycles)

    def pattern_efficiency(self, row_bytes: int, stride_bytes: int, is_write: bool = False, offset: int = 0) -> float:
        """Steady-state share of pin bandwidth a strided pattern gets from the channels it uses (module
        docstring); a contiguous one (``stride_bytes == row_bytes``) streams."""
        if row_bytes <= 0 or stride_bytes < 0:
            raise InfsimError(f"row_bytes must be > 0 and stride_bytes >= 0, got {row_bytes}, {stride_bytes}")
        ab = self.access_bytes
        stream = self.stream_gbps(1 << 30, is_write) / self.peak_gbps
        if stride_bytes == row_bytes:
            return stream
        off = offset % ab
        key = (row_bytes, stride_bytes, off, is_write)
        hit = self._pattern_memo.get(key)
        if hit is not None:
            return hit
        n = self.probe_bursts_per_channel * self.n_channels
        ref_key = (0, 0, 0, is_write)  # the steady sequential stream the probes are measured against
        if ref_key not in self._pattern_memo:
            self._pattern_memo[ref_key] = self._busy_time(strided(ab, n * ab, n * ab, 1), is_write) / (n * ab)
        per_row = (off + row_bytes - 1) // ab + 1
        rows = math.ceil(n / per_row)
        addr = strided(ab, row_bytes, stride_bytes, rows, off)
        # stop at the row where the busiest channel has its share of the probe
        ch = self.amap.decode(addr)["ch"]
        onehot = np.zeros((len(ch), self.n_channels), dtype=np.int32)
        onehot[np.arange(len(ch)), ch] = 1
        busiest = np.maximum.accumulate(np.cumsum(onehot, axis=0).max(axis=1))
        cut = int(np.searchsorted(busiest, self.probe_bursts_per_channel))
        rows = min(rows, cut // per_row + 1)
        addr = addr[: rows * per_row]
        cost = self._busy_time(addr, is_write) / (rows * row_bytes)
        eff = min(1.0, self._pattern_memo[ref_key] / cost) * stream
        self._pattern_memo[key] = eff
        return eff
