"""An independent check of a lowered program's synchronisation.

The lowering's contract: executing the program with any timing gives the result of executing it in
program order. :func:`find_races` verifies it: it computes, with vector clocks over the streams, which
instructions are guaranteed to have completed before each instruction starts, and reports every pair of
instructions that touch overlapping on-chip bytes or the same HBM tensor bytes, at least one of them
writing, that are not ordered that way.

What orders two instructions (the ISA's rules, :mod:`infsim.isa.program`):

* program order within a stream (a stream executes in order);
* a wait ``(s, v)`` on a semaphore that exactly one stream ``t`` signals: signals of a stream are applied
  in program order, so ``s >= v`` means the first instruction of ``t`` whose signals bring ``s``'s
  running total to ``v`` has completed, and with it everything that instruction was ordered after.

Waits on a semaphore that several streams signal (or that a ``barrier`` counts on) order nothing here
(their value does not name one instruction), and neither do waits whose signalling instruction comes
later in program order (program order cannot express them). Both are conservative: they can only report
a race that timing might still avoid, never miss one. Quadratic in the worst case: meant for the small
programs of tests.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from infsim.isa import Op, Program, Space
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
    a = np.sort((a[:, None] + np.arange(isz, dtype=np.int64)[None, :]).reshape(-1))
    return a[np.concatenate(([True], a[1:] != a[:-1]))]  # unique (np.unique's hash path: ~100x slower)


def _first_common(a: np.ndarray, b: np.ndarray) -> int | None:
    """The lowest value in both sorted, duplicate-free arrays (None if none)."""
    if len(a) > len(b):
        a, b = b, a
    k = np.minimum(np.searchsorted(b, a), len(b) - 1)
    hit = np.flatnonzero(b[k] == a)
    return int(a[hit[0]]) if len(hit) else None


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


def _wait_targets(program: Program, stream: np.ndarray) -> dict[int, tuple[int, list[int], list[int]]]:
    """Per semaphore signalled by exactly one stream (and no barrier): (stream, running totals of its
    signals, signalling instruction indices), in program order."""
    rec = program.instr
    signallers: dict[int, set[int]] = {}
    for i, r in enumerate(rec):
        for sem in r["ssem"]:
            if int(sem) >= 0:
                signallers.setdefault(int(sem), set()).add(int(stream[i]))
        if int(r["op"]) == int(Op.barrier):
            signallers.setdefault(int(r["i0"]), set()).update((-1, -2))  # arrivals of several streams
    out: dict[int, tuple[int, list[int], list[int]]] = {
        s: (next(iter(t)), [], []) for s, t in signallers.items() if len(t) == 1
    }
    for i, r in enumerate(rec):
        for sem, inc in zip(r["ssem"], r["sval"]):
            e = out.get(int(sem))
            if e is not None:
                e[1].append((e[1][-1] if e[1] else 0) + int(inc))
                e[2].append(i)
    return out


def find_races(program: Program, limit: int = 20) -> list[str]:
    """Unordered conflicting accesses of ``program`` (at most ``limit`` messages; module docstring)."""
    n = len(program)
    rec = program.instr
    keys = sorted({(int(r["core"]), int(r["engine"]), int(r["queue"])) for r in rec})
    sidx = {k: i for i, k in enumerate(keys)}
    stream = np.array([sidx[(int(r["core"]), int(r["engine"]), int(r["queue"]))] for r in rec], np.int64)
    targets = _wait_targets(program, stream)
    ns = len(keys)
    vc = np.zeros((n, ns), np.int64)  # instructions of each stream (a prefix) complete before i starts
    count = np.zeros(ns, np.int64)
    last = [-1] * ns
    pos = np.zeros(n, np.int64)  # position of each instruction in its stream, from 1
    for i, r in enumerate(rec):
        s = int(stream[i])
        v = np.zeros(ns, np.int64)
        if last[s] >= 0:
            v = np.maximum(v, vc[last[s]])
            v[s] = max(v[s], pos[last[s]])
        for sem, val in zip(r["wsem"], r["wval"]):
            tgt = targets.get(int(sem))
            if int(sem) < 0 or int(val) == 0 or tgt is None:
                continue
            t, totals, where = tgt
            k = bisect_left(totals, int(val))
            if k == len(totals):
                continue  # signalled later in program order: program order cannot express it; skip
            j = where[k]
            v = np.maximum(v, vc[j])
            v[t] = max(v[t], pos[j])
        count[s] += 1
        vc[i] = v
        pos[i] = count[s]
        last[s] = i
    base = program.tensor_base()
    regs = [_regions(program, i, base) for i in range(n)]
    # per instruction and memory: (written, lowest, highest byte): most pairs share no memory (other cores'
    # SBUF/PSUM) or disjoint ranges, and are rejected here without comparing addresses
    spans: list[dict[tuple, tuple[bool, int, int]]] = []
    for rg in regs:
        sp: dict[tuple, tuple[bool, int, int]] = {}
        for w, mem, addr in rg:
            w0, lo0, hi0 = sp.get(mem, (False, int(addr[0]), int(addr[-1])))
            sp[mem] = (w0 or w, min(lo0, int(addr[0])), max(hi0, int(addr[-1])))
        spans.append(sp)
    out: list[str] = []
    for i in range(n):
        si = spans[i]
        # the earlier instructions of other streams that are not known complete before i starts
        unordered = (stream[:i] != stream[i]) & (vc[i][stream[:i]] < pos[:i])
        for j in map(int, np.flatnonzero(unordered)):
            if not any((wi or sj[0]) and lo <= sj[2] and sj[1] <= hi
                       for mem, (wi, lo, hi) in si.items() if (sj := spans[j].get(mem)) is not None):
                continue  # no memory in common that one of them writes, or disjoint byte ranges
            hit = None
            for wi, ki, ai in regs[i]:
                for wj, kj, aj in regs[j]:
                    if (wi or wj) and ki == kj and ai[0] <= aj[-1] and aj[0] <= ai[-1]:
                        common = _first_common(ai, aj)
                        if common is not None:
                            hit = (ki, common)
                            break
                if hit:
                    break
            if hit:
                ki, a = hit
                loc = f"byte {a}" if ki[0] == "hbm" else f"partition {a >> 32} byte {a & 0xFFFFFFFF}"
                out.append(
                    f"race: instruction {j} ({program[j].op.name}) and {i} ({program[i].op.name}) on {ki} {loc}"
                )
            if len(out) >= limit:
                return out
    return out
