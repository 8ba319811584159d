"""Address mapping: byte address <-> (channel, bank group, bank, row, column).

The mapping string lists fields MSB first (``'RoBaCoBgCh'``: channel in the lowest bits above the burst
offset, then bank group, column, bank, row). Decoding is mixed-radix, so field sizes need not be powers
of two (e.g. 3 stacks); with power-of-two sizes it is exactly bit slicing. Addresses beyond the capacity
wrap (the row field is taken modulo the row count). The byte offset inside one burst is dropped.

Hashing (``controller.address_hash: fold``). Memory controllers spread strided traffic by hashing the
address into the channel and bank select (Neuron HBM controllers use a CRC of the physical address for
"which HBM channel and bank services each request"; the polynomial is not published). ``fold`` is a
linear stand-in of the same kind: the channel, bank-group and bank fields are each offset, modulo their
size, by the sum of the base-``size`` digits of the address bits above them (for power-of-two sizes a
sum of the higher bit groups). Rows and columns are not hashed, so a sequential stream keeps its row
hits and still visits every channel once per ``channels`` bursts; the hash is a bijection (a field is
offset by a function of higher bits only), so :meth:`AddressMap.encode` inverts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import HbmPresetConfig, parse_mapping

#: fields the ``fold`` hash offsets
HASHED = ("ch", "bg", "ba")


def digit_sum(x: np.ndarray, base: int) -> np.ndarray:
    """Sum of the base-``base`` digits of every element of ``x`` (>= 0)."""
    out = np.zeros_like(x)
    x = x.copy()
    while np.any(x):
        out += x % base
        x //= base
    return out


@dataclass(frozen=True)
class AddressMap:
    """Field sizes and order for ``stacks`` stacks of one preset."""

    fields: tuple[str, ...]  # MSB first
    sizes: dict[str, int]
    access_bytes: int
    hashed: bool = False

    @classmethod
    def from_preset(cls, cfg: HbmPresetConfig, stacks: int = 1) -> AddressMap:
        o = cfg.organization
        sizes = {"ch": o.channels * stacks, "bg": o.bankgroups, "ba": o.banks_per_group, "co": o.columns,
                 "ro": o.rows}
        return cls(parse_mapping(cfg.controller.address_mapping), sizes, o.access_bytes,
                   cfg.controller.address_hash == "fold")

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
            if self.hashed and f in HASHED:
                out[f] = (out[f] + digit_sum(x, s)) % s
        if self.hashed:
            out["ro"] = out["ro"] % self.sizes["ro"]
        return out

    def encode(self, ch: np.ndarray | int, bg: np.ndarray | int, ba: np.ndarray | int, ro: np.ndarray | int,
               co: np.ndarray | int) -> np.ndarray:
        """Inverse of :meth:`decode` (burst-aligned byte addresses)."""
        vals = {"ch": ch, "bg": bg, "ba": ba, "ro": ro, "co": co}
        x = np.zeros(np.broadcast(*vals.values()).shape, dtype=np.int64)
        for f in self.fields:
            s = self.sizes[f]
            v = np.asarray(vals[f], dtype=np.int64) % s
            if self.hashed and f in HASHED:
                v = (v - digit_sum(x, s)) % s
            x = x * s + v
        return x * self.access_bytes
