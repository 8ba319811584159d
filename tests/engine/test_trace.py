"""Chrome/Perfetto traces: produced traces validate against the trace-event format rules, the
validator rejects malformed events, and the HBM counter track integrates to the bytes moved."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infsim.isa import DType, Program, hbm, make, psum, sbuf
from infsim.sim import simulate
from infsim.trace import bandwidth_steps, trace_events, validate_trace, write_trace


def _prog() -> Program:
    p = Program(2, 2)
    p.add_tensor("x", "bf16", (128, 512))
    for c in (0, 1):
        p.append(make("dma_copy", sbuf(128, 512, DType.bf16), hbm("x", 128, 512, DType.bf16), core=c, queue=2,
                      signals=[(f"l{c}", 1)]))
        p.append(make("matmul", psum(128, 512), sbuf(128, 128, DType.bf16), sbuf(128, 512, DType.bf16), core=c,
                      waits=[(f"l{c}", 1)], signals=[(f"m{c}", 1)]))
        p.append(make("activate", sbuf(128, 512, DType.bf16), psum(128, 512), func="exp", core=c,
                      waits=[(f"m{c}", 1)]))
    return p


@pytest.mark.parametrize("fidelity", ["cycle", "analytical"])
def test_trace_validates(tmp_path: Path, fidelity: str) -> None:
    r = simulate(_prog(), "inf2", trace=True, fidelity=fidelity)
    path = tmp_path / "t.json"
    write_trace(r, path)
    obj = json.loads(path.read_text())
    assert validate_trace(obj) == []
    ev = obj["traceEvents"]
    xs = [e for e in ev if e["ph"] == "X"]
    assert len(xs) == 6
    names = {(e["pid"], e["args"]["name"]) for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert (0, "dma2") in names and (1, "tensor") in names and (1, "scalar") in names
    if fidelity == "cycle":
        cs = [e for e in ev if e["ph"] == "C"]
        assert cs and all(e["name"].startswith("HBM") for e in cs)


def test_counter_integrates_to_bytes() -> None:
    r = simulate(_prog(), "inf2", trace=True)
    log = r.timeline.memory_log
    steps = bandwidth_steps([x for x in log if not x[4]])
    total = sum(v * (t1 - t0) / 1000.0 for (t0, v), (t1, _) in zip(steps, steps[1:]))
    assert total == pytest.approx(r.hbm_bytes_read, rel=1e-6)
    assert steps[-1][1] == 0.0


def test_memory_log_only_when_asked() -> None:
    """``memory_log=False`` keeps the per-instruction times (what the breakdown reads) without the HBM log."""
    full = simulate(_prog(), "inf2", trace=True)
    lean = simulate(_prog(), "inf2", trace=True, memory_log=False)
    assert full.timeline.memory_log and lean.timeline.memory_log is None
    assert (lean.timeline.start_ps == full.timeline.start_ps).all()
    assert (lean.timeline.end_ps == full.timeline.end_ps).all()
    assert lean.total_ps == full.total_ps and lean.hbm_bytes_read == full.hbm_bytes_read


def test_validator_rejects_bad_events() -> None:
    assert validate_trace({"nope": 1})
    assert validate_trace([{"ph": "X", "name": "a", "pid": 0, "tid": 0, "ts": 0}])  # no dur
    assert validate_trace([{"ph": "C", "name": "a", "pid": 0, "ts": 0, "args": {"v": "x"}}])
    assert validate_trace([{"ph": "X", "name": "a", "pid": 0, "tid": 0, "ts": -1, "dur": 1}])
    assert any("process_name" in m for m in validate_trace([{"ph": "X", "name": "a", "pid": 0, "tid": 0, "ts": 0,
                                                              "dur": 1}]))


def test_trace_needs_timeline() -> None:
    from infsim.errors import InfsimError

    with pytest.raises(InfsimError):
        trace_events(simulate(_prog(), "inf2"))


def test_cli_trace(tmp_path: Path) -> None:
    from infsim.isa.asm import print_program

    src = tmp_path / "p.s"
    src.write_text(print_program(_prog()))
    out = tmp_path / "o.json"
    res = subprocess.run([sys.executable, "-m", "infsim", "sim", str(src), "--trace", str(out), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert validate_trace(json.loads(out.read_text())) == []


def test_run_trace_is_gzip_named_by_layer_and_op(tmp_path) -> None:
    """``infsim run --trace OUT.json.gz``: valid trace-event JSON, gzip-compressed, slices named by layer and
    op class, DMA slices with bytes and queue, stall slices for semaphore waits, flow arrows, HBM counters."""
    from infsim.cli import main
    from infsim.trace import read_trace

    out = tmp_path / "t.json.gz"
    assert main(["run", "--model", "gpt2", "--context", "64", "--batch", "2", "--tp", "2", "--trace", str(out)]) == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    obj = read_trace(out)
    assert validate_trace(obj) == []
    ev = obj["traceEvents"]
    names = {e["name"] for e in ev if e["ph"] == "X"}
    assert {"L0 qkv", "L11 mlp_down", "L0 weight_stream", "head", "wait"} <= names
    dma = [e for e in ev if e["ph"] == "X" and e["cat"] == "dma"]
    assert all("bytes" in e["args"] and "queue" in e["args"] for e in dma)
    assert sum(e["args"]["bytes"] > 0 for e in dma) > len(dma) // 2
    assert any(e["ph"] == "s" for e in ev) and any(e["ph"] == "f" for e in ev)
    assert any(e["ph"] == "C" and e["name"] == "HBM read GB/s" for e in ev)
    assert obj["otherData"]["sampled_layers"] is None


@pytest.mark.parametrize("name", ["t.pftrace", "t.pftrace.gz"])
def test_run_trace_in_perfettos_protobuf_format_parses_back(tmp_path, name: str) -> None:
    """``--trace OUT.pftrace``: Perfetto's protobuf format (optional extra ``infsim[perfetto]``), parsed back
    with the package's own proto classes: every slice of the JSON trace of the same run (names, categories,
    args), every counter value and every flow arrow (each id leaves one slice and ends on another)."""
    pytest.importorskip("perfetto", reason="the optional extra infsim[perfetto] (in .[dev])")
    import infsim
    from infsim.trace import read_trace
    from infsim.trace_perfetto import read_pftrace

    infsim.run("inf2", "gpt2", context=64, trace=str(tmp_path / "t.json"))
    infsim.run("inf2", "gpt2", context=64, trace=str(tmp_path / name))
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    ev = read_trace(tmp_path / "t.json")["traceEvents"]
    pkts = read_pftrace(tmp_path / name).packet
    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in pkts if p.HasField("track_descriptor")}
    te = [p for p in pkts if p.HasField("track_event")]
    begins = [p.track_event for p in te if p.track_event.type == 1]
    assert sum(p.track_event.type == 2 for p in te) == len(begins) == sum(e["ph"] == "X" for e in ev)
    assert sorted(b.name for b in begins) == sorted(e["name"] for e in ev if e["ph"] == "X")
    assert {b.categories[0] for b in begins} == {e["cat"] for e in ev if e["ph"] == "X"}
    assert all(tracks[b.track_uuid].HasField("thread") for b in begins)
    dma = [b for b in begins if b.categories[0] == "dma"]
    assert dma and all({"bytes", "queue", "instruction"} <= {a.name for a in b.debug_annotations} for b in dma)
    counters = sorted(p.track_event.double_counter_value for p in te if p.track_event.type == 4)
    assert counters == sorted(float(v) for e in ev if e["ph"] == "C" for v in e["args"].values())
    out = [f for b in begins for f in b.flow_ids]
    end = [f for b in begins for f in b.terminating_flow_ids]
    assert out and sorted(out) == sorted(end) == sorted(e["id"] for e in ev if e["ph"] == "s")
    names = {d.thread.thread_name for d in tracks.values() if d.HasField("thread")}
    assert {"tensor", "vector"} <= names
    assert pkts[0].sequence_flags == 1 and all(p.trusted_packet_sequence_id == 1 for p in pkts)
    times = [p.timestamp for p in te]
    assert times == sorted(times)


def test_pftrace_without_the_package_is_a_clear_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import infsim
    from infsim.errors import InfsimError

    monkeypatch.setitem(sys.modules, "perfetto", None)  # as if the optional extra were not installed
    monkeypatch.setitem(sys.modules, "perfetto.trace_builder.proto_builder", None)
    with pytest.raises(InfsimError, match=r'^--trace with a \.pftrace .* needs perfetto, which is not installed: '
                                          r'pip install -e "\.\[perfetto\]"'):
        infsim.run("inf2", "gpt2", context=64, trace=str(tmp_path / "t.pftrace"))
    assert not (tmp_path / "t.pftrace").exists()


def test_trace_cap_samples_layers(tmp_path) -> None:
    import infsim
    from infsim.trace import read_trace

    out = tmp_path / "t.json"
    infsim.run("inf2", "gpt2", context=64, trace=str(out), trace_max_events=60_000)
    obj = read_trace(out)
    kept = obj["otherData"]["sampled_layers"]
    assert kept and kept[0] == 0 and kept[-1] == 11 and len(kept) < 12
    assert len(obj["traceEvents"]) <= 60_000  # the cap holds: slices, stalls, flows and counters together
    layers = {e["name"].split()[0] for e in obj["traceEvents"] if e["ph"] == "X" and e["name"].startswith("L")}
    assert layers == {f"L{k}" for k in kept}
    assert validate_trace(obj) == []


def test_trace_needs_cycle_fidelity() -> None:
    import infsim
    from infsim.errors import InfsimError

    with pytest.raises(InfsimError, match="--trace needs --fidelity cycle"):
        infsim.run("inf2", "gpt2", context=64, fidelity="analytical", trace="x.json")


def test_compare_trace_writes_both_chips(tmp_path) -> None:
    from infsim.cli import main
    from infsim.trace import read_trace

    cfg = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 4096}
    model = tmp_path / "tiny.json"
    model.write_text(json.dumps(cfg))
    out = tmp_path / "traces"
    assert main(["compare", "--target", "trn1", "--model", str(model), "--no-attribution", "--trace", str(out),
                 "--trace-workload", "decode:1:64", "--json"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["baseline-inf2.json.gz", "target-trn1.json.gz"]
    assert all(validate_trace(read_trace(out / f)) == [] for f in files)


def test_validate_flows() -> None:
    base = [{"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": "c"}}]
    assert validate_trace(base + [{"ph": "s", "name": "d", "pid": 0, "tid": 0, "ts": 0, "id": 1}])  # no 'f'
    assert validate_trace(base + [{"ph": "s", "name": "d", "pid": 0, "tid": 0, "ts": 0, "id": 1},
                                  {"ph": "f", "name": "d", "pid": 0, "tid": 0, "ts": 1, "id": 1}]) == []
