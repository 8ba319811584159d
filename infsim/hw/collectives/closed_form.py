"""Closed forms of collective times on a uniform ring or a uniform path, nothing else competing.

``S`` = ``nbytes``, ``p`` ranks; every step pays the serialisation of its message on the link, the link
latency and the fixed step overhead, and each rank pays the launch overhead once (the timing model of one
step in :mod:`infsim.hw.collectives`). They are what the event simulation and the contention-free
evaluation reduce to on a uniform ring (every hop one link of the same bandwidth and latency), and
``tests/hw/test_collectives.py`` holds both to them. Left out: anything non-uniform (mixed on-chip and
NeuronLink hops, multi-hop paths of a ring, hierarchical algorithms) and contention; use
:func:`infsim.hw.collectives.schedule.contention_free_time_ns` or the event simulation for those.
"""

from __future__ import annotations

import math


def _reduce_ns(nbytes: float, reduce_gbps: float) -> float:
    return nbytes / reduce_gbps if reduce_gbps > 0 else 0.0


def ring_all_reduce_time_ns(nbytes: float, p: int, link_gbps: float, latency_ns: float,
                            step_overhead_ns: float = 0.0, launch_overhead_ns: float = 0.0,
                            reduce_gbps: float = 0.0) -> float:
    """Ring all-reduce of ``nbytes`` over ``p`` ranks on a uniform ring:
    ``launch + 2(p-1)/p * S / link_gbps + 2(p-1) * (latency_ns + step_overhead_ns)``, plus
    ``(p-1)/p * S / reduce_gbps`` when the reduction is modelled (``reduce_gbps > 0``)."""
    if p <= 1:
        return launch_overhead_ns
    return (launch_overhead_ns + 2 * (p - 1) * (nbytes / p / link_gbps + latency_ns + step_overhead_ns)
            + (p - 1) * _reduce_ns(nbytes / p, reduce_gbps))


def ring_all_gather_time_ns(nbytes: float, p: int, link_gbps: float, latency_ns: float,
                            step_overhead_ns: float = 0.0, launch_overhead_ns: float = 0.0) -> float:
    """Ring all-gather with ``nbytes`` of output per rank: ``launch + (p-1) * (S/p / bw + lat + ovh)``."""
    if p <= 1:
        return launch_overhead_ns
    return launch_overhead_ns + (p - 1) * (nbytes / p / link_gbps + latency_ns + step_overhead_ns)


def ring_reduce_scatter_time_ns(nbytes: float, p: int, link_gbps: float, latency_ns: float,
                                step_overhead_ns: float = 0.0, launch_overhead_ns: float = 0.0,
                                reduce_gbps: float = 0.0) -> float:
    """Ring reduce-scatter with ``nbytes`` of input per rank: the all-gather time plus
    ``(p-1)/p * S / reduce_gbps`` when the reduction is modelled."""
    if p <= 1:
        return launch_overhead_ns
    return (ring_all_gather_time_ns(nbytes, p, link_gbps, latency_ns, step_overhead_ns, launch_overhead_ns)
            + (p - 1) * _reduce_ns(nbytes / p, reduce_gbps))


def tree_all_reduce_time_ns(nbytes: float, p: int, path_gbps: float, path_latency_ns: float,
                            step_overhead_ns: float = 0.0, launch_overhead_ns: float = 0.0,
                            reduce_gbps: float = 0.0) -> float:
    """Binomial-tree all-reduce, ``p`` a power of two, every tree edge the same path (e.g. a switch):
    ``launch + 2 log2(p) * (S / bw + lat + ovh) + log2(p) * S / reduce_gbps``. (Other ``p``: some levels
    overlap; use :func:`contention_free_time_ns`.)"""
    if p <= 1:
        return launch_overhead_ns
    L = math.ceil(math.log2(p))
    return (launch_overhead_ns + 2 * L * (nbytes / path_gbps + path_latency_ns + step_overhead_ns)
            + L * _reduce_ns(nbytes, reduce_gbps))


def send_recv_time_ns(nbytes: float, path_gbps: float, path_latency_ns: float,
                      step_overhead_ns: float = 0.0, launch_overhead_ns: float = 0.0) -> float:
    """One point-to-point message: ``launch + ovh + S / bw + lat``."""
    return launch_overhead_ns + step_overhead_ns + nbytes / path_gbps + path_latency_ns


def bus_factor(op: str, p: int) -> float:
    """NCCL bus-bandwidth factor: bus_gbps = factor * nbytes / time (2(p-1)/p all-reduce, (p-1)/p
    all-gather / reduce-scatter, 1 send/recv)."""
    if op == "send_recv":
        return 1.0
    if p <= 1:
        return 0.0
    return (2.0 if op == "all_reduce" else 1.0) * (p - 1) / p
