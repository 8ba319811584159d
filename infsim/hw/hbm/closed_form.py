"""Closed-form efficiencies of one HBM channel under the controller of :mod:`.ref` (open page).

The command-level model is held against these in ``tests/hw/test_hbm_closed_form.py``, and
``benchmarks/hbm_efficiency.py`` prints them beside the simulated figures. Efficiency is the share of
the channel's pin bandwidth (data-bus busy time); ``tBL`` is ``burst_cycles``, ``P`` is
``refresh_postpone_max``. Every formula reads the preset only; nothing here is fitted.

Streaming (one direction). Column commands go out every tBL (mapping chosen so that consecutive bursts
alternate bank groups when tCCD_L > tBL, and row switches are hidden: the next row is activated while
the queue still holds hits to the current one, which needs more than ``(tRP + tRCD) / tBL`` queued
requests; hence ``hbm3e-9.6``'s 64-entry queues: 32 x 2 tCK < 39 + 47). Every ``P x tREFI`` cycles the
controller stops, and between the last RD and the next one the channel spends ``tRTP`` (RD -> PREA) +
``tRP`` (PREA -> REF) + ``P x tRFC`` (the REFs back to back) + ``tRCDRD`` (ACT -> RD), so it loses
``L_rd = P tRFC + tRTP + tRP + tRCDRD - tBL`` cycles of data-bus time per period and

    efficiency = 1 - L_rd / (P tREFI)  =  (1 - tRFC / tREFI) - (tRTP + tRP + tRCDRD - tBL) / (P tREFI).

For writes ``L_wr = P tRFC + (tCWL + tBL + tWR) + tRP + tRCDWR - tBL``. (Bank-group ramp-up after
refresh costs a few tCK more.)

Random single-burst reads: every access needs its own ACT and ACTs are spaced by at least
``t_act = max(tRRD_S, tFAW / 4, tRC / banks)``, so ``efficiency <= tBL / t_act``.

Bank stride (one bank, a new row every access): ``t_bank = max(tRC, tRAS + tRP, tRCDRD + tRTP + tRP)``
per access, ``efficiency ~ tBL / t_bank`` before refresh.

Read/write mix under write-drain batching (the ``mixed`` pattern: a 50/50 copy, read burst ``k`` then
write burst ``k``). The controller serves reads until the write queue holds ``hi`` writes
(``write_high_watermark``), then drains it down to ``lo``: batches of ``W = hi - lo`` writes alternate
with ``R = W`` reads. Inside a batch column commands go out every tBL; each direction switch costs a bus
turnaround instead of one burst slot:

- read -> write: the first WR issues ``tRTW`` after the last RD (``tRTW - tBL`` lost);
- write -> read: the first RD issues ``tCWL + tBL + tWTR`` after the last WR (``tCWL + tWTR`` lost).
  ``tWTR_S`` is used: the first read goes to another bank group than the last write, or, with bank
  groups interleaved, FR-FCFS issues a ready read of another group first (``tWTR_L`` would cost
  ``tWTR_L - tWTR_S`` more per switch, about 2% on the presets).

So ``efficiency = rho x (R + W) tBL / ((R + W - 2) tBL + tRTW + tCWL + tBL + tWTR_S)`` with ``rho`` the
streaming-read refresh factor above.

Row-buffer effect of the mapping. The copy's destination starts at half the capacity, which under every
preset's mapping (row field on top) flips only the top row bit: write ``k`` goes to the same bank and
column as read ``k``, in another row. Requests are admitted in arrival order and the arrival FIFO's head
blocks when its queue is full, so while a read batch runs the read queue stays full and the writes lead
the reads by ``read_queue - (writes queued)`` bursts, i.e. by ``read_queue - hi`` .. ``read_queue - lo``.
A sequential stream stays in one (bank, row) set for ``S`` bursts (:func:`stream_bank_span_bursts`: 32
for ``rorabgbachco``, 128 for ``RoBaCoBgCh`` with 32 columns and 4 bank groups). If
``read_queue - hi >= S`` (:func:`copy_fronts_separated`) the two fronts always work in different banks,
each bank's switch between the read row and the write row is prepared while the other direction uses
the bus, and the formula above holds. Otherwise the direction that takes over finds its bank open with
the other direction's row: read -> write costs ``max(tRTW, tRTP + tRP + tRCDWR)`` and write -> read
``max(tCWL + tBL + tWTR_S, tCWL + tBL + tWR + tRP + tRCDRD)``; with that at every switch the formula is a
lower bound (some switches find the fronts in different banks).

Independent read and write streams in any mix (what concurrent DMA transfers of the engine are: their
sources and destinations are unrelated tensors). With a share ``f`` of the bursts being writes, a write
batch of ``W`` follows every ``W`` writes as long as reads are queued to alternate with, and a direction
change needs at least one read, so a pair of switches happens every ``1 / min(f / W, 1 - f)`` bursts:

    efficiency(f) = rho / (1 + kappa x min(f / W, 1 - f)),   kappa = (E[rd -> wr] + E[wr -> rd] - 2 tBL) / tBL

(:func:`mixed_stream_efficiency`, :func:`mix_overhead`; at ``f = 1/2`` this is the batch formula above).
The two fronts work in unrelated rows; the switch costs are those of fronts in different banks: the
direction that takes over has its banks prepared by row commands issued while the other direction
still uses the data bus (FR-FCFS issues a ready row command of either queue between column commands),
as in the separated-fronts case of the copy. Held against the command-level controller (one channel,
mean over random placements of the two streams, ``tests/hw/test_hbm_closed_form.py``): within 10% for
every preset at ``f`` = 0.1, 0.25, 0.5 and 0.75.

Left out: refresh landing inside a drain (it may hide one turnaround; under 0.1%), the first batches
before the queues reach their steady occupancy.
"""

