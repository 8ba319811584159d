"""The Perfetto protobuf form of a trace (``infsim run --trace OUT.pftrace``): the events of
:func:`infsim.trace.trace_events` written as Perfetto ``TracePacket`` s with the ``perfetto`` package's trace
builder (``perfetto.trace_builder.proto_builder``: offline, no trace processor; the optional extra
``infsim[perfetto]``, on ``protobuf``). ui.perfetto.dev opens it without converting the JSON first.

Mapping (one packet sequence): a process track per ``pid`` and a thread track per ``(pid, tid)``, named from the
``process_name`` / ``thread_name`` metadata events; each complete event (``ph: 'X'``) a slice
(``TYPE_SLICE_BEGIN`` / ``TYPE_SLICE_END``) with its category and its ``args`` as debug annotations; each
counter event (``ph: 'C'``) a value on a counter track per (process, counter name); each flow arrow (``ph: 's'``
/ ``'f'``) a flow id on the slice it leaves from and a terminating flow id on the slice it enters (on its track,
the last slice that began at or before the arrow's time). Timestamps are integer nanoseconds (the JSON's
microseconds x 1000, rounded). ``.pftrace.gz`` compresses it (the UI reads gzip). Any other suffix writes the
JSON trace-event format (the default, and what to use without the extra); :func:`read_pftrace` parses a written
file back.

Left out: the JSON's ``otherData`` (chip, total time, sampled layers: no place for them in the protobuf
trace) and the sort-index metadata (tracks keep the order of their pids and tids).
"""

from __future__ import annotations

import bisect
import io
from pathlib import Path
from typing import Any

#: suffixes written in the protobuf format
SUFFIXES = (".pftrace", ".perfetto-trace")
_SEQ = 1  # the one trusted packet sequence
# TrackEvent.Type values (perfetto_trace.proto)
_BEGIN, _END, _COUNTER = 1, 2, 4


def is_proto_path(path: str | Path) -> bool:
    """Whether ``path`` names a Perfetto protobuf trace (:data:`SUFFIXES`, also followed by ``.gz``)."""
    p = Path(path)
    return (p.suffix if p.suffix != ".gz" else Path(p.stem).suffix) in SUFFIXES


def _annotate(te: Any, args: dict[str, Any]) -> None:
    for k, v in args.items():
        a = te.debug_annotations.add()
        a.name = str(k)
        if isinstance(v, bool):
            a.bool_value = v
        elif isinstance(v, int):
            a.int_value = v
        elif isinstance(v, float):
            a.double_value = v
        else:
            a.string_value = str(v)


def _ns(ts_us: float) -> int:
    return int(round(ts_us * 1000.0))


