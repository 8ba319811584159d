"""Collective timing used by the engine — the SIMPLE placeholder model.

Interface: :class:`CollectiveTiming` has ``duration_ps(op, members, src_bytes, dst_bytes, cores_per_chip)
-> (duration_ps, link_bytes)``: the time from the moment the last member arrives (every member's
instruction has its waits satisfied and its stream is free) until every member has its result, and the
bytes each member sends over chip-to-chip links (for link energy). The engine runs the rendezvous as
simpy events, so collectives overlap compute on other engines. The interconnect work (``infsim.hw
.collectives``, issue 5) replaces this with a contention-aware link model behind the same call.

:class:`RingCollectives` (this placeholder), from the chip's ``links`` config:

* ``R`` members in a ring; all on one chip -> the on-chip path (``intra_chip_gbps``,
  ``intra_chip_latency_ns``), otherwise NeuronLink (``link_gbps`` x ``links_per_chip // 2`` links per
  neighbour, ``latency_ns`` per hop; the ring's bottleneck hop sets the pace);
* one step = ``collective_step_overhead_ns + latency + chunk / bandwidth``;
* ``all_reduce``: ``2(R-1)`` steps of ``src_bytes / R``; ``all_gather``: ``R-1`` steps of ``src_bytes``
  (each member's contribution); ``reduce_scatter``: ``R-1`` steps of ``dst_bytes`` (one shard);
  ``send``/``recv``: one step of the message.

Left out: contention between concurrent collectives and with DMA traffic, the reduction arithmetic, the
HBM/SBUF traffic of the collective buffers, and topology-aware (tree, hierarchical) algorithms.
"""

from __future__ import annotations

import math
from typing import Protocol

from infsim.config.schema import ChipConfig
from infsim.errors import InfsimError
from infsim.isa.opcodes import Op


class CollectiveTiming(Protocol):
    def duration_ps(self, op: Op, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                    cores_per_chip: int) -> tuple[int, int]: ...


class RingCollectives:
    """The simple ring model of the module docstring."""

    def __init__(self, chip: ChipConfig):
        self.links = chip.links

    def _path(self, members: tuple[int, ...], cores_per_chip: int) -> tuple[float, float, bool]:
        chips = {m // cores_per_chip for m in members}
        lk = self.links
        if len(chips) <= 1:
            return lk.intra_chip_gbps, lk.intra_chip_latency_ns, False
        if lk.topology == "none" or lk.links_per_chip == 0 or lk.link_gbps <= 0:
            raise InfsimError(f"collective over chips {sorted(chips)} but the chip has no chip-to-chip links "
                              f"(links.topology={lk.topology}, links_per_chip={lk.links_per_chip})")
        per_neighbour = max(1, lk.links_per_chip // 2)
        return lk.link_gbps * per_neighbour, lk.latency_ns, True

    def duration_ps(self, op: Op, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                    cores_per_chip: int) -> tuple[int, int]:
        r = len(members)
        gbps, lat_ns, cross_chip = self._path(members, cores_per_chip)
        if op in (Op.send, Op.recv):
            steps, chunk = 1, float(max(src_bytes, dst_bytes))
        elif r <= 1:
            return 0, 0
        elif op == Op.all_reduce:
            steps, chunk = 2 * (r - 1), src_bytes / r
        elif op == Op.all_gather:
            steps, chunk = r - 1, float(src_bytes)
        elif op == Op.reduce_scatter:
            steps, chunk = r - 1, float(dst_bytes)
        else:  # pragma: no cover - not a collective
            raise InfsimError(f"{op.name} is not a collective")
        step_ns = self.links.collective_step_overhead_ns + lat_ns + chunk / gbps
        ps = int(math.ceil(steps * step_ns * 1000.0 - 1e-6))
        link_bytes = int(round(steps * chunk)) if cross_chip else 0
        return ps, link_bytes
