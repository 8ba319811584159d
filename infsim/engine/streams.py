"""The timing state of one run of the reference engine, shared by its parts: per stream (done, what it is
blocked on, when its latest signals take effect, busy/stall totals) and per instruction (start, end, end of
engine occupancy); the raw result of a run (both engines), the deadlock report (both engines), and what
value each barrier waits for.

The compute streams (:mod:`infsim.engine.core`), the DMA arbiter (:mod:`infsim.engine.dma_arbiter`) and
the collective rendezvous (:mod:`infsim.engine.rendezvous`) all write here, so each can be driven on its
own with a :class:`StreamState`. :meth:`StreamState.signal_time` is the one place of the in-order signal
rule and :func:`barrier_targets` of the barrier values (the numba engine and the program-level analytical
fidelity take them from here). Models nothing by itself; the rules these numbers follow are in the
modules that write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infsim.isa.errors import DeadlockError
from infsim.isa.opcodes import Engine, Op
from infsim.isa.program import Program

from .events import Env


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
    """Per-stream and per-instruction state of a run of the reference engine (see the module docstring).

    ``done[k]``: stream ``k`` has finished; ``blocked[k]``: what it waits for (for deadlock reports);
    ``last_signal[k]``: when the signals of its latest signalling instruction take effect
    (:meth:`signal_time`).
    """

    env: Env
    done: list[bool]
    blocked: list[Any]
    stats: list[StreamStats]
    start: np.ndarray
    end: np.ndarray
    occ_end: np.ndarray
    last_signal: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.last_signal:
            self.last_signal = [0] * len(self.done)

    def signal_time(self, k: int, t: int) -> int:
        """When the signals of stream ``k``'s next signalling instruction, finishing (or, for a barrier
        arrival, arriving) at ``t``, take effect: signals of one stream are applied in program order, so
        at ``max(t, when its previous signalling instruction's took effect)``. Records it."""
        a = self.last_signal[k]
        if t > a:
            a = t
            self.last_signal[k] = t
        return a


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
