"""Collectives decomposed into steps of point-to-point transfers (:func:`build_schedule`), and the
contention-free evaluation of such a schedule (:func:`contention_free_time_ns`).

Algorithms (ring, bidir, tree, hier) and operations are described in :mod:`infsim.hw.collectives`. A
schedule says who sends how many bytes to whom at which algorithm step, on which channel (independent
pipelines of one rank); it knows nothing of time. The contention-free evaluation applies the step timing
rules of the package docstring along the data dependencies with every message alone on its links: the
longest path, a lower bound of the event simulation and equal to it when no two messages share a link.
Left out here: link sharing (see :mod:`.network`), and message sizes that do not divide evenly (sizes are
the fluid ``S / p``, floats).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infsim.errors import InfsimError
from infsim.hw.links import Path, Topology

OPS: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter", "send_recv")
ALGORITHMS: tuple[str, ...] = ("ring", "bidir", "tree", "hier")


@dataclass(frozen=True)
class Transfer:
    """One message: at algorithm step ``step`` rank ``src`` sends ``nbytes`` to rank ``dst``."""

    step: int
    src: int
    dst: int
    nbytes: float
    reduce: bool = False  # the receiver reduces the data into its own before using it
    channel: int = 0  # independent pipelines of one rank (bidir's two directions); dependencies stay within one


@dataclass(frozen=True)
class Schedule:
    """A collective decomposed into transfers; rank ``i`` is global core ``cores[i]``."""

    op: str
    algorithm: str
    cores: tuple[int, ...]
    nbytes: float
    transfers: tuple[Transfer, ...]

    @property
    def p(self) -> int:
        return len(self.cores)

    @property
    def num_steps(self) -> int:
        return len({t.step for t in self.transfers})


def _ring_rs(ranks: Sequence[int], msg: float, step0: int, reduce: bool, channel: int = 0) -> list[Transfer]:
    """``n - 1`` ring steps, every rank sending ``msg`` to its successor (a reduce-scatter when ``reduce``,
    else an all-gather)."""
    n = len(ranks)
    return [Transfer(step0 + s, ranks[i], ranks[(i + 1) % n], msg, reduce, channel)
            for s in range(n - 1) for i in range(n)]


def _ring_ar(ranks: Sequence[int], total: float, step0: int, channel: int = 0) -> list[Transfer]:
    n = len(ranks)
    return (_ring_rs(ranks, total / n, step0, True, channel)
            + _ring_rs(ranks, total / n, step0 + n - 1, False, channel))


def _levels(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def _binomial_up(ranks: Sequence[int], size: Callable[[int, int], float], step0: int,
                 reduce: bool) -> list[Transfer]:
    """Reduce / gather toward ``ranks[0]``: at level k, index i (i mod 2^(k+1) == 2^k) sends its subtree
    ``[i, min(i + 2^k, n))`` to ``i - 2^k``."""
    n, out = len(ranks), []
    for k in range(_levels(n)):
        h = 1 << k
        for i in range(h, n, 2 * h):
            out.append(Transfer(step0 + k, ranks[i], ranks[i - h], size(i, min(i + h, n)), reduce))
    return out


def _binomial_down(ranks: Sequence[int], size: Callable[[int, int], float], step0: int) -> list[Transfer]:
    """Broadcast / scatter from ``ranks[0]``: levels in reverse, index i (multiple of 2^(k+1)) sends the
    subtree ``[i + 2^k, min(i + 2^(k+1), n))`` to ``i + 2^k``."""
    n, out = len(ranks), []
    L = _levels(n)
    for j, k in enumerate(reversed(range(L))):
        h = 1 << k
        for i in range(0, n, 2 * h):
            if i + h < n:
                out.append(Transfer(step0 + j, ranks[i], ranks[i + h], size(i + h, min(i + 2 * h, n))))
    return out


def build_schedule(topology: Topology, op: str, cores: Sequence[int], nbytes: float,
                   algorithm: str = "ring") -> Schedule:
    """Decompose one collective over global ``cores`` into per-step :class:`Transfer` s."""
    if op not in OPS:
        raise InfsimError(f"unknown collective '{op}' (one of: {', '.join(OPS)})")
    if algorithm not in ALGORITHMS:
        raise InfsimError(f"unknown algorithm '{algorithm}' (one of: {', '.join(ALGORITHMS)})")
    if nbytes < 0:
        raise InfsimError(f"collective size must be >= 0 bytes, got {nbytes}")
    S = float(nbytes)
    if op == "send_recv":
        if len(cores) < 2:
            raise InfsimError("send_recv needs at least 2 ranks (it sends from the first to the last)")
        for c in cores:
            topology.chip_of(c)
        if cores[0] == cores[-1]:
            raise InfsimError(f"send_recv from core {cores[0]} to itself")
        return Schedule(op, algorithm, (cores[0], cores[-1]), S, (Transfer(0, 0, 1, S),))
    if len(cores) < 1:
        raise InfsimError("a collective needs at least one rank")
    ordered = tuple(topology.ring_order(cores))
    p = len(ordered)
    idx = list(range(p))
    tr: list[Transfer] = []
    if p == 1:
        pass
    elif algorithm == "ring":
        if op == "all_reduce":
            tr = _ring_ar(idx, S, 0)
        else:  # all_gather / reduce_scatter: same message pattern, p - 1 steps of S / p
            tr = _ring_rs(idx, S / p, 0, op == "reduce_scatter")
    elif algorithm == "bidir":
        rev = idx[::-1]
        if op == "all_reduce":
            tr = _ring_ar(idx, S / 2, 0, 0) + _ring_ar(rev, S / 2, 0, 1)
        else:
            red = op == "reduce_scatter"
            tr = _ring_rs(idx, S / 2 / p, 0, red, 0) + _ring_rs(rev, S / 2 / p, 0, red, 1)
    elif algorithm == "tree":
        full: Callable[[int, int], float] = lambda lo, hi: S  # noqa: E731
        shard: Callable[[int, int], float] = lambda lo, hi: (hi - lo) * S / p  # noqa: E731
        L = _levels(p)
        if op == "all_reduce":
            tr = _binomial_up(idx, full, 0, True) + _binomial_down(idx, full, L)
        elif op == "all_gather":
            tr = _binomial_up(idx, shard, 0, False) + _binomial_down(idx, full, L)
        else:
            tr = _binomial_up(idx, full, 0, True) + _binomial_down(idx, shard, L)
    else:  # hier
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(ordered):
            groups.setdefault(topology.chip_of(c), []).append(i)
        chips = list(groups.values())
        c_ = {len(g) for g in chips}
        if len(c_) != 1:
            raise InfsimError(f"hier needs the same number of ranks on every chip, got {sorted(c_)}")
        c, q = len(chips[0]), len(chips)
        # one inter-chip ring per local core index; odd ones run the other way round, so both directions
        # of every link carry data
        rings = [[g[j] for g in (chips if j % 2 == 0 else chips[::-1])] for j in range(c)]
        if op == "all_reduce":
            for g in chips:
                tr += _ring_rs(g, S / c, 0, True)
            for r in rings:
                tr += _ring_ar(r, S / c, c - 1)
            for g in chips:
                tr += _ring_rs(g, S / c, c - 1 + 2 * (q - 1), False)
        elif op == "all_gather":
            for r in rings:
                tr += _ring_rs(r, S / p, 0, False)
            for g in chips:
                tr += _ring_rs(g, S / c, q - 1, False)
        else:
            for g in chips:
                tr += _ring_rs(g, S / c, 0, True)
            for r in rings:
                tr += _ring_rs(r, S / p, c - 1, True)
    tr.sort(key=lambda t: t.step)  # stable: keeps construction order within a step
    return Schedule(op, algorithm, ordered, S, tuple(tr))


def contention_free_time_ns(schedule: Schedule, topology: Topology, step_overhead_ns: float = 0.0,
                            launch_overhead_ns: float = 0.0, reduce_gbps: float = 0.0) -> float:
    """Finish time of ``schedule`` if no two messages ever shared a link: the longest path through the
    step dependencies. A lower bound of the event simulation; equal to it when links are not shared."""
    launch = launch_overhead_ns
    recv_done: dict[tuple[int, int], float] = {}  # (rank, channel) -> latest arrival over closed steps
    own_done: dict[tuple[int, int], float] = {}  # (rank, channel) -> latest link release of its own sends
    trs = schedule.transfers
    i = 0
    while i < len(trs):
        s = trs[i].step
        new_recv = dict(recv_done)
        new_own = dict(own_done)
        while i < len(trs) and trs[i].step == s:
            t = trs[i]
            src, dst = (t.src, t.channel), (t.dst, t.channel)
            path = topology.core_path(schedule.cores[t.src], schedule.cores[t.dst])
            t0 = max(recv_done.get(src, launch), own_done.get(src, launch))
            ser = t.nbytes / path.gbps if t.nbytes > 0 else 0.0
            ld = t0 + step_overhead_ns + ser
            new_own[src] = max(new_own.get(src, launch), ld)
            red = t.nbytes / reduce_gbps if t.reduce and reduce_gbps > 0 else 0.0
            new_recv[dst] = max(new_recv.get(dst, launch), ld + (path.latency_ns + red))
            i += 1
        recv_done, own_done = new_recv, new_own
    return max([launch, *recv_done.values(), *own_done.values()])


def uniform_ring_hop(schedule: Schedule, topology: Topology) -> Path | None:
    """The common path of every ring hop when all hops are alike (one link each, same bandwidth and latency);
    None otherwise (the closed forms then do not apply; use :func:`contention_free_time_ns`)."""
    p = schedule.p
    if p < 2:
        return None
    paths = [topology.core_path(schedule.cores[i], schedule.cores[(i + 1) % p]) for i in range(p)]
    first = paths[0]
    if all(x.hops == 1 and x.gbps == first.gbps and x.latency_ns == first.latency_ns for x in paths):
        return first
    return None
