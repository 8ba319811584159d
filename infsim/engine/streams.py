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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infsim.isa.opcodes import Op
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
    """Per-stream and per-instruction state of a run (see the module docstring).

    ``t_local[k]``: stream ``k``'s clock, ``>= env.now`` while it runs ahead (``NEVER`` once done);
    ``lat_min[k]``: a lower bound on (its next signal's time - its clock); ``signalers[s]``: the streams
    that can signal semaphore ``s`` (from the program, fixed).
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
