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
    collective is alone) with the ``algorithm`` given (default ``ring``), rounded up to a whole ps.
    ``link_bytes`` is the NeuronLink bytes x hops of the whole collective divided by the number of members
    (per-member average, rounded; the engine multiplies it back), or the whole message x hops for
    send/recv, for link energy. Sizes: all_reduce ``S = src_bytes``; all_gather ``S = dst_bytes`` (the
    gathered result); reduce_scatter ``S = src_bytes``; send/recv: one message of
    ``max(src_bytes, dst_bytes)`` from ``members[0]`` to ``members[-1]``. For contention between
    collectives use :meth:`~infsim.hw.collectives.CollectiveModel.join` from the engine's processes
    instead.
    """

    def __init__(self, chip: ChipConfig, algorithm: str = "ring") -> None:
        self.chip = chip
        self.algorithm = algorithm
        self._models: dict[int, CollectiveModel] = {}

    def _model(self, cores_per_chip: int) -> CollectiveModel:
        if cores_per_chip not in self._models:
            topo = Topology(self.chip.links, self.chip.instance.chips, cores_per_chip)
            self._models[cores_per_chip] = CollectiveModel(self.chip, topology=topo)
        return self._models[cores_per_chip]

    def duration_ps(self, op: Any, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                    cores_per_chip: int) -> tuple[int, int]:
        name = str(getattr(op, "name", op))
        m = self._model(cores_per_chip)
        if name in ("send", "recv", "send_recv"):
            if len(members) < 2 or members[0] == members[-1]:
                return 0, 0
            kind, S, group = "send_recv", float(max(src_bytes, dst_bytes)), list(members)
        elif name in ("all_reduce", "reduce_scatter"):
            kind, S, group = name, float(src_bytes), list(members)
        elif name == "all_gather":
            kind, S, group = name, float(dst_bytes), list(members)
        else:
            raise InfsimError(f"{name} is not a collective")
        if len(set(group)) <= 1:
            return 0, 0
        alg = self.algorithm if kind != "send_recv" else "ring"
        ns = m.estimate_ns(kind, group, S, alg)
        sched = m.schedule(kind, group, S, alg)
        topo = m.topology
        hop_bytes = 0.0
        for t in sched.transfers:
            path = topo.core_path(sched.cores[t.src], sched.cores[t.dst])
            hop_bytes += t.nbytes * sum(1 for li in path.links if topo.links[li].kind == "chip")
        per = 1 if kind == "send_recv" else len(set(group))  # the engine multiplies by members, not for send/recv
        return int(math.ceil(ns * 1000.0 - 1e-6)), int(round(hop_bytes / per))

