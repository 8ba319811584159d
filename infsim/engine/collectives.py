"""Collective timing used by the engine: the interface and its default.

Interface: :class:`CollectiveTiming` has ``duration_ps(op, members, src_bytes, dst_bytes, cores_per_chip)
-> (duration_ps, link_bytes)``: the time from the moment the last member arrives (every member's
instruction has its waits satisfied and its stream is free) until every member has its result, and the
bytes each member sends over chip-to-chip links (for link energy). The engine runs the rendezvous as
simpy events, so collectives overlap compute on other engines.

:func:`default_collectives` is the one place that picks the model both fidelities use: the
topology-aware link model of :mod:`infsim.hw.collectives` (``LinkCollectives``: ring / torus / switch
routing, per-step latencies and overheads from the chip's ``links`` config; contention-free per call).
"""

from __future__ import annotations

from typing import Protocol

from infsim.config.schema import ChipConfig
from infsim.isa.opcodes import Op


class CollectiveTiming(Protocol):
    def duration_ps(self, op: Op, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                    cores_per_chip: int) -> tuple[int, int]: ...


def default_collectives(chip: ChipConfig) -> CollectiveTiming:
    """The collective model of the cycle engine and of the analytical fidelities."""
    from infsim.hw.collectives import LinkCollectives

    return LinkCollectives(chip)
