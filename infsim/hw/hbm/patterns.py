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

Two generators with parameters (not named patterns):

- :func:`strided`: the bursts of a strided transfer, ``rows`` rows of ``row_bytes`` contiguous bytes,
  ``stride_bytes`` apart, from byte ``offset``: each row asks for every burst it overlaps (two rows that
  share a burst ask for it twice, as two DMA descriptors do);
- :func:`independent_mix`: a sequential read stream and a sequential write stream at unrelated (random,
  burst-aligned) bases, interleaved in arrival order in the proportion of ``write_fraction``.
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


def strided(access_bytes: int, row_bytes: int, stride_bytes: int, rows: int, offset: int = 0) -> np.ndarray:
    """Burst-aligned byte addresses of a strided transfer (module docstring), in transfer order."""
    if row_bytes <= 0 or rows <= 0:
        return np.zeros(0, dtype=np.int64)
    start = offset + np.arange(rows, dtype=np.int64) * stride_bytes
    first = start // access_bytes
    count = (start + row_bytes - 1) // access_bytes - first + 1
    rep = np.repeat(first - np.cumsum(np.concatenate([[0], count[:-1]])), count)
    return (rep + np.arange(int(count.sum()), dtype=np.int64)) * access_bytes


def independent_mix(amap: AddressMap, n: int, write_fraction: float,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` requests: a read and a write stream at random bases, mixed in arrival order (module docstring)."""
    ab = amap.access_bytes
    units = amap.capacity_bytes // ab
    rng = np.random.default_rng(seed)
    nw = int(round(n * write_fraction))
    nr = n - nw
    bases = rng.integers(0, units // 2, 2)
    addr = np.concatenate([(bases[0] + np.arange(nr)) % units, (bases[1] + np.arange(nw)) % units]) * ab
    wr = np.concatenate([np.zeros(nr, dtype=bool), np.ones(nw, dtype=bool)])
    pos = np.concatenate([(np.arange(nr) + 0.5) / max(nr, 1), (np.arange(nw) + 0.5) / max(nw, 1)])
    order = np.argsort(pos, kind="stable")
    return np.zeros(n, dtype=np.float64), addr[order].astype(np.int64), wr[order]
