"""The timing state of one engine run, shared by its parts: per stream (clock, lookahead bound, done,
what it is blocked on, busy/stall totals) and per instruction (start, end, end of engine occupancy), plus
the lookahead test that tells when a semaphore's known crossing is final; and the raw result of a run.

The compute streams (:mod:`infsim.engine.core`), the DMA arbiter (:mod:`infsim.engine.dma_arbiter`) and
the collective rendezvous (:mod:`infsim.engine.rendezvous`) all write here, so each can be driven on its
own with a :class:`StreamState`. :func:`barrier_targets` is the one place that says what value each
barrier waits for (the program-level analytical fidelity uses it too). Models nothing by itself; the rules
these numbers follow are in the modules that write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.isa.errors import DeadlockError
from infsim.isa.opcodes import Engine, Op
from infsim.isa.program import Program

from .costs import Costs
from .events import Env
from .semaphores import NEVER


@dataclass
class StreamStats:
    """Totals of one stream ``(core, engine, queue)``: busy and stall time (ps), end of its last instruction."""

    key: tuple[int, int, int]
    instructions: int
    busy_ps: int = 0
    stall_ps: int = 0
    end_ps: int = 0


@dataclass
class StreamState:
    """Per-stream and per-instruction state of a run (see the module docstring).

    ``t_local[k]``: stream ``k``'s clock, ``>= env.now`` while it runs ahead (``NEVER`` once done);
    ``lat_min[k]``: a lower bound on (its next signal's time - its clock); ``signalers[s]``: the streams
    that can signal semaphore ``s`` (from the program, fixed); ``last_signal[k]``: when the signals of
    stream ``k``'s latest signalling instruction take effect (:meth:`signal_time`).
    """

    env: Env
    signalers: list[list[int]]
    t_local: list[int]
    lat_min: list[int]
    done: list[bool]
    blocked: list[Any]
    stats: list[StreamStats]
    start: np.ndarray
    end: np.ndarray
    occ_end: np.ndarray
    last_signal: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.last_signal:
            self.last_signal = [0] * len(self.t_local)

    def signal_time(self, k: int, t: int) -> int:
        """When the signals of stream ``k``'s next signalling instruction, finishing (or, for a barrier
        arrival, arriving) at ``t``, take effect: signals of one stream are applied in program order, so
        at ``max(t, when its previous signalling instruction's took effect)``. Records it."""
        a = self.last_signal[k]
        if t > a:
            a = t
            self.last_signal[k] = t
        return a

    def final(self, s: int, c: int, me: int) -> bool:
        """True when no signal on ``s`` still unknown can come before ``c``: every stream other than ``me`` that
        can signal ``s`` is done or cannot signal before ``max(its clock, now) + lat_min`` >= ``c``."""
        now = self.env.now
        t_local, done, lat_min = self.t_local, self.done, self.lat_min
        for m in self.signalers[s]:
            if m == me or done[m]:
                continue
            lb = t_local[m]
            if lb < now:
                lb = now
            if lb + lat_min[m] < c:
                return False
        return True


@dataclass
class EngineRun:
    """Raw timing of one run: per-instruction start/end and per-stream totals."""

    start_ps: np.ndarray
    end_ps: np.ndarray
    occ_end_ps: np.ndarray
    streams: list[StreamStats]
    total_ps: int
    hbm_bytes_read: list[int]
    hbm_bytes_written: list[int]
    link_bytes: int
    memory_log: list[tuple[int, int, int, int, bool]] | None
    dma_engine_of: dict[tuple[int, int, int], int] = field(default_factory=dict)


def barrier_targets(program: Program) -> np.ndarray:
    """Per instruction, the value its barrier waits for: ``k * count`` for the k-th barrier of a stream
    ``(core, engine, queue)`` on a semaphore (each arrival adds 1); -1 for other instructions."""
    ins = program.instr
    out = np.full(len(ins), -1, dtype=np.int64)
    bar = np.flatnonzero(ins["op"] == int(Op.barrier))
    if len(bar) == 0:
        return out
    seen: dict[tuple[int, int, int, int], int] = {}
    cores, engs, qs = ins["core"], ins["engine"], ins["queue"]
    for i in bar.tolist():
        sem = int(ins["i0"][i])
        key = (int(cores[i]), int(engs[i]), int(qs[i]), sem)
        seen[key] = seen.get(key, 0) + 1
        out[i] = seen[key] * int(ins["i1"][i])
    return out


def stream_ids(program: Program) -> np.ndarray:
    """Per instruction, the index of its stream in ``program.streams()`` (keys sorted)."""
    sid = np.empty(len(program), dtype=np.int64)
    for k, idx in enumerate(program.streams().values()):
        sid[idx] = k
    return sid


def signalers(program: Program, sid: np.ndarray, nsem: int) -> tuple[np.ndarray, np.ndarray]:
    """The streams that can signal each semaphore (signals and barrier arrivals), from the program: stream
    ids ``lst[ptr[s]:ptr[s + 1]]`` for semaphore ``s``, ascending."""
    ins = program.instr
    ns = len(program.streams()) + 1
    pairs = []
    ssem = ins["ssem"]
    for j in range(ssem.shape[1]):
        m = ssem[:, j] >= 0
        pairs.append(ssem[m, j].astype(np.int64) * ns + sid[m])
    bar = ins["op"] == int(Op.barrier)
    pairs.append(ins["i0"][bar].astype(np.int64) * ns + sid[bar])
    allp = np.unique(np.concatenate(pairs))
    sem, lst = allp // ns, allp % ns
    ptr = np.zeros(nsem + 1, dtype=np.int64)
    np.cumsum(np.bincount(sem, minlength=nsem), out=ptr[1:])
    return ptr, lst


def signal_latency_bounds(program: Program, chip: ChipConfig, costs: Costs, bar_target: np.ndarray) -> np.ndarray:
    """Per instruction, a lower bound on (time of the next signal of its stream - its start), taken over it
    and the rest of its stream: its latency if it signals (DMA: fixed latency + engine time; barrier
    arrival, nops and collectives: 0), suffix-minimum along the stream. Signals applied in program order
    only come later, so it bounds them too. The engines' lookahead (:meth:`StreamState.final`) uses it."""
    ins = program.instr
    op = ins["op"]
    sig = (ins["ssem"] >= 0).any(axis=1)
    own = np.where(sig, costs.lat_ps, NEVER)
    dma = op == int(Op.dma_copy)
    fixed = int(round(chip.dma.fixed_latency_ns * 1000))
    own = np.where(dma & sig, costs.dma_engine_ps + fixed, own)
    cc = np.isin(op, [int(Op.all_reduce), int(Op.all_gather), int(Op.reduce_scatter), int(Op.send), int(Op.recv)])
    own = np.where((cc & sig) | (bar_target >= 0), 0, own)
    own = np.where((op == int(Op.nop)) & sig, 0, own)
    out = np.empty(len(op), dtype=np.int64)
    for idx in program.streams().values():
        out[idx] = np.minimum.accumulate(own[idx][::-1])[::-1]
    return out


def deadlock_error(program: Program, keys: list[tuple[int, int, int]], stuck: list[tuple[int, tuple | None]],
                   sem_total: Sequence[int]) -> DeadlockError:
    """The error naming every stream ``k`` that could not finish and what it waits for: ``None`` (nothing
    known), ``("sem", i, s, v)`` (instruction ``i`` waits for semaphore ``s >= v``; ``sem_total``: every
    semaphore's final value) or ``("collective", i, members, arrived)`` (its collective's partners)."""
    lines = []
    names = program.semaphores
    for k, b in stuck:
        core, eng, q = keys[k]
        where = f"core {core} engine {Engine(eng).name} queue {q}"
        if b is None:
            lines.append(f"{where}: did not finish")
            continue
        i = b[1]
        opname = Op(int(program.instr["op"][i])).name
        if b[0] == "collective":
            lines.append(f"{where}: instruction {i} ({opname}) waits for collective partners: "
                         f"arrived cores {list(b[3])} of {list(b[2])}")
        else:
            s, v = b[2], b[3]
            lines.append(f"{where}: instruction {i} ({opname}) waits on semaphore '{names[s]}' >= {v} "
                         f"(current value {sem_total[s]})")
    return DeadlockError("deadlock: " + "; ".join(lines))