def to_proto(events: list[dict[str, Any]], flag: str = "--trace") -> bytes:
    """The serialized Perfetto ``Trace`` of trace events (see the module docstring); a one-line error naming
    ``flag`` and the extra when the ``perfetto`` package is missing (:func:`infsim.extras.require`)."""
    from infsim.extras import require

    builder = require("perfetto.trace_builder.proto_builder", f"{flag} with a {' or '.join(SUFFIXES)} path (a "
                      ".json or .json.gz path needs nothing)")
    buf = io.BytesIO()
    b = builder.StreamingTraceProtoBuilder(buf)
    state = {"first": True}

    def packet(ts: int | None = None) -> Any:
        p = b.create_packet()
        p.trusted_packet_sequence_id = _SEQ
        if state["first"]:
            p.sequence_flags = 1  # SEQ_INCREMENTAL_STATE_CLEARED
            state["first"] = False
        if ts is not None:
            p.timestamp = ts
        return p

    names = {("p", int(e["pid"])) if e["name"] == "process_name" else ("t", int(e["pid"]), int(e["tid"])):
             str(e["args"]["name"]) for e in events if e.get("ph") == "M" and e.get("name") in
             ("process_name", "thread_name")}
    uuid: dict[Any, int] = {}
    for pid in sorted({int(e["pid"]) for e in events if "pid" in e}):
        uuid[("p", pid)] = len(uuid) + 1
        p = packet()
        p.track_descriptor.uuid = uuid[("p", pid)]
        p.track_descriptor.process.pid = pid
        p.track_descriptor.process.process_name = names.get(("p", pid), f"pid {pid}")
        b.write_packet(p)
    for pid, tid in sorted({(int(e["pid"]), int(e.get("tid", 0))) for e in events if e.get("ph") in ("X", "s", "f")}):
        uuid[("t", pid, tid)] = len(uuid) + 1
        p = packet()
        d = p.track_descriptor
        d.uuid, d.parent_uuid = uuid[("t", pid, tid)], uuid[("p", pid)]
        d.thread.pid, d.thread.tid = pid, tid
        d.thread.thread_name = names.get(("t", pid, tid), f"tid {tid}")
        b.write_packet(p)
    for pid, name, key, n_keys in sorted({(int(e["pid"]), str(e["name"]), k, len(e["args"])) for e in events
                                          if e.get("ph") == "C" for k in e["args"]}):
        uuid[("c", pid, name, key)] = len(uuid) + 1
        p = packet()
        d = p.track_descriptor
        d.uuid, d.parent_uuid = uuid[("c", pid, name, key)], uuid[("p", pid)]
        d.name = name if n_keys == 1 else f"{name} {key}"
        d.counter.SetInParent()
        b.write_packet(p)
    # the slices of each thread in time order, to bind the flow arrows to them
    slices = sorted((e for e in events if e.get("ph") == "X"), key=lambda e: _ns(e["ts"]))
    per_track: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for i, e in enumerate(slices):
        t = per_track.setdefault((int(e["pid"]), int(e.get("tid", 0))), ([], []))
        t[0].append(_ns(e["ts"]))
        t[1].append(i)
    flows: dict[tuple[str, int], list[int]] = {}
    for e in events:
        if e.get("ph") in ("s", "f"):
            starts, idx = per_track.get((int(e["pid"]), int(e.get("tid", 0))), ([], []))
            j = bisect.bisect_right(starts, _ns(e["ts"])) - 1
            if j >= 0:
                flows.setdefault((e["ph"], idx[j]), []).append(int(e["id"]))
    # every mark in time order; at one instant a slice's end before the next one's begin, except the end of a
    # slice of no duration (after its own begin), then the counters
    marks: list[tuple[int, int, int, str, dict[str, Any]]] = []
    for i, e in enumerate(slices):
        t0, t1 = _ns(e["ts"]), _ns(e["ts"] + e["dur"])
        marks.append((t0, 1, i, "B", e))
        marks.append((max(t0, t1), 0 if t1 > t0 else 2, i, "E", e))
    marks += [(_ns(e["ts"]), 3, n, "C", e) for n, e in enumerate(events) if e.get("ph") == "C"]
    marks.sort(key=lambda m: m[:3])
    for ts, _, i, kind, e in marks:
        if kind == "C":
            for key, v in e["args"].items():
                p = packet(ts)
                p.track_event.type = _COUNTER
                p.track_event.track_uuid = uuid[("c", int(e["pid"]), str(e["name"]), key)]
                p.track_event.double_counter_value = float(v)
                b.write_packet(p)
            continue
        p = packet(ts)
        te = p.track_event
        te.track_uuid = uuid[("t", int(e["pid"]), int(e.get("tid", 0)))]
        if kind == "E":
            te.type = _END
        else:
            te.type = _BEGIN
            te.name = str(e["name"])
            if e.get("cat"):
                te.categories.append(str(e["cat"]))
            _annotate(te, e.get("args", {}))
            te.flow_ids.extend(flows.get(("s", i), []))
            te.terminating_flow_ids.extend(flows.get(("f", i), []))
        b.write_packet(p)
    return buf.getvalue()


def read_pftrace(path: str | Path) -> Any:
    """A written protobuf trace (gzip-compressed or not) parsed back (a ``perfetto_trace_pb2.Trace``; needs the
    perfetto package)."""
    import gzip

    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace

    raw = Path(path).read_bytes()
    t = Trace()
    t.ParseFromString(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    return t
