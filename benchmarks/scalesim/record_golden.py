"""Record SCALE-Sim 3.0.0 golden outputs for ``infsim gemm --compat scalesim``.

SCALE-Sim needs ``numpy<2`` and runs a per-cycle Python loop, so it is kept out of the test
environment: this script creates its own virtual environment (default ``/tmp/scalesim-venv``),
installs ``scalesim==3.0.0`` there, writes a GEMM topology, a layout and a config file per case, runs
SCALE-Sim in that environment with unlimited bandwidth (``InterfaceBandwidth: CALC``, SRAMs far larger
than any operand, so no stall cycles), parses ``COMPUTE_REPORT.csv`` and writes
``tests/golden/scalesim_gemm.json`` (case -> SCALE-Sim's "Total Cycles", "Overall Util %" / 100,
stall cycles, its version and its wall time).

Usage (from the repository root)::

    python benchmarks/scalesim/record_golden.py [--venv /tmp/scalesim-venv] [--out tests/golden/scalesim_gemm.json]
    python benchmarks/scalesim/record_golden.py --time-only 1024 1024 1024 --array 128x128 --dataflow ws

``--time-only`` runs one GEMM and prints its cycles and wall time as JSON (used by
``benchmarks/gemm_speed.py``) without touching the golden file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALESIM_VERSION = "3.0.0"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "golden" / "scalesim_gemm.json"

# (M, N, K, rows, cols, dataflow): small and odd shapes, several array shapes, all three dataflows.
CASES: list[tuple[int, int, int, int, int, str]] = [
    (m, n, k, r, c, df)
    for (m, n, k, r, c) in [
        (7, 5, 3, 8, 8),
        (17, 33, 9, 8, 8),
        (64, 64, 64, 16, 16),
        (100, 37, 130, 12, 20),
        (128, 128, 128, 32, 32),
        (130, 255, 70, 16, 16),
        (128, 128, 128, 128, 128),
        (130, 255, 70, 128, 128),
    ]
    for df in ("os", "ws", "is")
] + [
    # larger weight-stationary GEMMs on the Neuron-sized array (many folds; ~10 s and ~80 s)
    (512, 512, 512, 128, 128, "ws"),
    (1024, 1024, 1024, 128, 128, "ws"),
]

_CONFIG = """[general]
run_name = gemm

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 1048576
FilterSramSzkB: 1048576
OfmapSramSzkB: 1048576
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: {dataflow}
MemoryBanks: 1
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

# Runs inside the SCALE-Sim virtual environment.
_RUNNER = """
import sys, time
from scalesim.scale_sim import scalesim
cfg, topo, layout, out = sys.argv[1:5]
t0 = time.perf_counter()
s = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=layout, input_type_gemm=True)
s.run_scale(top_path=out)
print("WALL_S", time.perf_counter() - t0)
"""


def ensure_venv(venv: Path) -> Path:
    """Create ``venv`` with scalesim==3.0.0 and numpy<2 unless it already has them; return its python."""
    py = venv / "bin" / "python"
    if py.exists():
        probe = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('scalesim'))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == SCALESIM_VERSION:
            return py
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"scalesim=={SCALESIM_VERSION}", "numpy<2"], check=True)
    return py


def run_case(py: Path, m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> dict:
    """Run one GEMM through SCALE-Sim and return its compute-report figures."""
    with tempfile.TemporaryDirectory(prefix="scalesim-") as tmp:
        d = Path(tmp)
        (d / "scale.cfg").write_text(_CONFIG.format(rows=rows, cols=cols, dataflow=dataflow))
        # GEMM topology rows are "name, M, N, K," (SCALE-Sim drops the field after the last comma).
        (d / "gemm.csv").write_text(f"Layer, M, N, K,\ngemm, {m}, {n}, {k},\n")
        (d / "layout.csv").write_text("Layer,\n")
        (d / "runner.py").write_text(_RUNNER)
        t0 = time.perf_counter()
        proc = subprocess.run([str(py), str(d / "runner.py"), str(d / "scale.cfg"), str(d / "gemm.csv"),
                               str(d / "layout.csv"), str(d / "out")], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"SCALE-Sim failed on {m}x{n}x{k} {rows}x{cols} {dataflow}:\n{proc.stderr[-2000:]}")
        inner = [line for line in proc.stdout.splitlines() if line.startswith("WALL_S")]
        report = (d / "out" / "gemm" / "COMPUTE_REPORT.csv").read_text().splitlines()
        header = [h.strip() for h in report[0].split(",")]
        values = [v.strip() for v in report[1].split(",")]
        row = dict(zip(header, values))
    return {
        "total_cycles": int(row["Total Cycles"]),
        "total_cycles_incl_prefetch": int(row["Total Cycles (incl. prefetch)"]),
        "stall_cycles": int(row["Stall Cycles"]),
        "utilization": float(row["Overall Util %"]) / 100.0,
        "mapping_efficiency": float(row["Mapping Efficiency %"]) / 100.0,
        "compute_utilization": float(row["Compute Util %"]) / 100.0,
        "scalesim_wall_s": float(inner[0].split()[1]) if inner else wall,
    }


def case_key(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> str:
    return f"{m}x{n}x{k}_{rows}x{cols}_{dataflow}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default="/tmp/scalesim-venv", type=Path)
    ap.add_argument("--out", default=DEFAULT_OUT, type=Path)
    ap.add_argument("--time-only", nargs=3, type=int, metavar=("M", "N", "K"))
    ap.add_argument("--array", default="128x128")
    ap.add_argument("--dataflow", default="ws", choices=["os", "ws", "is"])
    args = ap.parse_args(argv)
    py = ensure_venv(args.venv)
    if args.time_only:
        rows, cols = (int(x) for x in args.array.lower().split("x"))
        res = run_case(py, *args.time_only, rows, cols, args.dataflow)
        print(json.dumps({"m": args.time_only[0], "n": args.time_only[1], "k": args.time_only[2], "rows": rows,
                          "cols": cols, "dataflow": args.dataflow, **res}))
        return 0
    cases = {}
    for (m, n, k, rows, cols, df) in CASES:
        res = run_case(py, m, n, k, rows, cols, df)
        if res["stall_cycles"] != 0:
            raise RuntimeError(f"unexpected stalls in {case_key(m, n, k, rows, cols, df)}: {res}")
        cases[case_key(m, n, k, rows, cols, df)] = {"m": m, "n": n, "k": k, "rows": rows, "cols": cols,
                                                     "dataflow": df, **res}
        print(f"{case_key(m, n, k, rows, cols, df)}: {res['total_cycles']} cycles, "
              f"util {res['utilization']:.4f}, {res['scalesim_wall_s']:.1f} s", flush=True)
    doc = {
        "scalesim_version": SCALESIM_VERSION,
        "recorded_by": "benchmarks/scalesim/record_golden.py",
        "settings": "GEMM topology (M, N, K), InterfaceBandwidth CALC, 1 GiB SRAMs, no sparsity, default layout",
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host_python": sys.version.split()[0],
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {len(cases)} cases to {os.path.relpath(args.out, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
