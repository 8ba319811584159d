"""Collectives over the chip-to-chip links: per-step decomposition, a simpy event simulation with link
contention, a contention-free analytical evaluator, and closed forms.

Operations (``S`` = ``nbytes``, ``p`` ranks = NeuronCores, NCCL conventions):

* ``all_reduce``: every rank holds ``S`` bytes and ends with the element-wise sum.
* ``all_gather``: every rank contributes ``S / p`` bytes and ends with all ``S``.
* ``reduce_scatter``: every rank holds ``S`` bytes and ends with its reduced ``S / p`` shard.
* ``send_recv``: the first rank of the group sends ``S`` bytes to the last.

Algorithms (ranks are put in ring order by :meth:`Topology.ring_order`: chip ring position, then local core):

* ``ring``: reduce-scatter then all-gather around the ring, ``p - 1`` steps each, messages of ``S / p``.
* ``bidir``: two rings in opposite directions, each on half the data (both directions of every link work;
  same step count), run as two independent pipelines (channels) on every rank.
* ``tree``: binomial tree rooted at rank 0; all-reduce = reduce (``ceil(log2 p)`` steps of ``S``) then
  broadcast; all-gather = gather (a subtree's shards) then broadcast of ``S``; reduce-scatter = reduce then
  scatter (a subtree's shards). Latency-optimal step count, bandwidth-poor.
* ``hier``: needs the same number ``c`` of ranks on each of ``q`` chips. all-reduce = intra-chip ring
  reduce-scatter, then ``c`` concurrent inter-chip rings (one per local core index, each all-reducing its
  ``S / c`` shard; they share the NeuronLinks, odd-numbered rings run in the opposite direction so both
  directions of each link are used), then intra-chip ring all-gather. all-gather = inter-chip rings
  (``S / c`` each) then intra-chip all-gather; reduce-scatter = intra-chip then inter-chip reduce-scatter.

Timing model of one step (what is included)
-------------------------------------------
A rank starts its sends of step ``s`` when every message addressed to it in an earlier step (on the same
channel) has arrived and its own previous sends have left its links (data dependencies only; there is no
global barrier, so a slow hop's latency overlaps other hops' work). Each send then costs

    collective_step_overhead_ns          (fixed: semaphore synchronisation, DMA descriptor and launch)
  + message_bytes / path_gbps            (serialisation; the path's slowest link)
  + path latency_ns                      (sum of per-hop latencies; pipelined, does not occupy the link)
  + message_bytes / collective_reduce_gbps   (on receipt, reduce steps only; 0 = not modelled, the default)

and every rank pays ``collective_launch_overhead_ns`` once before its first step. On a uniform ring (every
hop the same single link) this gives exactly the closed forms below, e.g. for all-reduce
``launch + 2(p-1) * (S/p / link_gbps + latency_ns + step_overhead_ns)`` (+ ``(p-1) * S/p / reduce_gbps``).

Contention: every directed link is a first-come-first-served resource (see :class:`LinkNetwork`). A
message is cut into ``min(max_chunks, ceil(bytes / min_chunk_bytes))`` equal chunks (8 and 4 KiB by
default: a simulation granularity, not hardware) and each chunk reserves every link of its path for its
serialisation time (circuit-style cut-through). Flows on a shared link therefore interleave chunk by chunk
in arrival order (approximate fair sharing: equal competitors finish at most one chunk, <= 1/8 of a
message, apart), from this collective or any other in flight on the same :class:`CollectiveModel`. Bytes
and busy time are counted per link (for ``link_pj_per_bit`` energy: :attr:`CollectiveResult.link_energy_j`
counts NeuronLink bytes only).

Left out (documented assumptions): contention for the reduction engines (with ``collective_reduce_gbps``
set, each reduction is a plain delay at the receiver; unset, it is free), HBM/SBUF traffic of the
collective buffers, packet headers and flow control, the on-chip hop of inter-chip messages (see
:mod:`infsim.hw.links`), and message sizes that do not divide evenly (the model uses the fluid size
``S / p``; bytes are floats).

Units: all inputs and results are in ns and bytes; ``link_gbps`` is GB/s = bytes per ns. A simpy
environment whose time unit is not 1 ns is supported through ``ns_per_unit`` (e.g. cycles of a clock).

First sanity estimate: Llama-2-7B decode at TP 24 on inf2.48xlarge
-------------------------------------------------------------------
hidden 4096 x bf16 = 8 KiB per all-reduce, 2 per layer x 32 layers = 64 all-reduces per token. The
published TPOT is 6.47 ms against a ~1.3 ms HBM roofline (hardware-facts.md sections 7 and 11); if the whole
5.17 ms gap were collectives, each all-reduce would take 80.8 us. With this model and the inf2 preset's
link figures (NeuronLink 103.1 GB/s, 1000 ns per hop; on-chip 435.2 GB/s, 500 ns) and launch overhead 0:

* ring over 24 ranks (46 steps, each on the critical path paying the step overhead once; the hops
  alternate on-chip and NeuronLink, whose latencies overlap as described above): 34.6 us with no step
  overhead, so 80.8 us needs a per-step overhead of about 1.00 us (the preset's assumed 500 ns gives
  57.6 us per all-reduce, 3.7 ms per token);
* bidir: the same 46 steps, so the same ~1.0 us (halving 341-byte messages saves nothing at decode sizes);
* hier (1 + 22 + 1 = 24 steps): 23.1 us without overhead; about 2.40 us per step would be needed;
* tree (binomial, 2 x 5 levels of which 9 lie on the critical path for p = 24, ring paths up to 8 hops):
  15.6 us without overhead; about 7.2 us per step would be needed.

So a ~1 us fixed cost per ring step (semaphore round trip + DMA descriptor launch, the same order as the
~1.3 us DMA fixed cost of hardware-facts.md section 5) explains the published figure if Neuron runs a flat
ring; the gap also contains attention, KV-cache and launch overheads, so this is an upper bound on the
per-step cost. Both the per-hop ``latency_ns`` and the step overhead are assumed in the presets, so the
published figure constrains their sum on the critical path (about 46 x 2 us for the flat ring), not each
alone. The presets are NOT tuned to it (``benchmarks/collectives.py`` recomputes these numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import simpy

from infsim.config.schema import ChipConfig
from infsim.errors import InfsimError

from .links import Path, Topology

Op = Literal["all_reduce", "all_gather", "reduce_scatter", "send_recv"]
Algorithm = Literal["ring", "bidir", "tree", "hier"]
OPS: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter", "send_recv")
ALGORITHMS: tuple[str, ...] = ("ring", "bidir", "tree", "hier")
DEFAULT_MAX_CHUNKS = 8  # pieces per message for link sharing (simulation granularity, not hardware)
DEFAULT_MIN_CHUNK_BYTES = 4096.0  # smallest piece (bounds the event count of small messages)


# ---------------------------------------------------------------------------------------------
# closed forms (uniform ring / uniform paths, nothing else competing)
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# decomposition into steps
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# contention-free evaluation (the same dependency rules as the event simulation, no link sharing)
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# event simulation
# ---------------------------------------------------------------------------------------------
class LinkNetwork:
    """The directed links of a :class:`Topology` in one simpy environment, with byte and busy-time counters.

    Each link keeps the time it is next free. A chunk asks for every link of its path at once and starts
    when all of them are free; it then reserves them all until it ends (first come, first served; no
    back-filling of idle gaps). On a one-link path this is exactly a FIFO resource of capacity 1, and it
    costs one simpy event per chunk.
    """

    def __init__(self, env: simpy.Environment, topology: Topology, *, ns_per_unit: float = 1.0,
                 max_chunks: int = DEFAULT_MAX_CHUNKS, min_chunk_bytes: float = DEFAULT_MIN_CHUNK_BYTES) -> None:
        if max_chunks < 1 or min_chunk_bytes <= 0 or ns_per_unit <= 0:
            raise InfsimError("max_chunks, min_chunk_bytes and ns_per_unit must be > 0")
        self.env = env
        self.topology = topology
        self.ns_per_unit = ns_per_unit
        self.max_chunks = max_chunks
        self.min_chunk_bytes = float(min_chunk_bytes)
        self.free_at = [0.0] * len(topology.links)  # environment time units
        self.link_bytes = [0.0] * len(topology.links)
        self.link_busy_ns = [0.0] * len(topology.links)

    def transfer(self, path: Path, nbytes: float) -> Generator[simpy.Event, Any, None]:
        """Move ``nbytes`` over ``path`` (serialisation only; the caller adds latency)."""
        if nbytes <= 0 or not path.links:
            return
        env, links, free = self.env, path.links, self.free_at
        n = max(1, min(self.max_chunks, math.ceil(nbytes / self.min_chunk_bytes)))
        c = nbytes / n
        dur_ns = c / path.gbps
        dur = dur_ns / self.ns_per_unit
        for _ in range(n):
            now = env.now
            start = now
            for li in links:
                if free[li] > start:
                    start = free[li]
            end = start + dur
            for li in links:
                free[li] = end
                self.link_bytes[li] += c
                self.link_busy_ns[li] += dur_ns
            yield env.timeout(dur if start == now else end - now)

    def bytes_by_link(self) -> dict[str, float]:
        """Bytes carried per link name (links that carried nothing are omitted)."""
        return {self.topology.links[i].name: b for i, b in enumerate(self.link_bytes) if b > 0}


@dataclass
class CollectiveRecord:
    """One collective as run by the engine: when it started (first rank joined) and ended (last arrival)."""

    op: str
    algorithm: str
    cores: tuple[int, ...]
    nbytes: float
    start_ns: float
    end_ns: float = math.nan

    @property
    def time_ns(self) -> float:
        return self.end_ns - self.start_ns


class _Instance:
    """One collective in flight: its schedule, per-transfer arrival events, per-rank completion events."""

    def __init__(self, model: CollectiveModel, net: LinkNetwork, sched: Schedule, key: Hashable) -> None:
        env = net.env
        self.model, self.net, self.sched, self.key = model, net, sched, key
        topo = net.topology
        self.paths = [topo.core_path(sched.cores[t.src], sched.cores[t.dst]) for t in sched.transfers]
        self.arrived = [env.event() for _ in sched.transfers]
        p = sched.p
        self.sends: dict[tuple[int, int], list[int]] = {}  # (rank, channel) -> transfer indices, by step
        self.recvs: dict[tuple[int, int], list[int]] = {}
        self.channels: list[list[int]] = [[] for _ in range(p)]
        for j, t in enumerate(sched.transfers):
            self.sends.setdefault((t.src, t.channel), []).append(j)
            self.recvs.setdefault((t.dst, t.channel), []).append(j)
            for r in (t.src, t.dst):
                if t.channel not in self.channels[r]:
                    self.channels[r].append(t.channel)
        self.rank_of = {c: i for i, c in enumerate(sched.cores)}
        self.rank_done = [env.event() for _ in range(p)]
        self.joined: set[int] = set()
        self.record = CollectiveRecord(sched.op, sched.algorithm, sched.cores, sched.nbytes,
                                       env.now * net.ns_per_unit)
        self.done = simpy.AllOf(env, self.rank_done)
        self.done.callbacks.append(self._finish)

    def _finish(self, _ev: simpy.Event) -> None:
        self.record.end_ns = self.net.env.now * self.net.ns_per_unit
        self.model.records.append(self.record)

    def start_rank(self, rank: int) -> None:
        self.joined.add(rank)
        self.net.env.process(self._rank(rank))

    def _rank(self, r: int) -> Generator[simpy.Event, Any, None]:
        env, u = self.net.env, self.net.ns_per_unit
        if self.model.launch_overhead_ns > 0:
            yield env.timeout(self.model.launch_overhead_ns / u)
        chans = self.channels[r]
        if len(chans) == 1:
            yield from self._pipe(r, chans[0])
        elif chans:
            for proc in [env.process(self._pipe(r, ch)) for ch in chans]:
                if not proc.processed:
                    yield proc
        self.rank_done[r].succeed()

    def _pipe(self, r: int, ch: int) -> Generator[simpy.Event, Any, None]:
        """Rank ``r``'s sends and receives on channel ``ch``, in step order."""
        env, trs, arrived = self.net.env, self.sched.transfers, self.arrived
        sends, recvs = self.sends.get((r, ch), []), self.recvs.get((r, ch), [])
        ri, i = 0, 0
        prev: list[simpy.Event] = []
        while i < len(sends):
            s = trs[sends[i]].step
            for ev in prev:  # own earlier sends have left the links
                if not ev.processed:
                    yield ev
            while ri < len(recvs) and trs[recvs[ri]].step < s:  # everything addressed to us earlier arrived
                ev = arrived[recvs[ri]]
                if not ev.processed:
                    yield ev
                ri += 1
            k = i
            while k < len(sends) and trs[sends[k]].step == s:
                k += 1
            if k == i + 1:  # the usual case: one send per step, run inline (fewer events)
                prev = []
                yield from self._send(sends[i], None)
            else:
                prev = [env.event() for _ in range(i, k)]
                for ev, j in zip(prev, sends[i:k]):
                    env.process(self._send(j, ev))
            i = k
        for ev in prev:
            if not ev.processed:
                yield ev
        for j in recvs[ri:]:
            if not arrived[j].processed:
                yield arrived[j]

    def _send(self, j: int, link_done: simpy.Event | None) -> Generator[simpy.Event, Any, None]:
        env, u = self.net.env, self.net.ns_per_unit
        ovh = self.model.step_overhead_ns
        if ovh > 0:
            yield env.timeout(ovh / u)
        path = self.paths[j]
        yield from self.net.transfer(path, self.sched.transfers[j].nbytes)
        if link_done is not None:
            link_done.succeed()
        t, rg = self.sched.transfers[j], self.model.reduce_gbps
        delay = path.latency_ns + (t.nbytes / rg if t.reduce and rg > 0 else 0.0)
        if delay > 0:
            env.timeout(delay / u).callbacks.append(self._arrival(j))
        else:
            self.arrived[j].succeed()

    def _arrival(self, j: int) -> Callable[[simpy.Event], None]:
        ev = self.arrived[j]

        def fire(_e: simpy.Event) -> None:
            ev.succeed()

        return fire


