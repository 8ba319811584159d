"""The DRAM-command-level HBM model behind the engine's memory interface (registered as ``dram``, the default
``hbm.memory_model``; the interface is in :mod:`infsim.engine.memory`).

:class:`DramMemory` is :class:`~infsim.engine.memory.simple.SimpleMemory`'s shared per-chip pool of the
chip's pin bandwidth ``hbm.bandwidth_gbps`` (plus the fixed ``hbm.latency_ns``: controller + NoC + DRAM
access), with two things taken from the DRAM-command-level model of the chip's HBM preset
(``hbm.dram_preset``, e.g. ``hbm2e-3.2`` for inf2, simulated command by command by
:class:`infsim.hw.hbm.model.HbmModel`):

* **Access pattern, per transfer.** Each DMA instruction's HBM side is a pattern of rows
  (:mod:`.access`: contiguous bytes per row, row stride, offset in the first burst, direction). Its
  efficiency is what the command-level model measures for that pattern in steady state
  (:meth:`HbmModel.pattern_efficiency <infsim.hw.hbm.model.HbmModel.pattern_efficiency>`): refresh, row
  switches, whole bursts for partial rows, bank-group and bank conflicts inside the pattern. A contiguous
  transfer gets the streaming efficiency of its direction (refresh and row switches of a bulk stream), as
  before this model knew patterns. A transfer of ``n`` bytes then occupies ``n / eff`` bytes of the
  pool (:class:`~.access.HbmAccess`, computed once per run over all DMA instructions, memoised per
  distinct pattern).
* **Read/write mix, between transfers.** Where the rate profile holds reads and writes at once, the
  pool's occupied bandwidth includes the bus time of their direction switches under write-drain
  batching, ``kappa x min(w / W, r)`` (:func:`infsim.hw.hbm.closed_form.mix_overhead`): a write arriving
  among reads pays ``kappa / W`` per byte more, a read among writes pays once the reads are too few to
  batch the writes.

Channels as shared resources. The pool is the sum of the chip's channels, and a transfer is charged
for the channel time it uses wherever it lands. That is exact when traffic spreads evenly over the
channels, which is what the Neuron HBM controllers are built to do: they select channel and bank by a
CRC hash of the address, "spreading traffic more uniformly across all channels compared to simple
modular (bit-slice) interleaving, which can create hot-spots when access strides align with the channel
count" (AWS Neuron, "Guideline to Avoid Under-Utilizing DMA Bandwidth", NKI deep dives; [NKI-DMA] in
the presets). Those presets set ``hbm.address_hash: fold`` and the probes run with that hashed mapping
(:mod:`infsim.hw.hbm.mapping`), so a strided pattern spreads over the channels as it would there. With
``address_hash: none`` (the DRAM preset's modular mapping) a probe still measures a pattern's cost on the
channels it uses, but not the hot-spot modular interleaving would give a pattern whose stride aligns
with the channel count (the pool has no per-channel view).

Left out, with what the command-level model says about them (``benchmarks/hbm_patterns.py``):

* bank interference *between* concurrent streams. The command-level controller (one 32- or 64-entry
  FR-FCFS queue per direction and channel, modular mapping) serves 8-16 interleaved sequential streams at
  20-60% of pin bandwidth, because their rows collide in the banks. The same source states that large
  contiguous DMA payloads (>= 4 KiB) from the 16 DMA engines of a core saturate HBM bandwidth, so that
  collapse is an artefact of the assumed queue depth and mapping, and the pool does not reproduce it;
* the order in which a DMA engine's descriptors reach the controller, and arrival pacing within a
  transfer (the pool spreads a transfer at its engine's rate).

Chips without a ``dram_preset`` behave as ``simple`` (efficiency 1, no mixing cost). The streaming
efficiencies and pattern probes are memoised in the process and on disk (:mod:`.probe_cache`), keyed by
the preset's full content.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.hw.hbm import closed_form as cf
from infsim.hw.hbm.config import load_hbm_preset
from infsim.isa.program import Program

from . import probe_cache
from .access import HbmAccess, hbm_rows, per_instruction
from .simple import SimpleMemory

if TYPE_CHECKING:
    from infsim.engine.costs import Costs
    from infsim.hw.hbm.model import HbmModel

_BULK = 1 << 30  # bytes of the steady-state streaming probe


class _Probe:
    """The command-level model of one (preset, stacks), its probes memoised in memory and on disk. The model
    itself is built on the first probe the disk cache does not hold (a run whose probes are all cached needs
    only the preset)."""

    def __init__(self, preset: str, stacks: int, address_hash: str):
        self._args = (preset, stacks, {"controller.address_hash": address_hash})
        self.cfg = load_hbm_preset(preset, self._args[2])  # the model's (HbmModel loads it the same way)
        self._model: HbmModel | None = None
        self.cache = probe_cache.ProbeCache(self.cfg.model_dump_json(), stacks)
        self.burst_bytes = self.cfg.organization.access_bytes
        self.kappa, self.write_batch = cf.mix_overhead(self.cfg)

    @property
    def model(self) -> HbmModel:
        if self._model is None:
            from infsim.hw.hbm.model import HbmModel

            preset, stacks, overrides = self._args
            self._model = HbmModel(preset, stacks=stacks, overrides=overrides)
        return self._model

    @functools.lru_cache(maxsize=4096)  # noqa: B019 -- one instance per (preset, stacks), kept for the process
    def efficiency(self, row_bytes: int, stride_bytes: int, is_write: bool, offset: int) -> float:
        if stride_bytes == row_bytes:
            key = f"stream:{int(is_write)}"
        else:
            key = f"pattern:{row_bytes}:{stride_bytes}:{offset % self.burst_bytes}:{int(is_write)}"
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if stride_bytes == row_bytes:
            eff = self.model.stream_gbps(_BULK, is_write) / self.model.peak_gbps
        else:
            eff = self.model.pattern_efficiency(row_bytes, stride_bytes, is_write, offset)
        self.cache.put(key, eff)
        return eff


@functools.lru_cache(maxsize=64)
def _probe(preset: str, stacks: int, address_hash: str) -> _Probe:
    return _Probe(preset, stacks, address_hash)


def _chip_probe(chip: ChipConfig) -> _Probe | None:
    if not chip.hbm.dram_preset:
        return None
    return _probe(chip.hbm.dram_preset, chip.hbm.stacks, chip.hbm.address_hash)


def dram_efficiency(chip: ChipConfig) -> tuple[float, float]:
    """(read, write) streaming efficiency of the chip's HBM preset (1.0, 1.0 without a preset)."""
    p = _chip_probe(chip)
    if p is None:
        return 1.0, 1.0
    return p.efficiency(1, 1, False, 0), p.efficiency(1, 1, True, 0)


