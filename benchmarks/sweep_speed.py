"""Benchmark: sweep throughput in (design point, workload) evaluations per minute.

A 200-point analytical sweep (grid over HBM bandwidth x tensor clock x static power, one Llama-2-7B decode
workload) with 1 and 2 local worker processes and on a 2-worker dask LocalCluster (checking all three give
identical rows), plus a small cycle-fidelity sweep. Writes ``benchmarks/results/sweep_speed.json``.
Target (design-space issue): >= 1000 analytical evaluations per minute on this 2-core machine.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from infsim.studies.sweep import run_sweep

SPEC = {
    "base": "inf2",
    "axes": {"hbm.bandwidth_gbps": [200 * i for i in range(1, 11)],
             "tensor_engine.clock_ghz": [1.4, 1.8, 2.2, 2.8, 3.2], "energy.static_w": [20, 35, 50, 65]},
    "workloads": [{"model": "llama-2-7b", "phase": "decode", "batch": 4, "context": 1024, "tp": 2}],
}
CYCLE = {"base": "inf2", "fidelity": "cycle", "axes": {"hbm.bandwidth_gbps": [400, 800, 1600, 3200]},
         "workloads": [{"model": "gpt2", "phase": "decode", "batch": 4, "context": 256, "tp": 1}]}


def timed(spec: dict, **kw: object) -> tuple[float, object]:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        df = run_sweep(spec, d, **kw)  # type: ignore[arg-type]
        return time.perf_counter() - t, df


def main() -> None:
    from distributed import Client, LocalCluster

    res: dict[str, object] = {"points": 200, "workloads": 1}
    t1, df1 = timed(SPEC, workers=1)
    t2, df2 = timed(SPEC, workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as c, Client(c) as client:
        td, dfd = timed(SPEC, scheduler=client)
    cols = ["key", "latency_ms", "tokens_per_s", "power_w"]
    def canon(df: object) -> object:
        return df.sort_values("key")[cols].reset_index(drop=True)  # type: ignore[attr-defined]

    same = all(canon(a).equals(canon(b)) for a, b in ((df1, df2), (df1, dfd)))  # type: ignore[attr-defined]
    tc, dfc = timed(CYCLE, workers=2)
    res.update({
        "analytical_points_per_min_1_worker": 200 / t1 * 60, "analytical_points_per_min_2_workers": 200 / t2 * 60,
        "analytical_points_per_min_dask_local_2_workers": 200 / td * 60, "identical_local_and_dask": bool(same),
        "cycle_points": len(dfc), "cycle_points_per_min_2_workers": len(dfc) / tc * 60,  # type: ignore[arg-type]
        "target_analytical_points_per_min": 1000,
    })
    print(json.dumps(res, indent=2))
    out = Path(__file__).parent / "results" / "sweep_speed.json"
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