class CollectiveModel:
    """Collectives of one system for the engine: call from simpy processes; flows of all collectives in
    flight share the links.

    ``run(env, op, group_cores, nbytes, algorithm)`` starts every rank now and returns a process whose value
    is the :class:`CollectiveRecord`. ``join(env, core, key, ...)`` lets each core's process enter the
    collective when it reaches it (ranks start skewed); it returns that rank's completion event. Both accept
    ``contention=False`` to use the cached contention-free time (no link events; bytes still counted), e.g.
    when the engine knows nothing else uses the links.

    ``ns_per_unit`` is the length of one environment time unit in ns (1.0 when the engine counts ns, 1e-3
    when it counts ps). Example, from each core's simpy process of an engine counting ps::

        model = CollectiveModel(chip, ns_per_unit=1e-3)
        ...
        yield model.join(env, core, key=instr_id, op="all_reduce", group_cores=members, nbytes=8192)

    Cost: about 5 simpy events per message chunk (a TP-24 ring all-reduce of 8 KiB is 1,104 messages, ~10 ms
    of host time); ``contention=False`` costs one timeout per rank.
    """

    def __init__(self, chip: ChipConfig, num_cores: int | None = None, *, ns_per_unit: float = 1.0,
                 max_chunks: int = DEFAULT_MAX_CHUNKS, min_chunk_bytes: float = DEFAULT_MIN_CHUNK_BYTES,
                 topology: Topology | None = None) -> None:
        self.chip = chip
        self.topology = topology or Topology.from_chip(chip)
        self.num_cores = self.topology.num_cores if num_cores is None else num_cores
        if self.num_cores > self.topology.num_cores:
            raise InfsimError(f"{self.num_cores} cores requested but {chip.instance.name} has "
                              f"{self.topology.num_cores} ({self.topology.num_chips} chips x "
                              f"{self.topology.cores_per_chip})")
        self.step_overhead_ns = chip.links.collective_step_overhead_ns
        self.launch_overhead_ns = chip.links.collective_launch_overhead_ns
        self.reduce_gbps = chip.links.collective_reduce_gbps
        self.link_pj_per_bit = chip.energy.link_pj_per_bit
        self.ns_per_unit = ns_per_unit
        self.max_chunks = max_chunks
        self.min_chunk_bytes = min_chunk_bytes
        self.records: list[CollectiveRecord] = []
        self._net: LinkNetwork | None = None
        self._pending: dict[Hashable, _Instance] = {}
        self._sched_cache: dict[tuple[Any, ...], Schedule] = {}
        self._est_cache: dict[tuple[Any, ...], float] = {}

    # ---- pure helpers --------------------------------------------------------------------------
    def schedule(self, op: str, group_cores: Sequence[int], nbytes: float, algorithm: str = "ring") -> Schedule:
        key = (op, tuple(group_cores), float(nbytes), algorithm)
        if key not in self._sched_cache:
            for c in group_cores:
                if not 0 <= c < self.num_cores:
                    raise InfsimError(f"core {c} out of range (model has {self.num_cores} cores)")
            self._sched_cache[key] = build_schedule(self.topology, op, group_cores, nbytes, algorithm)
        return self._sched_cache[key]

    def estimate_ns(self, op: str, group_cores: Sequence[int], nbytes: float, algorithm: str = "ring") -> float:
        """Contention-free duration (cached)."""
        key = (op, tuple(group_cores), float(nbytes), algorithm)
        if key not in self._est_cache:
            sched = self.schedule(op, group_cores, nbytes, algorithm)
            self._est_cache[key] = contention_free_time_ns(sched, self.topology, self.step_overhead_ns,
                                                           self.launch_overhead_ns, self.reduce_gbps)
        return self._est_cache[key]

    def network(self, env: simpy.Environment) -> LinkNetwork:
        """The link resources bound to ``env`` (a new environment gets fresh links and counters)."""
        if self._net is None or self._net.env is not env:
            self._net = LinkNetwork(env, self.topology, ns_per_unit=self.ns_per_unit, max_chunks=self.max_chunks,
                                    min_chunk_bytes=self.min_chunk_bytes)
            self._pending.clear()
        return self._net

    def chip_link_bytes(self, env: simpy.Environment) -> float:
        """NeuronLink bytes x hops carried so far in ``env``."""
        net = self.network(env)
        return sum(b for i, b in enumerate(net.link_bytes) if self.topology.links[i].kind == "chip")

    def link_energy_j(self, env: simpy.Environment) -> float:
        """Energy of the NeuronLink traffic so far (``link_pj_per_bit`` x bits x hops; on-chip paths excluded)."""
        return self.chip_link_bytes(env) * 8 * self.link_pj_per_bit * 1e-12

    # ---- engine API ----------------------------------------------------------------------------
    def join(self, env: simpy.Environment, core: int, key: Hashable, op: str, group_cores: Sequence[int],
             nbytes: float, algorithm: str = "ring", *, contention: bool = True) -> simpy.Event:
        """Core ``core`` enters collective ``key`` (same key, op, group, size and algorithm on every member);
        returns the event that fires when this rank's part is done (its sends left, its receives arrived).
        With ``contention=False`` the rank simply waits the contention-free duration from its own join."""
        net = self.network(env)
        sched = self.schedule(op, group_cores, nbytes, algorithm)
        if core not in sched.cores:
            raise InfsimError(f"collective {key!r}: core {core} is not a member of {list(sched.cores)}")
        if not contention:
            dur = self.estimate_ns(op, group_cores, nbytes, algorithm)
            if core == sched.cores[0]:  # count bytes and record once per collective
                self._count_bytes(net, sched)
                now = env.now * self.ns_per_unit
                self.records.append(CollectiveRecord(op, algorithm, sched.cores, sched.nbytes, now, now + dur))
            return env.timeout(dur / self.ns_per_unit)
        inst = self._pending.get(key)
        if inst is None:
            inst = self._pending[key] = _Instance(self, net, sched, key)
        elif inst.sched is not sched:
            raise InfsimError(f"collective {key!r}: members disagree on op/group/size/algorithm")
        rank = inst.rank_of[core]
        if rank in inst.joined:
            raise InfsimError(f"collective {key!r}: core {core} joined twice")
        inst.start_rank(rank)
        if len(inst.joined) == sched.p:
            del self._pending[key]
        return inst.rank_done[rank]

    def _count_bytes(self, net: LinkNetwork, sched: Schedule) -> None:
        for t in sched.transfers:
            path = self.topology.core_path(sched.cores[t.src], sched.cores[t.dst])
            for li in path.links:
                net.link_bytes[li] += t.nbytes
                net.link_busy_ns[li] += t.nbytes / path.gbps

    def run(self, env: simpy.Environment, op: str, group_cores: Sequence[int], nbytes: float,
            algorithm: str = "ring", *, contention: bool = True) -> simpy.Process:
        """Start the collective on every member now; the returned process's value is its record."""
        net = self.network(env)
        sched = self.schedule(op, group_cores, nbytes, algorithm)

        def fast() -> Generator[simpy.Event, Any, CollectiveRecord]:
            dur = self.estimate_ns(op, group_cores, nbytes, algorithm)
            rec = CollectiveRecord(op, algorithm, sched.cores, sched.nbytes, env.now * self.ns_per_unit)
            self._count_bytes(net, sched)
            yield env.timeout(dur / self.ns_per_unit)
            rec.end_ns = rec.start_ns + dur
            self.records.append(rec)
            return rec

        def full() -> Generator[simpy.Event, Any, CollectiveRecord]:
            inst = _Instance(self, net, sched, None)
            for r in range(sched.p):
                inst.start_rank(r)
            yield inst.done
            return inst.record

        return env.process(full() if contention else fast())