from __future__ import annotations

from .config import HbmPresetConfig
from .mapping import AddressMap


def refresh_lost_cycles(cfg: HbmPresetConfig, write: bool = False) -> int:
    """Data-bus cycles a streaming channel loses per refresh period ``P x tREFI`` (``L_rd`` or ``L_wr``)."""
    t, tbl, p = cfg.timing, cfg.organization.burst_cycles, cfg.controller.refresh_postpone_max
    if write:
        return p * t.tRFC + (t.tCWL + tbl + t.tWR) + t.tRP + t.tRCDWR - tbl
    return p * t.tRFC + t.tRTP + t.tRP + t.tRCDRD - tbl


def streaming_efficiency(cfg: HbmPresetConfig, write: bool = False) -> float:
    """Steady-state streaming efficiency of one channel: ``1 - L / (P x tREFI)``."""
    period = cfg.controller.refresh_postpone_max * cfg.timing.tREFI
    return 1.0 - refresh_lost_cycles(cfg, write) / period


def refresh_only_ceiling(cfg: HbmPresetConfig) -> float:
    """``1 - tRFC / tREFI``: the share of time left by all-bank refresh alone."""
    return 1.0 - cfg.timing.tRFC / cfg.timing.tREFI


def random_act_ceiling(cfg: HbmPresetConfig) -> float:
    """Upper bound for random single-burst reads: ``tBL / max(tRRD_S, tFAW / 4, tRC / banks)``."""
    t, o = cfg.timing, cfg.organization
    t_act = max(t.tRRD_S, t.tFAW / 4, t.tRC / o.banks)
    return min(1.0, o.burst_cycles / t_act)


def bank_stride_cycles(cfg: HbmPresetConfig) -> int:
    """Cycles per access when every access opens a new row in the same bank."""
    t = cfg.timing
    return max(t.tRC, t.tRAS + t.tRP, t.tRCDRD + t.tRTP + t.tRP)


