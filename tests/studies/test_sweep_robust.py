"""Sweeps and searches under failure (issue 16): every failing point is a row, a crashed worker loses no
row, two writers on one folder, damaged part files, option and spec bounds, and search resumes that would
mix objectives or axes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import infsim.runner
from infsim.errors import InfsimError
from infsim.studies.folder import FolderBusyError, folder_lock
from infsim.studies.pool import run_batches
from infsim.studies.sweep import RESULT_FIELDS, SweepError, load_results, load_spec, run_sweep, tasks

GPT2_DECODE = {"model": "gpt2", "phase": "decode", "batch": 1, "context": 128, "tp": 1}
# how the fake step below fails, by HBM bandwidth (every value is a valid chip)
FAILURES = {401: "infsim", 402: "value", 403: "key", 404: "segv", 405: "exit", 406: "abort"}
SPEC: dict[str, Any] = {
    "base": "inf2",
    "axes": {"hbm.bandwidth_gbps": [400, *FAILURES, 1600], "tensor_engine.clock_ghz": [1.4, 2.8]},
    "workloads": [GPT2_DECODE],
}


class _FakeResult:
    def __init__(self, gbps: float) -> None:
        self.gbps = gbps

    def to_dict(self) -> dict[str, float]:
        return {k: self.gbps for k in RESULT_FIELDS}


def _fake_step(cfg: Any, model: Any, wl: Any, **kw: Any) -> _FakeResult:
    """A step that fails in every way a point can: an input error, two bugs, and three process deaths."""
    how = FAILURES.get(int(cfg.hbm.bandwidth_gbps))
    if how == "infsim":
        raise InfsimError("bad point")
    if how == "value":
        raise ValueError("range() arg 3 must not be zero")
    if how == "key":
        raise KeyError("int32")
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "exit":
        os._exit(3)
    if how == "abort":
        os.abort()
    return _FakeResult(cfg.hbm.bandwidth_gbps)


@pytest.mark.parametrize("workers,batch_size", [(1, 4), (2, 3), (3, 1)])
def test_every_failure_is_one_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int,
                                  batch_size: int) -> None:
    monkeypatch.setattr(infsim.runner, "run_workload", _fake_step)  # the forked workers inherit it
    df = run_sweep(SPEC, tmp_path, workers=workers, batch_size=batch_size)
    keys = {t["key"] for t in tasks(load_spec(SPEC))}
    assert len(df) == len(keys) == 16 and set(df["key"]) == keys and df["key"].is_unique
    by_gbps = {g: grp for g, grp in df.groupby("axis.hbm.bandwidth_gbps")}
    for g in (400, 1600):
        assert (by_gbps[g]["status"] == "ok").all() and (by_gbps[g]["latency_ms"] == g).all()
    expect = {401: "^bad point$", 402: r"^internal error .*ValueError: range\(\) arg 3 must not be zero",
              403: r"^internal error .*KeyError: 'int32'", 404: r"died \(killed by signal SIGSEGV\)",
              405: r"died \(exited with status 3\)", 406: r"died \(killed by signal SIGABRT\)"}
    for g, pattern in expect.items():
        rows = by_gbps[g]
        assert (rows["status"] == "error").all() and rows["latency_ms"].isna().all()
        assert rows["error"].str.contains(pattern).all(), rows["error"].tolist()
    parts = sorted((tmp_path / "parts").iterdir())
    again = run_sweep(SPEC, tmp_path, workers=workers, batch_size=batch_size)  # resume: nothing to do
    assert sorted((tmp_path / "parts").iterdir()) == parts and len(again) == 16


def test_real_failing_points_are_rows(tmp_path: Path) -> None:
    """Observed in issue 16: an int32 workload (``KeyError`` in the analytical model) ended the sweep and
    threw away the finished rows."""
    spec = {"base": "inf2", "axes": {"hbm.bandwidth_gbps": [800, 1600]},
            "workloads": [GPT2_DECODE, {**GPT2_DECODE, "dtype": "int32"}]}
    df = run_sweep(spec, tmp_path, workers=2, batch_size=1)
    assert len(df) == 4
    assert (df[df["wl.dtype"] == "bf16"]["status"] == "ok").all()
    bad = df[df["wl.dtype"] == "int32"]
    # weights without lowering kernels: the design cannot run it (infsim.feasibility), not a failure
    assert (bad["status"] == "infeasible").all() and (bad["limit"] == "dtype").all()
    assert bad["error"].str.contains("int32").all() and bad["latency_ms"].isna().all()
    assert not bad["error"].str.contains("internal error").any(), bad["error"].tolist()


def test_invalid_combination_is_a_row(tmp_path: Path) -> None:
    """Axis values valid one by one but not together (a PSUM bank smaller than 4 bytes) fail that point only."""
    spec = {"base": "inf2", "axes": {"psum.bytes_per_partition": [64, 16384], "psum.banks": [2, 32]},
            "workloads": [GPT2_DECODE]}
    df = run_sweep(spec, tmp_path, workers=1)
    assert len(df) == 4
    bad = df[(df["axis.psum.bytes_per_partition"] == 64) & (df["axis.psum.banks"] == 32)]
    assert len(bad) == 1 and bad["status"].item() == "error" and "PSUM bank" in bad["error"].item()
    assert (df.drop(bad.index)["status"] == "ok").all()


def test_pool_retries_a_crashed_batch_task_by_task() -> None:
    def fn(batch: list[dict]) -> list[dict]:
        if any(t["n"] == 5 for t in batch):
            os.kill(os.getpid(), signal.SIGKILL)
        return [{"n": t["n"], "pid": os.getpid()} for t in batch]

    rows: list[dict] = []
    batches = iter([[{"n": i}, {"n": i + 1}] for i in range(0, 12, 2)])
    run_batches(batches, fn, 2, rows.extend, lambda t, why: {"n": t["n"], "crash": why})
    assert sorted(r["n"] for r in rows) == list(range(12))
    crashed = [r for r in rows if "crash" in r]
    assert [r["n"] for r in crashed] == [5] and "SIGKILL" in crashed[0]["crash"]


# ---- damaged folders and concurrent writers ------------------------------------------------------
def _fast_spec(n: int = 4) -> dict[str, Any]:
    return {"base": "inf2", "axes": {"hbm.bandwidth_gbps": [400 + 100 * i for i in range(n)]},
            "workloads": [GPT2_DECODE]}


def test_corrupt_and_empty_parts_are_quarantined_and_recomputed(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    spec = _fast_spec()
    ref = run_sweep(spec, tmp_path, workers=1, batch_size=1)
    parts = sorted((tmp_path / "parts").glob("part-*.parquet"))
    parts[0].write_bytes(b"")  # empty
    parts[1].write_bytes(parts[1].read_bytes()[:100])  # truncated
    assert len(load_results(tmp_path)) == 2  # a reader skips them
    with caplog.at_level(logging.WARNING, logger="infsim"):
        df = run_sweep(spec, tmp_path, workers=1, batch_size=1)
    assert sum("computed again" in r.getMessage() for r in caplog.records) == 2
    assert len(list((tmp_path / "quarantine").iterdir())) == 2
    assert len(df) == 4 and df["key"].is_unique and (df["status"] == "ok").all()
    cols = ["key", "latency_ms"]
    pd.testing.assert_frame_equal(df.sort_values("key")[cols].reset_index(drop=True),
                                  ref.sort_values("key")[cols].reset_index(drop=True))


def test_second_writer_is_refused_with_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_fast_spec(2)))
    out = tmp_path / "out"
    with folder_lock(out, "the test"):
        with pytest.raises(FolderBusyError, match=r"--out .*out: in use by the test \(pid \d+"):
            run_sweep(str(spec), out, workers=1)
        proc = subprocess.run([sys.executable, "-m", "infsim", "sweep", str(spec), "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "in use by the test" in proc.stderr and "Traceback" not in proc.stderr
    assert run_sweep(str(spec), out, workers=1)["status"].eq("ok").all()  # free again afterwards


def test_two_sweeps_on_one_folder_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    spec = _fast_spec(8)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "infsim", "sweep", str(path), "--out", str(out), "--workers", "1",
           "--batch-size", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert all(rc == 0 or (rc == 1 and "in use by infsim sweep" in err) for rc, err in results), results
    assert any(rc == 0 for rc, _ in results)
    # whatever the interleaving, a third run completes the folder without recomputing or duplicating
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 8 and df["key"].is_unique and (df["status"] == "ok").all()
    raw = pd.concat([pd.read_parquet(p) for p in (out / "parts").glob("part-*.parquet")])
    assert raw["key"].is_unique  # no pair was computed twice
    assert not list(out.glob("**/.*.tmp"))


# ---- bounds on options and spec size -------------------------------------------------------------
@pytest.mark.parametrize("kw,match", [
    ({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
    ({"batch_size": -1}, "--batch-size must be >= 1, got -1"),
    ({"workers": -1}, "--workers must be >= 1, got -1"),
    ({"workers": 0}, "--workers must be >= 1, got 0"),
    ({"workers": 10000}, r"--workers 10000: at most \d+ \(4 per core"),
    ({"scheduler": "tcp://127.0.0.1:1"}, r"--scheduler tcp://127.0.0.1:1: cannot reach the dask scheduler"),
    ({"scheduler": "no-port"}, r"--scheduler no-port: expected an address like tcp://HOST:PORT"),
])
def test_bad_options_fail_fast(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(SweepError, match=match):
        run_sweep(_fast_spec(2), tmp_path / "out", **kw)
    assert time.perf_counter() - t0 < 15
    assert not (tmp_path / "out" / "parts").exists()


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 64])
def test_scheduler_address_of_a_server_that_is_not_dask(answer: bytes) -> None:
    """A web server on the port (silent until it gets a request) kept dask's Client waiting forever; one that
    answers made dask read a frame length of exabytes (MemoryError)."""
    import socket
    import threading

    from infsim.studies.sweep import _connect

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            if answer:
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(SweepError, match=rf"--scheduler tcp://127.0.0.1:{port}: not a dask scheduler or not "
                                             r"answering \(.+\)$"):
            _connect(f"tcp://127.0.0.1:{port}", timeout_s=1.0)
    finally:
        server.close()
        for c in conns:
            c.close()
    assert time.perf_counter() - t0 < 15


def test_huge_grid_is_refused_before_building_it(tmp_path: Path) -> None:
    axes = {f"energy.{f}": [float(i) for i in range(10)] for f in (
        "vector_op_pj", "scalar_op_pj", "sbuf_pj_per_byte", "psum_pj_per_byte", "hbm_pj_per_bit", "link_pj_per_bit",
        "static_w")}
    axes.update({f"links.{f}": [float(i) for i in range(10)] for f in (
        "latency_ns", "intra_chip_latency_ns", "collective_step_overhead_ns", "collective_launch_overhead_ns",
        "collective_reduce_gbps")})
    spec = {"base": "inf2", "axes": axes, "workloads": [GPT2_DECODE]}
    t0 = time.perf_counter()
    with pytest.raises(SweepError, match=r"1e\+12 \(design point, workload\) pairs .* above the limit of 100000 "
                                         r"\(--max-points\)"):
        run_sweep(spec, tmp_path)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(SweepError, match="above the limit of 3"):
        run_sweep(_fast_spec(4), tmp_path, max_pairs=3)


def test_plot_with_a_string_axis(tmp_path: Path) -> None:
    from infsim.studies.plots import plot_sweep

    spec = {"base": "inf2", "axes": {"links.topology": ["ring", "switch"], "hbm.bandwidth_gbps": [800, 1600]},
            "workloads": [GPT2_DECODE]}
    df = run_sweep(spec, tmp_path, workers=1)
    plot_sweep(df[df["status"] == "ok"], tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 1000


# ---- search ----------------------------------------------------------------------------------------
SEARCH_SPEC = {"base": "inf2", "axes": {"hbm.bandwidth_gbps": [800, 1600, 3200]}, "workloads": [GPT2_DECODE]}


def test_search_resume_with_other_objectives_or_axes_is_refused(tmp_path: Path) -> None:
    from infsim.studies.search import run_search

    objs = [("tokens_per_s", "max"), ("power_w", "min")]
    run_search(SEARCH_SPEC, tmp_path, 2, objs)
    with pytest.raises(SweepError, match=r"started with objectives tokens_per_s:max,power_w:min, not "
                                         r"tokens_per_s:max,energy_j:min"):
        run_search(SEARCH_SPEC, tmp_path, 3, [("tokens_per_s", "max"), ("energy_j", "min")])
    with pytest.raises(SweepError, match="started with objectives .* not tokens_per_s:max;"):
        run_search(SEARCH_SPEC, tmp_path, 3, [("tokens_per_s", "max")])
    other = {**SEARCH_SPEC, "axes": {"hbm.bandwidth_gbps": [800, 1600]}}
    with pytest.raises(SweepError, match="started with axes"):
        run_search(other, tmp_path, 3, objs)
    df = run_search(SEARCH_SPEC, tmp_path, 3, objs)  # the same search resumes
    assert list(df.columns) == ["hbm.bandwidth_gbps", "tokens_per_s", "power_w", "trial"]


def test_search_bad_inputs(tmp_path: Path) -> None:
    from infsim.studies.search import run_search

    objs = [("tokens_per_s", "max")]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "study.db").write_bytes(os.urandom(4096))
    with pytest.raises(SweepError, match=r"study.db: not a readable Optuna study"):
        run_search(SEARCH_SPEC, tmp_path / "bad", 1, objs)
    with pytest.raises(SweepError, match=r"--seed must be in 0\.\.4294967295"):
        run_search(SEARCH_SPEC, tmp_path / "s", 1, objs, seed=10**20)
    with pytest.raises(SweepError, match="--trials must be >= 1"):
        run_search(SEARCH_SPEC, tmp_path / "s", 0, objs)
