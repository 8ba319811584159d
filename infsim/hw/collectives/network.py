"""The event simulation of collectives over the chip-to-chip links: :class:`LinkNetwork` (the directed links
as first-come-first-served resources in one simpy environment) and :class:`CollectiveModel` (collectives
of one system run as simpy processes over it, for the engine's processes or standalone studies).

Every message follows the step timing rules of :mod:`infsim.hw.collectives` and is cut into chunks that
reserve every link of their path for their serialisation time, so flows on a shared link, of this
collective or of any other in flight on the same model, interleave chunk by chunk. Left out (as in the
package docstring): reduction-engine contention, HBM/SBUF traffic of the collective buffers, packet
headers and flow control, the on-chip hop of inter-chip messages.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import simpy

from infsim.config.schema import ChipConfig
from infsim.errors import InfsimError
from infsim.hw.links import Path, Topology

from .schedule import Schedule, build_schedule, contention_free_time_ns

DEFAULT_MAX_CHUNKS = 8  # pieces per message for link sharing (simulation granularity, not hardware)
DEFAULT_MIN_CHUNK_BYTES = 4096.0  # smallest piece (bounds the event count of small messages)


class LinkNetwork:
    """The directed links of a :class:`Topology` in one simpy environment, with byte and busy-time counters.

    Each link keeps its reserved intervals. A chunk asks for every link of its path at once and takes the
    earliest time from now at which each of them is free for the chunk's serialisation at that link's own
    rate (requests are served first come, first served, and may back-fill a gap that earlier multi-link
    reservations left); the chunk ends when its slowest link has carried it. On a one-link path this is
    exactly a FIFO resource of capacity 1, and it costs one simpy event per chunk.
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
        # per link: reserved [start, end) intervals in environment time units, sorted and disjoint
        self.busy: list[list[tuple[float, float]]] = [[] for _ in topology.links]
        self.link_bytes = [0.0] * len(topology.links)
        self.link_busy_ns = [0.0] * len(topology.links)

    def _earliest(self, links: tuple[int, ...], t: float, durs: list[float]) -> float:
        """The earliest start >= ``t`` at which each link ``links[i]`` is free for ``durs[i]``."""
        busy = self.busy
        moved = True
        while moved:
            moved = False
            for li, dur in zip(links, durs):
                iv = busy[li]
                k = bisect.bisect_right(iv, (t, math.inf)) - 1  # last interval starting at or before t
                if k >= 0 and iv[k][1] > t:
                    t, moved = iv[k][1], True
                    k += 1
                else:
                    k += 1
                while k < len(iv) and iv[k][0] < t + dur:  # an interval starting inside the slot
                    t, moved = iv[k][1], True
                    k += 1
        return t

    def transfer(self, path: Path, nbytes: float) -> Generator[simpy.Event, Any, None]:
        """Move ``nbytes`` over ``path`` (serialisation only; the caller adds latency)."""
        if nbytes <= 0 or not path.links:
            return
        env, links, busy = self.env, path.links, self.busy
        n = max(1, min(self.max_chunks, math.ceil(nbytes / self.min_chunk_bytes)))
        c = nbytes / n
        per_ns = [c / self.topology.links[li].gbps for li in links]
        durs = [d / self.ns_per_unit for d in per_ns]
        dur = (c / path.gbps) / self.ns_per_unit
        for _ in range(n):
            now = env.now
            start = self._earliest(links, now, durs)
            for li, d, d_ns in zip(links, durs, per_ns):
                iv = busy[li]
                while iv and iv[0][1] <= now:  # past intervals can no longer block anything
                    iv.pop(0)
                bisect.insort(iv, (start, start + d))
                self.link_bytes[li] += c
                self.link_busy_ns[li] += d_ns
            yield env.timeout(start + dur - now)

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
        m = self.model
        ovh = m.shared_overhead_ns if self.sched.transfers[j].shared else m.step_overhead_ns
        if ovh > 0:
            yield env.timeout(ovh / u)
        path = self.paths[j]
        if self.sched.transfers[j].dup:  # a duplication write: its own rate, none of the links' time
            nb = self.sched.transfers[j].nbytes
            for li in path.links:  # its bytes still cross them (link energy)
                self.net.link_bytes[li] += nb
            if path.links and nb > 0:
                yield env.timeout(nb / path.gbps / u)
        else:
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
        self.shared_overhead_ns = chip.dma.fixed_latency_ns  # a DMA into the logical core's shared HBM
        self.lnc = chip.lnc
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
    def schedule(self, op: str, group_cores: Sequence[int], nbytes: float, algorithm: str = "auto") -> Schedule:
        key = (op, tuple(group_cores), float(nbytes), algorithm)
        if key not in self._sched_cache:
            for c in group_cores:
                if not 0 <= c < self.num_cores:
                    raise InfsimError(f"core {c} out of range (model has {self.num_cores} cores)")
            self._sched_cache[key] = build_schedule(self.topology, op, group_cores, nbytes, algorithm, self.lnc)
        return self._sched_cache[key]

    def estimate_ns(self, op: str, group_cores: Sequence[int], nbytes: float, algorithm: str = "auto") -> float:
        """Contention-free duration (cached)."""
        key = (op, tuple(group_cores), float(nbytes), algorithm)
        if key not in self._est_cache:
            sched = self.schedule(op, group_cores, nbytes, algorithm)
            self._est_cache[key] = contention_free_time_ns(sched, self.topology, self.step_overhead_ns,
                                                           self.launch_overhead_ns, self.reduce_gbps,
                                                           self.shared_overhead_ns)
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
             nbytes: float, algorithm: str = "auto", *, contention: bool = True) -> simpy.Event:
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
                self.records.append(CollectiveRecord(op, sched.algorithm, sched.cores, sched.nbytes, now, now + dur))
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
                net.link_busy_ns[li] += t.nbytes / self.topology.links[li].gbps

    def run(self, env: simpy.Environment, op: str, group_cores: Sequence[int], nbytes: float,
            algorithm: str = "auto", *, contention: bool = True) -> simpy.Process:
        """Start the collective on every member now; the returned process's value is its record."""
        net = self.network(env)
        sched = self.schedule(op, group_cores, nbytes, algorithm)

        def fast() -> Generator[simpy.Event, Any, CollectiveRecord]:
            dur = self.estimate_ns(op, group_cores, nbytes, algorithm)
            rec = CollectiveRecord(op, sched.algorithm, sched.cores, sched.nbytes, env.now * self.ns_per_unit)
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
