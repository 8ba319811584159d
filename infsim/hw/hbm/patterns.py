"""Request generators: ``(arrival_ns, addr, is_write)`` arrays of burst-sized requests.

All requests arrive at time 0 (a bulk transfer: the controller queues are kept full and the arrival
FIFO in front of them holds the rest), so throughput is the controller's, and latency is counted from
admission into a controller queue.

- ``stream``: consecutive bursts from address 0 (read or write).
- ``random``: uniformly random burst addresses over the whole capacity (seeded), reads.
- ``mixed``: a 50/50 copy: read burst ``k`` of a source region at 0 then write burst ``k`` of a
  destination region at half the capacity, alternating.
- ``bank-stride``: in every channel, every access goes to bank group 0 bank 0 and opens a new row
  (column 0), so each channel is limited by tRC; channels are visited round robin.
"""

from __future__ import annotations

import numpy as np

from .mapping import AddressMap

PATTERNS = ("stream", "random", "mixed", "bank-stride")


def generate(amap: AddressMap, pattern: str, n: int, is_write: bool = False,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` requests of ``pattern`` for the address map ``amap``."""
    ab = amap.access_bytes
    units = amap.capacity_bytes // ab
    k = np.arange(n, dtype=np.int64)
    arrival = np.zeros(n, dtype=np.float64)
    if pattern == "stream":
        addr = (k % units) * ab
        wr = np.full(n, bool(is_write))
    elif pattern == "random":
        rng = np.random.default_rng(seed)
        addr = rng.integers(0, units, n, dtype=np.int64) * ab
        wr = np.full(n, bool(is_write))
    elif pattern == "mixed":
        half = units // 2
        idx = k // 2
        wr = (k % 2) == 1
        addr = np.where(wr, half + idx % half, idx % half) * ab
    elif pattern == "bank-stride":
        nch = amap.sizes["ch"]
        addr = amap.encode(k % nch, 0, 0, k // nch, 0)
        wr = np.full(n, bool(is_write))
    else:
        raise ValueError(f"unknown pattern '{pattern}' (one of {', '.join(PATTERNS)})")
    return arrival, addr.astype(np.int64), wr
