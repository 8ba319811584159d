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

With the lowering's tags (:func:`write_trace` ``tags=(op_class, layer)``, as ``infsim run --trace`` passes
them) slices are named by layer and op (``L3 mlp_up``, opcode in ``args``), DMA slices carry their bytes and
queue, an instruction that waited on a semaphore after its engine was free gets a ``wait`` slice (category
``stall``) before it, and each wait that another track's instruction satisfied is a flow arrow from that
instruction to the waiting one (``ph: 's'/'f'``). A ``links GB/s`` counter per chip comes from the
collectives' link bytes. ``max_events`` caps the size: beyond it only some layers are kept (the first,
the last and evenly spaced ones between, plus everything outside the layers; ``otherData.sampled_layers``
says which). A path ending in ``.gz`` is written gzip-compressed.

A path ending in ``.pftrace`` (or ``.perfetto-trace``) is written in Perfetto's protobuf format instead, the
same events as track events (:mod:`infsim.trace_perfetto`; needs the optional extra ``infsim[perfetto]``); the
JSON trace-event format, checked by :func:`validate_trace`, is the default and the fallback without it (ui.perfetto.dev
and chrome://tracing open both). Left out: per-byte HBM bank activity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.errors import InfsimError
from infsim.isa.opcodes import Engine, Op
from infsim.isa.program import Program
from infsim.result import SimResult

CHIP_PID_BASE = 1_000_000


def _track_name(engine: int, queue: int) -> str:
    e = Engine(engine).name
    return f"{e}{queue}" if engine in (int(Engine.dma), int(Engine.cc)) else e


def _tid(engine: int, queue: int) -> int:
    return engine * 256 + queue


#: default cap on the events of one trace (~150 bytes each as JSON, ~10x less gzip-compressed)
MAX_EVENTS = 1_000_000


def _sample_layers(layer: np.ndarray, per_layer: int, budget: int) -> tuple[np.ndarray, list[int] | None]:
    """Which instructions to keep so that about ``budget`` remain: all, or those outside the layers and of a
    subset of layers (first, last, evenly spaced between). Returns (mask, kept layers or None for all)."""
    layers = np.unique(layer[layer >= 0])
    if per_layer * len(layer) <= budget or not len(layers):
        return np.ones(len(layer), bool), None
    outside = int((layer < 0).sum())
    per = max(1, int((layer >= 0).sum()) // len(layers))
    k = max(min(2, len(layers)), min(len(layers), (budget // per_layer - outside) // per))
    keep = sorted({int(layers[round(i * (len(layers) - 1) / max(k - 1, 1))]) for i in range(k)})
    return (layer < 0) | np.isin(layer, keep), keep


def trace_events(result: SimResult, cores_per_chip: int = 1, *, program: Program | None = None,
                 tags: tuple[np.ndarray, np.ndarray] | None = None, chip: ChipConfig | None = None,
                 max_events: int | None = None, info: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The trace events of ``result`` (which must come from ``simulate(..., trace=True)``). With ``program``
    (and ``tags``: per-instruction op class and layer codes) the slices are named, DMA bytes, stalls and
    flows added (see the module docstring); ``chip`` adds the links counter; ``info`` receives what was
    sampled."""

    tl = result.timeline
    if tl is None:
        raise InfsimError("no timeline in this result: simulate with trace=True")
    n = len(tl.start_ps)
    cap = MAX_EVENTS if max_events is None else max_events
    budget = cap // (4 if program is not None else 1)  # instructions: a slice, a stall, ~1.5 flows (2 events each)
    for _ in range(3):  # an estimate of the events per instruction, then at most two corrections of it
        keep = np.ones(n, bool)
        sampled = None
        if tags is not None:
            keep, sampled = _sample_layers(tags[1], 1, budget)
        elif n > budget:  # no layers to sample by: the first instructions in time
            keep = np.zeros(n, bool)
            keep[np.argsort(tl.start_ps, kind="stable")[: max(1, budget)]] = True
            sampled = []
        ev = _events(result, keep, program, tags, chip)
        if len(ev) <= cap or (sampled is not None and tags is not None and len(sampled) <= 2):
            break
        # slices, stalls, flows and counters per kept instruction, as measured: the budget that fits the cap
        budget = max(1, int(int(keep.sum()) * cap / len(ev) * 0.97))
    if info is not None:
        info["sampled_layers"] = sampled
        info["instructions"] = int(keep.sum())
    return ev


def _events(result: SimResult, keep: np.ndarray, program: Program | None,
            tags: tuple[np.ndarray, np.ndarray] | None, chip: ChipConfig | None) -> list[dict[str, Any]]:
    """The events of the instructions in ``keep`` (and every counter): see :func:`trace_events`."""
    from infsim.models.lower.tags import OP_CLASS_NAMES

    tl = result.timeline
    assert tl is not None
    n = len(tl.start_ps)
    ev: list[dict[str, Any]] = []
    cores = sorted({k[0] for k in tl.streams})
    for c in cores:
        ev.append({"ph": "M", "name": "process_name", "pid": c, "tid": 0, "args": {"name": f"core {c}"}})
        ev.append({"ph": "M", "name": "process_sort_index", "pid": c, "tid": 0, "args": {"sort_index": c}})
    op_names = [o.name for o in Op]
    ins = program.instr if program is not None else None
    dma_bytes = np.asarray(result.costs.dma_bytes) if (result.costs is not None and program is not None) else None
    track_of = np.zeros(n, dtype=np.int64)  # (pid << 20) | tid of every instruction, for flows
    occ_of = np.zeros(n, dtype=np.int64)
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
        track_of[idx] = (core << 20) | tid
        occ_of[idx] = occ
        prev_free = np.concatenate([[0], occ[:-1]])  # when the engine finished the previous instruction
        waits = (ins["wsem"][idx] >= 0).any(axis=1) if ins is not None else np.zeros(len(idx), bool)
        cat = Engine(eng).name
        algs = result.collective_algorithm
        for j, (i, s, o, e, op) in enumerate(zip(idx.tolist(), starts.tolist(), occ.tolist(), ends.tolist(),
                                                ops.tolist())):
            if not keep[i]:
                continue
            args: dict[str, Any] = {"instruction": i, "done_ns": e / 1e3}
            if i in algs:
                args["algorithm"] = algs[i]
            name = op_names[op]
            if tags is not None:
                k, layer = int(tags[0][i]), int(tags[1][i])
                cls = OP_CLASS_NAMES[k] if k < len(OP_CLASS_NAMES) else "untagged"
                name = f"L{layer} {cls}" if layer >= 0 else cls
                args["opcode"] = op_names[op]
            if dma_bytes is not None and eng == int(Engine.dma):
                args["bytes"] = int(dma_bytes[i])
                args["queue"] = q
            if waits[j] and s > prev_free[j]:
                ev.append({"ph": "X", "name": "wait", "cat": "stall", "pid": core, "tid": tid,
                           "ts": prev_free[j] / 1e6, "dur": (s - prev_free[j]) / 1e6,
                           "args": {"for_instruction": i, "waits": _waits(ins, i)}})
            ev.append({"ph": "X", "name": name, "cat": cat, "pid": core, "tid": tid, "ts": s / 1e6,
                       "dur": (o - s) / 1e6, "args": args})
    if program is not None:
        ev.extend(_flows(program, tl, keep, track_of))
    if tl.memory_log:
        chips = sorted({rec[0] for rec in tl.memory_log})
        for chip_i in chips:
            pid = CHIP_PID_BASE + chip_i
            ev.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                       "args": {"name": f"chip {chip_i} HBM"}})
            ev.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                       "args": {"sort_index": CHIP_PID_BASE + chip_i}})
            for is_write, label in ((False, "HBM read GB/s"), (True, "HBM write GB/s")):
                recs = [r for r in tl.memory_log if r[0] == chip_i and r[4] == is_write and r[2] > r[1]]
                for t, v in bandwidth_steps(recs):
                    ev.append({"ph": "C", "name": label, "pid": pid, "tid": 0, "ts": t / 1e6,
                               "args": {"GB/s": v}})
    if program is not None and chip is not None and result.costs is not None:
        ev.extend(_link_counter(program, tl, result.costs, chip))
    return ev


def _waits(ins: Any, i: int) -> list[list[int]]:
    return [[int(s), int(v)] for s, v in zip(ins["wsem"][i], ins["wval"][i]) if s >= 0]


def _flows(program: Program, tl: Any, keep: np.ndarray, track_of: np.ndarray) -> list[dict[str, Any]]:
    """Flow arrows: for every semaphore wait of a kept instruction, from the instruction whose signal satisfied
    it (the first signal in completion order that brings the count to the awaited value) when that one runs
    on another track."""
    ins = program.instr
    n = len(ins)
    ss, sv = ins["ssem"].astype(np.int64), ins["sval"].astype(np.int64)
    rows, cols = np.nonzero(ss >= 0)
    if not len(rows):
        return []
    sem = ss[rows, cols]
    inc = sv[rows, cols]
    end = tl.end_ps[rows]
    order = np.lexsort((rows, end, sem))
    sem, inc, rows = sem[order], inc[order], rows[order]
    cum = np.cumsum(inc)
    first = np.searchsorted(sem, sem, side="left")
    base = np.concatenate([[0], cum])[first]
    cum_in_sem = cum - base
    key = (sem << 32) | cum_in_sem
    wr, wc = np.nonzero(ins["wsem"] >= 0)
    sel = keep[wr]
    wr, wc = wr[sel], wc[sel]
    want = (ins["wsem"][wr, wc].astype(np.int64) << 32) | ins["wval"][wr, wc].astype(np.int64)
    pos = np.searchsorted(key, want, side="left")
    ok = pos < len(key)
    ok[ok] &= (key[pos[ok]] >> 32) == (want[ok] >> 32)
    out: list[dict[str, Any]] = []
    fid = 0
    for w, p in zip(wr[ok].tolist(), pos[ok].tolist()):
        src = int(rows[p])
        if src >= n or not keep[src] or track_of[src] == track_of[w]:
            continue
        fid += 1
        ts, tw = track_of[src], track_of[w]
        out.append({"ph": "s", "name": "dependency", "cat": "flow", "id": fid, "pid": int(ts >> 20),
                    "tid": int(ts & 0xFFFFF), "ts": float(tl.end_ps[src]) / 1e6 - 1e-6})
        out.append({"ph": "f", "bp": "e", "name": "dependency", "cat": "flow", "id": fid, "pid": int(tw >> 20),
                    "tid": int(tw & 0xFFFFF), "ts": float(tl.start_ps[w]) / 1e6})
    return out


def _link_counter(program: Program, tl: Any, costs: Any, chip: ChipConfig) -> list[dict[str, Any]]:
    """``links GB/s`` of chip 0: each collective's link bytes (the collective model's) over its duration."""
    from infsim.engine.collectives import make_collectives

    ins = program.instr
    coll_ops = [int(o) for o in (Op.all_reduce, Op.all_gather, Op.reduce_scatter)]
    idx = np.flatnonzero(np.isin(ins["op"], coll_ops) & (ins["core"] == 0))
    if not len(idx):
        return []
    model = make_collectives(chip)
    groups = list(program.groups)
    recs = []
    for i in idx.tolist():
        members = tuple(program.groups[groups[int(ins["i0"][i])]])
        _, link_b = model.duration_ps(Op(int(ins["op"][i])), members, int(costs.cc_src_bytes[i]),
                                      int(costs.cc_dst_bytes[i]), program.cores_per_chip)
        s, e = int(tl.start_ps[i]), int(tl.occ_end_ps[i])
        if e > s and link_b > 0:
            recs.append((0, s, e, int(link_b), False))
    pid = CHIP_PID_BASE + 1000
    ev: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "links (all chips)"}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}}]
    for t, v in bandwidth_steps(recs):
        ev.append({"ph": "C", "name": "links GB/s", "pid": pid, "tid": 0, "ts": t / 1e6, "args": {"GB/s": v}})
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


def write_trace(result: SimResult, path: str | Path, *, program: Program | None = None,
                tags: tuple[np.ndarray, np.ndarray] | None = None, chip: ChipConfig | None = None,
                max_events: int | None = None, flag: str = "trace") -> dict[str, Any]:
    """Write the Chrome/Perfetto JSON trace of ``result`` to ``path`` (gzip-compressed when it ends in ``.gz``;
    Perfetto's protobuf format when it ends in ``.pftrace``, :mod:`infsim.trace_perfetto`; whole or not at all,
    an error naming ``flag`` and the path, :func:`infsim.userfiles.write_output`); the other keyword arguments
    as for :func:`trace_events`. Returns what was written (events, sampled layers)."""
    from infsim.trace_perfetto import is_proto_path, to_proto
    from infsim.userfiles import write_output

    info: dict[str, Any] = {}
    events = trace_events(result, program=program, tags=tags, chip=chip, max_events=max_events, info=info)
    other = {"chip": result.chip, "total_ns": result.total_ns, "fidelity": result.fidelity, **info}
    if info.get("sampled_layers") is not None:
        other["note"] = ("sampled: only the layers in sampled_layers (and everything outside the layers) are "
                         "shown, to keep the trace under max_events")
    if is_proto_path(path):
        data = to_proto(events, flag)
    else:
        obj = {"traceEvents": events, "displayTimeUnit": "ns", "otherData": other}
        data = json.dumps(obj, separators=(",", ":")).encode()
    if Path(path).suffix == ".gz":
        import gzip

        data = gzip.compress(data, compresslevel=6)
    write_output(path, data, flag)
    return {"events": len(events), **info, "bytes": len(data)}


def read_trace(path: str | Path) -> Any:
    """A trace written by :func:`write_trace` (gzip or plain JSON) as a Python object."""
    import gzip

    raw = Path(path).read_bytes()
    return json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


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
    flows: dict[Any, list[str]] = {}
    for n, e in enumerate(events):
        where = f"event {n}"
        if not isinstance(e, dict):
            problems.append(f"{where}: not an object")
            continue
        for key in ("ph", "name", "pid"):
            if key not in e:
                problems.append(f"{where}: missing '{key}'")
        ph = e.get("ph")
        if ph not in ("X", "C", "M", "B", "E", "i", "I", "s", "t", "f"):
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
        elif ph in ("s", "t", "f"):
            if "id" not in e or "tid" not in e:
                problems.append(f"{where}: flow event needs 'id' and 'tid'")
            else:
                flows.setdefault(e["id"], []).append(ph)
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
    for fid, phs in flows.items():
        if phs.count("s") != 1 or phs.count("f") != 1:
            problems.append(f"flow id {fid}: needs one 's' and one 'f' event, has {phs}")
    for pid, tid in sorted(used, key=str):
        if pid not in named_pids:
            problems.append(f"pid {pid} has events but no process_name")
        if (pid, tid) not in named_tids:
            problems.append(f"track pid {pid} tid {tid} has events but no thread_name")
    return problems