class DramMemory(SimpleMemory):
    """SimpleMemory's pool charged per transfer at its access pattern's DRAM-level efficiency, with the
    read/write mixing cost of write-drain batching (module docstring)."""

    def __init__(self, chip: ChipConfig):
        super().__init__(chip)
        self._probe = _chip_probe(chip)
        if self._probe is not None:
            self.kappa, self.write_batch = self._probe.kappa, self._probe.write_batch
        self.eff_read, self.eff_write = dram_efficiency(chip)

    def stream_gbps(self, is_write: bool = False) -> float:
        """The chip's HBM bandwidth for one long sequential stream after DRAM-level losses."""
        return self.bandwidth_gbps * (self.eff_write if is_write else self.eff_read)

    def pattern_efficiency(self, row_bytes: int, stride_bytes: int, is_write: bool = False, offset: int = 0) -> float:
        """Share of pin bandwidth a transfer of rows of ``row_bytes``, ``stride_bytes`` apart, gets (module
        docstring); contiguous transfers (``stride_bytes == row_bytes``) stream."""
        if self._probe is None:
            return 1.0
        return self._probe.efficiency(int(row_bytes), int(stride_bytes), bool(is_write), int(offset))

    def access(self, program: Program, costs: Costs) -> HbmAccess:
        """Per DMA instruction, the efficiency of its HBM read and write side (module docstring)."""
        if self._probe is None:
            return HbmAccess.ones(len(program))
        d = costs.dma_rows  # the transfers; every other instruction moves nothing (efficiency 1)
        acc = per_instruction(hbm_rows(program, d, costs.ap_info), costs.hbm_read_addr.values,
                              costs.hbm_write_addr.values, self._probe.burst_bytes, self.pattern_efficiency)
        read, write = np.ones(len(program)), np.ones(len(program))
        read[d], write[d] = acc.read_eff, acc.write_eff
        return HbmAccess(read, write)
