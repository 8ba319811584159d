"""One or several collectives simulated on their own on a chip's instance (what ``infsim collective`` and
``benchmarks/collectives.py`` report): the event-simulated time next to the contention-free time and,
where it applies, the closed form, with per-link bytes and link energy.

Left out: everything but the collectives themselves (no compute, no HBM traffic); see
:mod:`infsim.hw.collectives` for what the link model leaves out.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import simpy

from infsim.config.schema import ChipConfig
from infsim.errors import InfsimError
from infsim.hw.links import Topology

from .closed_form import (
    bus_factor,
    ring_all_gather_time_ns,
    ring_all_reduce_time_ns,
    ring_reduce_scatter_time_ns,
    send_recv_time_ns,
)
from .network import DEFAULT_MAX_CHUNKS, CollectiveModel, CollectiveRecord
from .schedule import Schedule, uniform_ring_hop


@dataclass
class CollectiveResult:
    """Result of one simulated collective (times in ns, bandwidths in GB/s, bytes, joules)."""

    op: str
    algorithm: str
    ranks: int
    cores: tuple[int, ...]
    nbytes: float
    time_ns: float
    alg_gbps: float
    bus_gbps: float
    steps: int
    transfers: int
    contention_free_ns: float
    closed_form_ns: float | None
    chip_link_bytes: float
    intra_chip_bytes: float
    link_energy_j: float
    link_bytes: dict[str, float] = field(default_factory=dict)
    lnc: int = 1

    @property
    def time_us(self) -> float:
        return self.time_ns / 1e3

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op, "algorithm": self.algorithm, "ranks": self.ranks, "bytes": self.nbytes,
            "time_ns": self.time_ns, "time_us": self.time_us, "alg_gbps": self.alg_gbps,
            "bus_gbps": self.bus_gbps, "steps": self.steps, "transfers": self.transfers,
            "contention_free_us": self.contention_free_ns / 1e3,
            "closed_form_us": None if self.closed_form_ns is None else self.closed_form_ns / 1e3,
            "chip_link_bytes": self.chip_link_bytes, "intra_chip_bytes": self.intra_chip_bytes,
            "link_energy_j": self.link_energy_j, "cores": list(self.cores), "lnc": self.lnc,
        }


@dataclass(frozen=True)
class CollectiveSpec:
    """One collective of a concurrent simulation; ``ranks`` is a count (cores 0..R-1) or explicit cores."""

    op: str
    ranks: int | Sequence[int]
    nbytes: float
    algorithm: str = "auto"
    start_ns: float = 0.0


def _cores(ranks: int | Sequence[int]) -> list[int]:
    if isinstance(ranks, int):
        if ranks < 1:
            raise InfsimError(f"ranks must be >= 1, got {ranks}")
        return list(range(ranks))
    return list(ranks)


def _closed_form(sched: Schedule, topo: Topology, ovh: float, launch: float,
                 reduce_gbps: float) -> float | None:
    if sched.op == "send_recv":
        path = topo.core_path(sched.cores[0], sched.cores[1])
        return send_recv_time_ns(sched.nbytes, path.gbps, path.latency_ns, ovh, launch)
    if sched.p == 1:
        return launch
    if sched.algorithm != "ring" or sched.lnc > 1:
        return None
    hop = uniform_ring_hop(sched, topo)
    if hop is None:
        return None
    if sched.op == "all_gather":
        return ring_all_gather_time_ns(sched.nbytes, sched.p, hop.gbps, hop.latency_ns, ovh, launch)
    f = ring_all_reduce_time_ns if sched.op == "all_reduce" else ring_reduce_scatter_time_ns
    return f(sched.nbytes, sched.p, hop.gbps, hop.latency_ns, ovh, launch, reduce_gbps)


def simulate_concurrent(chip: ChipConfig, specs: Sequence[CollectiveSpec], *,
                        max_chunks: int = DEFAULT_MAX_CHUNKS) -> list[CollectiveResult]:
    """Run several collectives in one environment (sharing links); one result per spec, each timed from
    its own start. Per-link bytes and energy in each result are those of the whole run."""
    model = CollectiveModel(chip, max_chunks=max_chunks)
    env = simpy.Environment()
    net = model.network(env)
    procs: list[simpy.Process] = []
    scheds: list[Schedule] = []

    def delayed(spec: CollectiveSpec, cores: list[int]) -> Generator[simpy.Event, Any, CollectiveRecord]:
        if spec.start_ns > 0:
            yield env.timeout(spec.start_ns)
        rec: CollectiveRecord = yield model.run(env, spec.op, cores, spec.nbytes, spec.algorithm)
        return rec

    for spec in specs:
        cores = _cores(spec.ranks)
        scheds.append(model.schedule(spec.op, cores, spec.nbytes, spec.algorithm))
        procs.append(env.process(delayed(spec, cores)))
    env.run()
    topo = model.topology
    chip_b = sum(b for i, b in enumerate(net.link_bytes) if topo.links[i].kind == "chip")
    intra_b = sum(b for i, b in enumerate(net.link_bytes) if topo.links[i].kind == "intra")
    out = []
    for spec, sched, proc in zip(specs, scheds, procs):
        rec = proc.value
        assert isinstance(rec, CollectiveRecord)
        t = rec.time_ns
        alg = sched.nbytes / t if t > 0 else 0.0
        out.append(CollectiveResult(
            op=sched.op, algorithm=sched.algorithm, ranks=sched.p if sched.op != "send_recv" else 2,
            cores=sched.cores, nbytes=sched.nbytes, time_ns=t, alg_gbps=alg,
            bus_gbps=alg * bus_factor(sched.op, sched.p), steps=sched.num_steps,
            transfers=len(sched.transfers),
            contention_free_ns=model.estimate_ns(spec.op, _cores(spec.ranks), spec.nbytes, spec.algorithm),
            closed_form_ns=_closed_form(sched, topo, model.step_overhead_ns, model.launch_overhead_ns,
                                        model.reduce_gbps),
            lnc=sched.lnc,
            chip_link_bytes=chip_b, intra_chip_bytes=intra_b,
            link_energy_j=chip_b * 8 * model.link_pj_per_bit * 1e-12, link_bytes=net.bytes_by_link(),
        ))
    return out


def simulate_collective(chip: ChipConfig, op: str, ranks: int | Sequence[int], nbytes: float,
                        algorithm: str = "auto", *, max_chunks: int = DEFAULT_MAX_CHUNKS) -> CollectiveResult:
    """Simulate one collective alone on ``chip``'s instance. ``ranks``: a count R (global cores 0..R-1, i.e.
    packed onto the first chips) or explicit core ids."""
    return simulate_concurrent(chip, [CollectiveSpec(op, ranks, nbytes, algorithm)], max_chunks=max_chunks)[0]