def bank_stride_efficiency(cfg: HbmPresetConfig) -> float:
    """``tBL / t_bank`` (before refresh)."""
    return cfg.organization.burst_cycles / bank_stride_cycles(cfg)


def stream_bank_span_bursts(cfg: HbmPresetConfig) -> int:
    """Consecutive bursts of one channel's sequential stream that stay in the same (bank, row) set: the
    product of the sizes of the mapping fields below the lowest bank or row field, channel excluded."""
    amap = AddressMap.from_preset(cfg)
    span = 1
    for f in reversed(amap.fields):  # LSB first
        if f in ("ba", "ro"):
            break
        if f != "ch":
            span *= amap.sizes[f]
    return span


def copy_fronts_separated(cfg: HbmPresetConfig) -> bool:
    """Whether the write front of the ``mixed`` copy always leads the read front by at least one
    (bank, row) set: ``read_queue - write_high_watermark >= stream_bank_span_bursts``."""
    c = cfg.controller
    return c.read_queue - c.write_high_watermark >= stream_bank_span_bursts(cfg)


def mixed_batch(cfg: HbmPresetConfig) -> tuple[int, int]:
    """``(R, W)``: reads and writes per direction batch of the 50/50 copy under the write watermarks."""
    w = cfg.controller.write_high_watermark - cfg.controller.write_low_watermark
    return w, w


def switch_cycles(cfg: HbmPresetConfig, row_conflict: bool) -> tuple[int, int]:
    """``(read -> write, write -> read)``: cycles from the last column command of one direction to the first
    of the other (module docstring), with the other direction's row open in the bank (``row_conflict``)
    or not."""
    t, tbl = cfg.timing, cfg.organization.burst_cycles
    rd_to_wr = t.tRTW
    wr_to_rd = t.tCWL + tbl + t.tWTR_S
    if row_conflict:
        rd_to_wr = max(rd_to_wr, t.tRTP + t.tRP + t.tRCDWR)
        wr_to_rd = max(wr_to_rd, t.tCWL + tbl + t.tWR + t.tRP + t.tRCDRD)
    return rd_to_wr, wr_to_rd


def mixed_efficiency(cfg: HbmPresetConfig, row_conflicts: bool | None = None) -> float:
    """Efficiency of the 50/50 ``mixed`` copy on one channel (module docstring). ``row_conflicts``:
    every direction switch pays a row conflict (a lower bound); default: when the fronts are not
    separated (:func:`copy_fronts_separated`)."""
    tbl = cfg.organization.burst_cycles
    r, w = mixed_batch(cfg)  # >= 1 each: the preset schema requires low < high watermark
    if row_conflicts is None:
        row_conflicts = not copy_fronts_separated(cfg)
    rd_to_wr, wr_to_rd = switch_cycles(cfg, row_conflicts)
    period = (r + w - 2) * tbl + rd_to_wr + wr_to_rd
    return streaming_efficiency(cfg) * (r + w) * tbl / period


def mix_overhead(cfg: HbmPresetConfig) -> tuple[float, int]:
    """``(kappa, W)`` of independent read and write streams: the expected bus time of a pair of direction
    switches beyond two bursts, in bursts, and the write batch (module docstring)."""
    tbl = cfg.organization.burst_cycles
    return (sum(switch_cycles(cfg, False)) - 2 * tbl) / tbl, mixed_batch(cfg)[1]


def mixed_stream_efficiency(cfg: HbmPresetConfig, write_fraction: float) -> float:
    """Efficiency of independent read and write streams with a share ``write_fraction`` of write bursts:
    ``rho / (1 + kappa x min(f / W, 1 - f))`` (module docstring)."""
    if not 0.0 <= write_fraction <= 1.0:
        raise ValueError(f"write_fraction must be in [0, 1], got {write_fraction}")
    kappa, w = mix_overhead(cfg)
    f = write_fraction
    rho = streaming_efficiency(cfg, write=f > 0.5)
    return rho / (1.0 + kappa * min(f / w, 1.0 - f))
