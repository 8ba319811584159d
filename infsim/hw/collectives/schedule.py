"""Collectives decomposed into steps of point-to-point transfers (:func:`build_schedule`), and the
contention-free evaluation of such a schedule (:func:`contention_free_time_ns`).

Algorithms are in :mod:`.algorithms`, the runtime's choice among them in :mod:`.choice`, operations in
:mod:`infsim.hw.collectives`. A schedule says who sends how many bytes to whom at which algorithm step, on
which channel (independent pipelines of one rank); it knows nothing of time. :func:`build_schedule` puts the
ranks in ring order, groups them by chip, and, on a chip with logical NeuronCores (``lnc`` > 1), runs the
algorithm over the logical cores with the physical cores of each exchanging through their shared HBM
(:func:`.algorithms.lnc_wrap`).

The contention-free evaluation applies the step timing rules of the package docstring along the data
dependencies: a message's serialisation is its bytes over its path's slowest link, or, when several
messages of the same step cross one link, the bytes of all of them over that link (the step's messages
share it fairly and end together). It is a lower bound of the event simulation (which also shares links
between steps and between collectives) and equal to it when no two messages share a link. Left out here:
message sizes that do not divide evenly (sizes are the fluid ``S / p``, floats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infsim.errors import InfsimError
from infsim.hw.links import Path, Topology

from .algorithms import BUILDERS, Transfer, lnc_wrap
from .choice import GroupShape, choose_algorithm

OPS: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter", "send_recv")
ALGORITHMS: tuple[str, ...] = tuple(BUILDERS)


@dataclass(frozen=True)
class Schedule:
    """A collective decomposed into transfers; rank ``i`` is global core ``cores[i]``. ``algorithm`` is the
    one that ran (the choice when ``auto`` was asked), ``lnc`` the logical-core size it ran over."""

    op: str
    algorithm: str
    cores: tuple[int, ...]
    nbytes: float
    transfers: tuple[Transfer, ...]
    lnc: int = 1

    @property
    def p(self) -> int:
        return len(self.cores)

    @property
    def num_steps(self) -> int:
        return len({t.step for t in self.transfers})


def chip_groups(topology: Topology, ordered: Sequence[int]) -> tuple[list[list[int]], list[int]]:
    """Rank indices of ``ordered`` (cores in ring order) grouped by chip, and the chips in that order."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(ordered):
        groups.setdefault(topology.chip_of(c), []).append(i)
    return list(groups.values()), list(groups)


def hypercube_labels(topology: Topology, chips: Sequence[int]) -> list[int]:
    """Each chip's hypercube corner for recursive doubling/halving: on a torus whose sides are powers of two
    and whose chips are all in the group, the Gray codes of the coordinates side by side (neighbours differ
    in one bit, so every exchange is one hop); otherwise the Gray code of the chip's position in ring order
    (one hop for the lowest bit on a full ring, routed through other chips for the others)."""
    q = len(chips)
    dims = topology.dims
    if dims is not None and q == topology.num_chips and all(d & (d - 1) == 0 for d in dims):
        xbits = dims[0].bit_length() - 1
        out = []
        for ch in chips:
            x, y = topology.coords(ch)
            out.append((x ^ (x >> 1)) | ((y ^ (y >> 1)) << xbits))
        return out
    return [i ^ (i >> 1) for i in range(q)]


