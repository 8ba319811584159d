"""Sweeps: spec errors, grid/random points, resume without duplicates, a real SIGKILL mid-sweep,
identical results on a dask LocalCluster, and the Optuna search resuming from its SQLite study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from infsim.studies.search import run_search
from infsim.studies.sweep import SweepError, load_spec, run_sweep, tasks

SPEC = {
    "base": "inf2",
    "axes": {"hbm.bandwidth_gbps": [400, 819.2, 1600, 3200], "tensor_engine.clock_ghz": [1.4, 2.8]},
    "workloads": [{"model": "gpt2", "phase": "decode", "batch": 2, "context": 256, "tp": 1},
                  {"model": "gpt2", "phase": "prefill", "batch": 1, "context": 128, "tp": 1}],
}
NUM = ["latency_ms", "tokens_per_s", "energy_j", "power_w", "hbm_bytes"]


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("key").reset_index(drop=True)[["key", *NUM]]


@pytest.mark.parametrize("bad,match", [
    ({**SPEC, "axes": {"hbm.no_such": [1]}}, "axes.hbm.no_such: no such field"),
    ({**SPEC, "axes": {"hbm.bandwith_gbps": [1]}}, r"axes\.hbm\.bandwith_gbps: .*did you mean hbm\.bandwidth_gbps"),
    ({**SPEC, "axes": {"hbm.bandwidth_gbps": [800, -1]}}, r"axes\.hbm\.bandwidth_gbps value -1: .*greater than 0"),
    ({**SPEC, "workloads": [{"model": "gpt2", "dtype": "bf17"}]}, r"workloads\.0: unknown dtype 'bf17'"),
    ({**SPEC, "workloads": [{"model": "gpt3"}]}, r"workloads\.0: .*gpt3"),
    ({**SPEC, "workloads": []}, "workloads"),
    ({**SPEC, "fidelity": "exact"}, "fidelity"),
    ({**SPEC, "axes": {"hbm.bandwidth_gbps": {"min": 1, "max": 2}}}, "needs 'random:'"),
])
def test_spec_errors_name_the_field(bad: dict, match: str) -> None:
    with pytest.raises(SweepError, match=match):
        load_spec(bad)


def test_random_points_are_seeded() -> None:
    spec = {**SPEC, "axes": {"hbm.bandwidth_gbps": {"min": 400, "max": 1600}}, "random": {"samples": 5, "seed": 3}}
    a = [t["key"] for t in tasks(load_spec(spec))]
    b = [t["key"] for t in tasks(load_spec(spec))]
    assert a == b and len(set(a)) == 10


def test_grid_sweep_and_resume(tmp_path: Path) -> None:
    df = run_sweep(SPEC, tmp_path, workers=1)
    assert len(df) == 16 and df["key"].is_unique and (df["error"] == "").all()
    assert set(df.columns) >= {"axis.hbm.bandwidth_gbps", "wl.model", "latency_ms", "power_w"}
    assert (tmp_path / "results.parquet").exists()
    parts = sorted((tmp_path / "parts").iterdir())
    again = run_sweep(SPEC, tmp_path, workers=2)
    assert sorted((tmp_path / "parts").iterdir()) == parts  # nothing recomputed
    pd.testing.assert_frame_equal(_canon(df), _canon(again))


def test_local_cluster_gives_identical_results(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    local = run_sweep(SPEC, tmp_path / "local", workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            dist = run_sweep(SPEC, tmp_path / "dask", scheduler=client)
        by_address = run_sweep(SPEC, tmp_path / "address", scheduler=cluster.scheduler_address)  # as --scheduler
    pd.testing.assert_frame_equal(_canon(local), _canon(dist))
    pd.testing.assert_frame_equal(_canon(local), _canon(by_address))


def test_sigkill_mid_sweep_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    spec = {**SPEC, "axes": {"hbm.bandwidth_gbps": list(range(300, 3300, 100)),
                             "tensor_engine.clock_ghz": [1.4, 2.8]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "infsim", "sweep", str(path), "--out", str(out), "--workers", "1", "--batch-size", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "parts").glob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_parts = len(list((out / "parts").glob("part-*.parquet")))
    assert n_parts >= 2
    total = len(tasks(load_spec(spec)))
    assert n_parts * 4 < total  # it really was interrupted
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == total and df["key"].is_unique
    ref = run_sweep(spec, tmp_path / "ref", workers=1)
    pd.testing.assert_frame_equal(_canon(df), _canon(ref))


def test_search_finds_pareto_set_and_resumes(tmp_path: Path) -> None:
    spec = {**SPEC, "axes": {"hbm.bandwidth_gbps": {"min": 400, "max": 3200}, "energy.static_w": [20, 50, 80]},
            "random": {"samples": 1}}
    objs = [("tokens_per_s", "max"), ("power_w", "min")]
    first = run_search(spec, tmp_path, 6, objs)
    assert len(first) >= 1
    run_search(spec, tmp_path, 9, objs)
    import optuna

    study = optuna.load_study(study_name="infsim", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 9
