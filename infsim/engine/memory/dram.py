"""The DRAM-command-level HBM model behind the engine's memory interface (registered as ``dram``, the default
``hbm.memory_model``; the interface is in :mod:`infsim.engine.memory`).

:class:`DramMemory` is :class:`~infsim.engine.memory.simple.SimpleMemory`'s shared per-chip pool, but every
transfer is charged at the DRAM-level model's *measured* steady-state efficiency for its direction: the
chip's HBM preset (``hbm.dram_preset``, e.g. ``hbm2e-3.2`` for inf2) is simulated command by command by
:class:`infsim.hw.hbm.model.HbmModel` for bulk streaming reads and writes (refresh, row switches and
bus turnarounds included, steady state extrapolated and memoized per preset), and a transfer of ``n``
bytes then occupies ``n / efficiency`` bytes of the chip's pin bandwidth ``hbm.bandwidth_gbps``. The
fixed ``hbm.latency_ns`` (controller + NoC + DRAM access) is added as before.

Left out here (the DRAM model itself has them, the engine does not feed it individual bursts): row-buffer
locality of small or scattered transfers and read/write interleaving between concurrent transfers; every
DMA transfer is treated as a sequential stream. Chips without a ``dram_preset`` fall back to efficiency 1.
"""

from __future__ import annotations

import functools

from infsim.config.schema import ChipConfig
from infsim.hw.hbm.model import HbmModel

from .simple import SimpleMemory

_BULK = 1 << 30  # bytes of the steady-state probe transfer


@functools.lru_cache(maxsize=64)
def _efficiency(preset: str, stacks: int) -> tuple[float, float]:
    m = HbmModel(preset, stacks=stacks)
    peak = m.peak_gbps
    return m.stream_gbps(_BULK, False) / peak, m.stream_gbps(_BULK, True) / peak


def dram_efficiency(chip: ChipConfig) -> tuple[float, float]:
    """(read, write) streaming efficiency of the chip's HBM preset (1.0, 1.0 without a preset)."""
    if not chip.hbm.dram_preset:
        return 1.0, 1.0
    return _efficiency(chip.hbm.dram_preset, chip.hbm.stacks)


class DramMemory(SimpleMemory):
    """SimpleMemory with transfers charged at the DRAM-level streaming efficiency (module docstring)."""

    def __init__(self, chip: ChipConfig):
        super().__init__(chip)
        self.eff_read, self.eff_write = dram_efficiency(chip)

    def stream_gbps(self, is_write: bool = False) -> float:
        """The chip's HBM bandwidth for one long sequential stream after DRAM-level losses."""
        return self.bandwidth_gbps * (self.eff_write if is_write else self.eff_read)

    def transfer(self, chip: int, start_ps: int, nbytes: int, is_write: bool, addr: int,
                 max_gbps: float | None = None) -> int:
        eff = self.eff_write if is_write else self.eff_read
        charged = int(round(nbytes / eff))
        end = super().transfer(chip, start_ps, charged, is_write, addr,
                               None if max_gbps is None else max_gbps / eff)
        # count the bytes actually moved, not the charged pin time
        if is_write:
            self.bytes_written[chip] += nbytes - charged
        else:
            self.bytes_read[chip] += nbytes - charged
        if self.log is not None and self.log:
            c, s, e, _, w = self.log[-1]
            self.log[-1] = (c, s, e, nbytes, w)
        return end