def group_shape(topology: Topology, ordered: Sequence[int], lnc: int = 1) -> GroupShape:
    """What the algorithm choice looks at: ranks (logical cores), chips, ranks per chip (None when uneven),
    and whether the group holds every logical core of each of its chips."""
    chips, ids = chip_groups(topology, ordered)
    sizes = {len(g) for g in chips}
    per = sizes.pop() // lnc if len(sizes) == 1 else None
    full = per is not None and per * lnc == topology.cores_per_chip
    return GroupShape(len(ordered) // lnc, len(chips), per, full)


def _logical_cores(ordered: Sequence[int], lnc: int) -> list[list[int]] | None:
    """Rank indices of each logical core (physical cores ``l * lnc .. l * lnc + lnc - 1``) when every logical
    core of the group is complete; None when some is not (the group is then run over physical cores)."""
    by: dict[int, list[int]] = {}
    for i, c in enumerate(ordered):
        by.setdefault(c // lnc, []).append(i)
    if any(len(v) != lnc for v in by.values()):
        return None
    return [sorted(v, key=lambda i: ordered[i] % lnc) for v in by.values()]


def build_schedule(topology: Topology, op: str, cores: Sequence[int], nbytes: float,
                   algorithm: str = "ring", lnc: int = 1) -> Schedule:
    """Decompose one collective over global ``cores`` into per-step :class:`Transfer` s. ``algorithm``:
    one of :data:`ALGORITHMS`, or ``auto`` for the runtime's choice (:func:`.choice.choose_algorithm`, with
    the thresholds of ``topology.cfg``). ``lnc`` > 1: ``cores`` are physical cores of logical cores of
    ``lnc`` consecutive cores each (see :func:`.algorithms.lnc_wrap`)."""
    if op not in OPS:
        raise InfsimError(f"unknown collective '{op}' (one of: {', '.join(OPS)})")
    if algorithm not in ALGORITHMS and algorithm != "auto":
        raise InfsimError(f"unknown algorithm '{algorithm}' (one of: auto, {', '.join(ALGORITHMS)})")
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
        return Schedule(op, "direct", (cores[0], cores[-1]), S, (Transfer(0, 0, 1, S),))
    if len(cores) < 1:
        raise InfsimError("a collective needs at least one rank")
    ordered = tuple(topology.ring_order(cores))
    logical = _logical_cores(ordered, lnc) if lnc > 1 else None
    if logical is None:
        lnc = 1
    alg = algorithm
    if alg == "auto":
        alg = choose_algorithm(op, S, group_shape(topology, ordered, lnc), topology.cfg)
    if len(ordered) == 1:
        return Schedule(op, alg, ordered, S, (), lnc)
    if logical is None:
        chips, ids = chip_groups(topology, ordered)
        tr = BUILDERS[alg](op, chips, S, hypercube_labels(topology, ids))
    else:
        halves: list[list[Transfer]] = []
        steps = 0
        for h in range(lnc):
            sub = [i for i in range(len(ordered)) if ordered[i] % lnc == h]
            chips, ids = chip_groups(topology, [ordered[i] for i in sub])
            inner = BUILDERS[alg](op, [[sub[i] for i in g] for g in chips], S / lnc, hypercube_labels(topology, ids))
            halves.append(inner)
            steps = max(steps, 1 + max((t.step for t in inner), default=-1))
        tr = lnc_wrap(op, logical, S, halves, steps)
    tr.sort(key=lambda t: t.step)  # stable: keeps construction order within a step
    return Schedule(op, alg, ordered, S, tuple(tr), lnc)


def contention_free_time_ns(schedule: Schedule, topology: Topology, step_overhead_ns: float = 0.0,
                            launch_overhead_ns: float = 0.0, reduce_gbps: float = 0.0,
                            shared_overhead_ns: float = 0.0) -> float:
    """Finish time of ``schedule`` along the step dependencies, messages of one step sharing the links they
    cross (see the module docstring): a lower bound of the event simulation, equal to it when no two
    messages share a link. ``shared_overhead_ns`` replaces the step overhead for ``shared`` transfers (between
    the physical cores of a logical core)."""
    launch = launch_overhead_ns
    recv_done: dict[tuple[int, int], float] = {}  # (rank, channel) -> latest arrival over closed steps
    own_done: dict[tuple[int, int], float] = {}  # (rank, channel) -> latest link release of its own sends
    trs = schedule.transfers
    links = topology.links
    i = 0
    while i < len(trs):
        s = trs[i].step
        new_recv = dict(recv_done)
        new_own = dict(own_done)
        j = i
        load: dict[int, float] = {}  # bytes this step puts on each link
        paths: list[Path] = []
        while j < len(trs) and trs[j].step == s:
            path = topology.core_path(schedule.cores[trs[j].src], schedule.cores[trs[j].dst])
            paths.append(path)
            if not trs[j].dup:
                for li in path.links:
                    load[li] = load.get(li, 0.0) + trs[j].nbytes
            j += 1
        for path in paths:
            t = trs[i]
            src, dst = (t.src, t.channel), (t.dst, t.channel)
            t0 = max(recv_done.get(src, launch), own_done.get(src, launch))
            if t.nbytes <= 0:
                ser = 0.0
            elif t.dup:  # written alongside the sender's other transfer: its own rate, no link taken
                ser = t.nbytes / path.gbps
            else:
                ser = max((load[li] / links[li].gbps for li in path.links), default=0.0)
            ld = t0 + (shared_overhead_ns if t.shared else step_overhead_ns) + ser
            if not t.dup:
                new_own[src] = max(new_own.get(src, launch), ld)
            red = t.nbytes / reduce_gbps if t.reduce and reduce_gbps > 0 else 0.0
            new_recv[dst] = max(new_recv.get(dst, launch), ld + (path.latency_ns + red))
            i += 1
        recv_done, own_done = new_recv, new_own
    return max([launch, *recv_done.values(), *own_done.values()])


def uniform_ring_hop(schedule: Schedule, topology: Topology) -> Path | None:
    """The common path of every ring hop when all hops are alike (same bandwidth and latency, no link shared
    between hops); None otherwise (the closed forms then do not apply; use :func:`contention_free_time_ns`)."""
    p = schedule.p
    if p < 2:
        return None
    paths = [topology.core_path(schedule.cores[i], schedule.cores[(i + 1) % p]) for i in range(p)]
    first = paths[0]
    used = [li for x in paths for li in x.links]
    if len(used) == len(set(used)) and all(x.gbps == first.gbps and x.latency_ns == first.latency_ns for x in paths):
        return first
    return None
