"""An independent check of a lowered program's synchronisation.

The lowering's contract: executing the program with any timing gives the result of executing it in
program order. :func:`find_races` verifies it: it computes, with vector clocks over the streams, which
instructions are guaranteed to have completed before each instruction starts (stream order plus
semaphore waits, assuming every instruction of a stream signals that stream's semaphore by one, as the
:class:`~.emit.Emitter` does), and reports every pair of instructions that touch overlapping on-chip
bytes or the same HBM tensor bytes, at least one of them writing, that are not ordered that way.
Quadratic in the worst case: meant for the small programs of tests.
"""

from __future__ import annotations

import numpy as np

from infsim.isa import Program, Space
from infsim.isa.opcodes import OPSPECS


def _addresses(ap, base: int) -> np.ndarray:  # noqa: ANN001
    """Exact byte addresses of every element (HBM: flat; on-chip: partition * 2^32 + byte)."""
    isz = ap.dtype.itemsize
    off = np.zeros(1, np.int64)
    for stride, size in ap.dims:
        off = (off[:, None] + stride * np.arange(size, dtype=np.int64)[None, :]).reshape(-1)
    off = off * isz + ap.offset
    if ap.space == Space.hbm:
        rows = np.arange(ap.partitions, dtype=np.int64) * ap.partition_stride * isz
        a = (rows[:, None] + off[None, :]).reshape(-1) + base
    else:
        parts = np.arange(ap.partition_start, ap.partition_start + ap.partitions, dtype=np.int64) << 32
        a = (parts[:, None] + off[None, :]).reshape(-1)
    return np.unique((a[:, None] + np.arange(isz, dtype=np.int64)[None, :]).reshape(-1))


def _regions(program: Program, idx: int, base: dict[str, int]) -> list[tuple[bool, tuple, np.ndarray]]:
    """(is_write, memory key, sorted byte addresses) for each operand of instruction idx."""
    ins = program[idx]
    out = []
    for slot, ap in zip(OPSPECS[ins.op].slots, ins.operands):
        if ap is None:
            continue
        if ap.space == Space.hbm:
            assert ap.tensor is not None  # an HBM access pattern names its tensor (AccessPattern checks it)
            chip = program.tensors[ap.tensor].chip
            out.append((slot.output, ("hbm", chip), _addresses(ap, base[ap.tensor])))
        else:
            out.append((slot.output, (ap.space.name, ins.core), _addresses(ap, 0)))
    return out


def find_races(program: Program, limit: int = 20) -> list[str]:
    n = len(program)
    rec = program.instr
    keys = sorted({(int(r["core"]), int(r["engine"]), int(r["queue"])) for r in rec})
    sidx = {k: i for i, k in enumerate(keys)}
    # the semaphore a stream signals first is its own (Emitter convention)
    sem_of_stream: dict[int, int] = {}
    for r in rec:
        s = sidx[(int(r["core"]), int(r["engine"]), int(r["queue"]))]
        if s not in sem_of_stream and int(r["ssem"][0]) >= 0:
            sem_of_stream[s] = int(r["ssem"][0])
    stream_of_sem = {v: k for k, v in sem_of_stream.items()}
    ns = len(keys)
    vc = np.zeros((n, ns), np.int64)  # counts of each stream complete before i starts
    count = np.zeros(ns, np.int64)
    last = [-1] * ns
    by_count: dict[tuple[int, int], int] = {}
    stream = np.zeros(n, np.int64)
    mycount = np.zeros(n, np.int64)
    for i, r in enumerate(rec):
        s = sidx[(int(r["core"]), int(r["engine"]), int(r["queue"]))]
        v = np.zeros(ns, np.int64)
        if last[s] >= 0:
            v = np.maximum(v, vc[last[s]])
            v[s] = max(v[s], mycount[last[s]])
        for sem, val in zip(r["wsem"], r["wval"]):
            if int(sem) < 0 or int(val) == 0:
                continue
            t = stream_of_sem.get(int(sem))
            if t is None:
                continue
            j = by_count.get((t, int(val)))
            if j is None:
                continue  # wait on a later instruction: program order cannot express it; skip
            v = np.maximum(v, vc[j])
            v[t] = max(v[t], int(val))
        count[s] += 1
        vc[i] = v
        stream[i] = s
        mycount[i] = count[s]
        by_count[(s, int(count[s]))] = i
        last[s] = i
    base = program.tensor_base()
    regs = [_regions(program, i, base) for i in range(n)]
    out: list[str] = []
    for i in range(n):
        for j in range(i):
            if stream[i] == stream[j] or vc[i][stream[j]] >= mycount[j]:
                continue  # j completes before i starts
            hit = None
            for wi, ki, ai in regs[i]:
                for wj, kj, aj in regs[j]:
                    if (wi or wj) and ki == kj and ai[0] <= aj[-1] and aj[0] <= ai[-1]:
                        common = np.intersect1d(ai, aj, assume_unique=True)
                        if len(common):
                            hit = (ki, int(common[0]))
                            break
                if hit:
                    break
            if hit:
                ki, a = hit
                where = f"byte {a}" if ki[0] == "hbm" else f"partition {a >> 32} byte {a & 0xFFFFFFFF}"
                out.append(
                    f"race: instruction {j} ({program[j].op.name}) and {i} ({program[i].op.name}) on {ki} {where}"
                )
            if len(out) >= limit:
                return out
    return out
