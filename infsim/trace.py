"""Chrome / Perfetto trace-event JSON of a simulation (``infsim sim --trace OUT.json``).

Layout (opens in ui.perfetto.dev and chrome://tracing):

* one *process* per core (``pid = core``, named ``core N``) with one *thread* (track) per stream:
  ``tensor``, ``vector``, ``scalar``, ``gpsimd``, ``sync``, ``dmaQ`` per DMA queue, ``ccQ`` per
  collective queue;
* one complete event (``ph: 'X'``) per instruction: ``ts`` = start, ``dur`` = engine occupancy (compute:
  the issue interval; DMA: until the data has moved; collectives: the whole operation); ``args`` hold
  the instruction index and its completion time (signals applied) in ns, and for a collective the
  algorithm it ran;
* one process per chip (``pid = 1_000_000 + chip``, named ``chip N HBM``) with counter events
  (``ph: 'C'``) ``HBM read GB/s`` and ``HBM write GB/s``: the exact step function of the bandwidth the
  memory model delivered (each transfer contributes ``bytes / duration`` over its data phase);
* metadata events (``ph: 'M'``) ``process_name``, ``thread_name`` and ``thread_sort_index``.

Timestamps are microseconds (the format's unit) with nanosecond precision; ``displayTimeUnit`` is ns.
:func:`validate_trace` checks a trace against the trace-event format rules used here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from infsim.errors import InfsimError
from infsim.isa.opcodes import Engine, Op
from infsim.result import SimResult

CHIP_PID_BASE = 1_000_000


def _track_name(engine: int, queue: int) -> str:
    e = Engine(engine).name
    return f"{e}{queue}" if engine in (int(Engine.dma), int(Engine.cc)) else e


def _tid(engine: int, queue: int) -> int:
    return engine * 256 + queue


def trace_events(result: SimResult, cores_per_chip: int = 1) -> list[dict[str, Any]]:
    """The trace events of ``result`` (which must come from ``simulate(..., trace=True)``)."""
    tl = result.timeline
    if tl is None:
        raise InfsimError("no timeline in this result: simulate with trace=True")
    ev: list[dict[str, Any]] = []
    cores = sorted({k[0] for k in tl.streams})
    for c in cores:
        ev.append({"ph": "M", "name": "process_name", "pid": c, "tid": 0, "args": {"name": f"core {c}"}})
        ev.append({"ph": "M", "name": "process_sort_index", "pid": c, "tid": 0, "args": {"sort_index": c}})
    op_names = [o.name for o in Op]
    for (core, eng, q), idx in tl.streams.items():
        tid = _tid(eng, q)
        ev.append({"ph": "M", "name": "thread_name", "pid": core, "tid": tid, "args": {"name": _track_name(eng, q)}})
        ev.append({"ph": "M", "name": "thread_sort_index", "pid": core, "tid": tid, "args": {"sort_index": tid}})
        starts = tl.start_ps[idx]
        occ = tl.occ_end_ps[idx]
        ends = tl.end_ps[idx]
        ops = tl.op[idx]
        # occupancy of consecutive instructions never overlaps on one engine; clip to be safe
        occ = np.minimum(occ, np.append(starts[1:], np.iinfo(np.int64).max))
        occ = np.maximum(occ, starts)
        algs = result.collective_algorithm
        for i, s, o, e, op in zip(idx.tolist(), starts.tolist(), occ.tolist(), ends.tolist(), ops.tolist()):
            args: dict[str, Any] = {"instruction": i, "done_ns": e / 1e3}
            if i in algs:
                args["algorithm"] = algs[i]
            ev.append({"ph": "X", "name": op_names[op], "cat": Engine(eng).name, "pid": core, "tid": tid,
                       "ts": s / 1e6, "dur": (o - s) / 1e6, "args": args})
    if tl.memory_log:
        chips = sorted({rec[0] for rec in tl.memory_log})
        for chip in chips:
            pid = CHIP_PID_BASE + chip
            ev.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"chip {chip} HBM"}})
            ev.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                       "args": {"sort_index": CHIP_PID_BASE + chip}})
            for is_write, label in ((False, "HBM read GB/s"), (True, "HBM write GB/s")):
                recs = [r for r in tl.memory_log if r[0] == chip and r[4] == is_write and r[2] > r[1]]
                for t, v in bandwidth_steps(recs):
                    ev.append({"ph": "C", "name": label, "pid": pid, "tid": 0, "ts": t / 1e6,
                               "args": {"GB/s": v}})
    return ev


def bandwidth_steps(records: list[tuple[int, int, int, int, bool]]) -> list[tuple[int, float]]:
    """Step function ``[(time_ps, GB/s), ...]`` of the summed rates of ``(chip, start, end, bytes, w)`` records."""
    if not records:
        return []
    t = np.array([(r[1], r[2]) for r in records], dtype=np.int64)
    rate = np.array([r[3] / (r[2] - r[1]) * 1000.0 for r in records])  # bytes/ps -> GB/s
    times = np.concatenate([t[:, 0], t[:, 1]])
    deltas = np.concatenate([rate, -rate])
    order = np.lexsort((deltas, times))
    times, deltas = times[order], deltas[order]
    uniq, first = np.unique(times, return_index=True)
    sums = np.add.reduceat(deltas, first)
    level = np.cumsum(sums)
    level[np.abs(level) < 1e-9] = 0.0
    return list(zip(uniq.tolist(), level.tolist()))


def write_trace(result: SimResult, path: str | Path, flag: str = "trace") -> None:
    """Write the Chrome/Perfetto JSON trace of ``result`` to ``path`` (whole or not at all; an error names
    ``flag`` and the path, :func:`infsim.userfiles.write_output`)."""
    from infsim.userfiles import write_output

    obj = {"traceEvents": trace_events(result), "displayTimeUnit": "ns",
           "otherData": {"chip": result.chip, "total_ns": result.total_ns, "fidelity": result.fidelity}}
    write_output(path, json.dumps(obj, separators=(",", ":")), flag)


def validate_trace(obj: Any) -> list[str]:
    """Problems of a trace object against the trace-event format (empty list: valid)."""
    problems: list[str] = []
    if isinstance(obj, dict):
        events = obj.get("traceEvents")
        if not isinstance(events, list):
            return ["top-level object has no 'traceEvents' list"]
    elif isinstance(obj, list):
        events = obj
    else:
        return ["trace must be a JSON object or array"]
    # ids as the file gives them (JSON values, not yet known to be integers)
    named_pids: set[Any] = set()
    named_tids: set[tuple[Any, Any]] = set()
    used: set[tuple[Any, Any]] = set()
    for n, e in enumerate(events):
        where = f"event {n}"
        if not isinstance(e, dict):
            problems.append(f"{where}: not an object")
            continue
        for key in ("ph", "name", "pid"):
            if key not in e:
                problems.append(f"{where}: missing '{key}'")
        ph = e.get("ph")
        if ph not in ("X", "C", "M", "B", "E", "i", "I"):
            problems.append(f"{where}: unknown phase {ph!r}")
            continue
        if ph != "M":
            if not isinstance(e.get("ts"), (int, float)) or e["ts"] < 0:
                problems.append(f"{where}: 'ts' must be a non-negative number")
        if ph == "X":
            if "tid" not in e:
                problems.append(f"{where}: 'X' event without 'tid'")
            if not isinstance(e.get("dur"), (int, float)) or e["dur"] < 0:
                problems.append(f"{where}: 'X' event needs a non-negative 'dur'")
            used.add((e.get("pid"), e.get("tid")))
        elif ph == "C":
            args = e.get("args")
            if not isinstance(args, dict) or not args or not all(isinstance(v, (int, float)) for v in args.values()):
                problems.append(f"{where}: 'C' event needs numeric 'args'")
        elif ph == "M":
            args = e.get("args")
            if e.get("name") in ("process_name", "thread_name"):
                if not isinstance(args, dict) or not isinstance(args.get("name"), str):
                    problems.append(f"{where}: metadata '{e.get('name')}' needs args.name")
                elif e["name"] == "process_name":
                    named_pids.add(e["pid"])
                else:
                    named_tids.add((e["pid"], e.get("tid")))
    for pid, tid in sorted(used, key=str):
        if pid not in named_pids:
            problems.append(f"pid {pid} has events but no process_name")
        if (pid, tid) not in named_tids:
            problems.append(f"track pid {pid} tid {tid} has events but no thread_name")
    return problems
