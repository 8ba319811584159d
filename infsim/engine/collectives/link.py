"""The topology-aware link model behind the engine's collective interface (registered as ``link``, the default
``links.collective_model``; the interface is in :mod:`infsim.engine.collectives`).

:class:`LinkCollectives` times each collective on its own with the link model of
:mod:`infsim.hw.collectives` (ring / torus / switch routing, per-step latencies and overheads from the chip's
``links`` config): the contention-free time of the collective's step schedule. Left out: contention between
collectives in flight at the same time and with other traffic on the links (the event simulation of
:class:`infsim.hw.collectives.CollectiveModel` has it, for standalone studies).
"""

from __future__ import annotations

import math
from typing import Any

from infsim.config.schema import ChipConfig
from infsim.errors import InfsimError
from infsim.hw.collectives.network import CollectiveModel
from infsim.hw.links import Topology


class LinkCollectives:
    """The engine's :class:`~infsim.engine.collectives.CollectiveTiming` interface on the link model.

    Duration-based, so contention-free: the time of
    :func:`~infsim.hw.collectives.contention_free_time_ns` (equal to the event simulation when the
    collective is alone) with the ``algorithm`` given (default ``auto``: the runtime's choice,
    :mod:`infsim.hw.collectives.choice`, or the chip's pinned ``links.collective_algorithm``), rounded up to a
    whole ps. :meth:`algorithm` names the one that runs (for results and traces).
    ``link_bytes`` is the NeuronLink bytes x hops of the whole collective divided by the number of members
    (per-member average, rounded; the engine multiplies it back), or the whole message x hops for
    send/recv, for link energy. Sizes: all_reduce ``S = src_bytes``; all_gather ``S = dst_bytes`` (the
    gathered result); reduce_scatter ``S = src_bytes``; send/recv: one message of
    ``max(src_bytes, dst_bytes)`` from ``members[0]`` to ``members[-1]``. For contention between
    collectives use :meth:`~infsim.hw.collectives.CollectiveModel.join` from the engine's processes
    instead.
    """

    def __init__(self, chip: ChipConfig, algorithm: str = "auto") -> None:
        self.chip = chip
        self._alg = algorithm
        self._models: dict[int, CollectiveModel] = {}

    def _model(self, cores_per_chip: int) -> CollectiveModel:
        if cores_per_chip not in self._models:
            topo = Topology(self.chip.links, self.chip.instance.chips, cores_per_chip)
            self._models[cores_per_chip] = CollectiveModel(self.chip, topology=topo)
        return self._models[cores_per_chip]

    @staticmethod
    def _kind(op: Any, members: tuple[int, ...], src_bytes: int, dst_bytes: int) -> tuple[str, float, list[int]]:
        name = str(getattr(op, "name", op))
        if name in ("send", "recv", "send_recv"):
            return "send_recv", float(max(src_bytes, dst_bytes)), list(members)
        if name in ("all_reduce", "reduce_scatter"):
            return name, float(src_bytes), list(members)
        if name == "all_gather":
            return name, float(dst_bytes), list(members)
        raise InfsimError(f"{name} is not a collective")

    def algorithm(self, op: Any, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                  cores_per_chip: int) -> str:
        """The algorithm this collective runs (``direct`` for send/recv, ``none`` for a group of one)."""
        kind, S, group = self._kind(op, members, src_bytes, dst_bytes)
        if len(set(group)) <= 1:
            return "none"
        return self._model(cores_per_chip).schedule(kind, group, S, self.algorithm_name).algorithm

    @property
    def algorithm_name(self) -> str:
        return self._alg

    def duration_ps(self, op: Any, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                    cores_per_chip: int) -> tuple[int, int]:
        kind, S, group = self._kind(op, members, src_bytes, dst_bytes)
        m = self._model(cores_per_chip)
        if kind == "send_recv" and (len(members) < 2 or members[0] == members[-1]):
            return 0, 0
        if len(set(group)) <= 1:
            return 0, 0
        alg = self._alg
        ns = m.estimate_ns(kind, group, S, alg)
        sched = m.schedule(kind, group, S, alg)
        topo = m.topology
        hop_bytes = 0.0
        for t in sched.transfers:
            path = topo.core_path(sched.cores[t.src], sched.cores[t.dst])
            hop_bytes += t.nbytes * sum(1 for li in path.links if topo.links[li].kind == "chip")
        per = 1 if kind == "send_recv" else len(set(group))  # the engine multiplies by members, not for send/recv
        return int(math.ceil(ns * 1000.0 - 1e-6)), int(round(hop_bytes / per))