# ---------------------------------------------------------------------------------------------
# standalone simulation
# ---------------------------------------------------------------------------------------------
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
            "link_energy_j": self.link_energy_j, "cores": list(self.cores),
        }


@dataclass(frozen=True)
class CollectiveSpec:
    """One collective of a concurrent simulation; ``ranks`` is a count (cores 0..R-1) or explicit cores."""

    op: str
    ranks: int | Sequence[int]
    nbytes: float
    algorithm: str = "ring"
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
    if sched.algorithm != "ring":
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
        rec = yield model.run(env, spec.op, cores, spec.nbytes, spec.algorithm)
        return rec  # type: ignore[no-any-return]

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
            chip_link_bytes=chip_b, intra_chip_bytes=intra_b,
            link_energy_j=chip_b * 8 * model.link_pj_per_bit * 1e-12, link_bytes=net.bytes_by_link(),
        ))
    return out


def simulate_collective(chip: ChipConfig, op: str, ranks: int | Sequence[int], nbytes: float,
                        algorithm: str = "ring", *, max_chunks: int = DEFAULT_MAX_CHUNKS) -> CollectiveResult:
    """Simulate one collective alone on ``chip``'s instance. ``ranks``: a count R (global cores 0..R-1, i.e.
    packed onto the first chips) or explicit core ids."""
    return simulate_concurrent(chip, [CollectiveSpec(op, ranks, nbytes, algorithm)], max_chunks=max_chunks)[0]
