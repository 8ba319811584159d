"""Address mapping: byte address <-> (channel, bank group, bank, row, column).

The mapping string lists fields MSB first (``'RoBaCoBgCh'``: channel in the lowest bits above the burst
offset, then bank group, column, bank, row). Decoding is mixed-radix, so field sizes need not be powers
of two (e.g. 3 stacks); with power-of-two sizes it is exactly bit slicing. Addresses beyond the capacity
wrap (the row field is taken modulo the row count). The byte offset inside one burst is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import HbmPresetConfig, parse_mapping


@dataclass(frozen=True)
class AddressMap:
    """Field sizes and order for ``stacks`` stacks of one preset."""

    fields: tuple[str, ...]  # MSB first
    sizes: dict[str, int]
    access_bytes: int

    @classmethod
    def from_preset(cls, cfg: HbmPresetConfig, stacks: int = 1) -> AddressMap:
        o = cfg.organization
        sizes = {"ch": o.channels * stacks, "bg": o.bankgroups, "ba": o.banks_per_group, "co": o.columns,
                 "ro": o.rows}
        return cls(parse_mapping(cfg.controller.address_mapping), sizes, o.access_bytes)

    @property
    def capacity_bytes(self) -> int:
        total = self.access_bytes
        for s in self.sizes.values():
            total *= s
        return total

    def decode(self, addr: np.ndarray) -> dict[str, np.ndarray]:
        """Byte addresses -> dict of int64 arrays ``ch, bg, ba, ro, co``."""
        x = np.asarray(addr, dtype=np.int64) // self.access_bytes
        out: dict[str, np.ndarray] = {}
        for f in reversed(self.fields):
            s = self.sizes[f]
            out[f] = x % s
            x = x // s
        return out

    def encode(self, ch: np.ndarray | int, bg: np.ndarray | int, ba: np.ndarray | int, ro: np.ndarray | int,
               co: np.ndarray | int) -> np.ndarray:
        """Inverse of :meth:`decode` (burst-aligned byte addresses)."""
        vals = {"ch": ch, "bg": bg, "ba": ba, "ro": ro, "co": co}
        x = np.zeros(np.broadcast(*vals.values()).shape, dtype=np.int64)
        for f in self.fields:
            x = x * self.sizes[f] + (np.asarray(vals[f], dtype=np.int64) % self.sizes[f])
        return x * self.access_bytes
