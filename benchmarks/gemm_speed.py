"""How fast is ``infsim gemm`` compared with SCALE-Sim on the same large GEMM?

Times :func:`infsim.hw.systolic.gemm` for M = N = K = 2048 on a 128 x 128 array (native weight-stationary
mode and ``compat='scalesim'``) and, with ``--scalesim``, SCALE-Sim 3.0.0 itself on the same GEMM, array
and dataflow (run through ``benchmarks/scalesim/record_golden.py --time-only`` in its own virtual
environment; it takes minutes). Without ``--scalesim`` a SCALE-Sim measurement already in the output
file is kept, so re-running the fast part is cheap; ``--scalesim-json FILE`` imports a saved
``--time-only`` result instead of running SCALE-Sim again. ``--scalesim-size S`` times SCALE-Sim on S^3 instead
and extrapolates to 2048^3 by the number of cycles it simulates (its run time is linear in simulated
cycles); the JSON labels such a figure ``extrapolated``.

Writes ``benchmarks/results/gemm_speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from infsim.cli import main as cli_main
from infsim.config import load_chip
from infsim.hw.systolic import gemm

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gemm_speed.json"
SIZE = 2048


def _time_call(fn, repeat: int = 200) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(first-call seconds, median seconds of ``repeat`` further calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return first, statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scalesim", action="store_true", help="also run SCALE-Sim (minutes)")
    ap.add_argument("--scalesim-size", type=int, default=SIZE, help="GEMM size S for the SCALE-Sim run (S^3)")
    ap.add_argument("--scalesim-json", type=Path,
                    help="use this saved output of record_golden.py --time-only instead of running SCALE-Sim")
    ap.add_argument("--venv", default="/tmp/scalesim-venv")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    te = load_chip("inf2", []).tensor_engine.model_copy(update={"rows": 128, "cols": 128})
    native = gemm(SIZE, SIZE, SIZE, te, dataflow="ws")
    compat = gemm(SIZE, SIZE, SIZE, te, dataflow="ws", compat="scalesim")
    first_native, t_native = _time_call(lambda: gemm(SIZE, SIZE, SIZE, te, dataflow="ws"))
    first_compat, t_compat = _time_call(lambda: gemm(SIZE, SIZE, SIZE, te, dataflow="ws", compat="scalesim"))

    # the whole command in-process (argument parsing, chip YAML load and validation, output): conservative
    with contextlib.redirect_stdout(io.StringIO()):
        first_cli, t_cli = _time_call(lambda: cli_main(["gemm", str(SIZE), str(SIZE), str(SIZE), "--array",
                                                        "128x128", "--json"]), repeat=20)

    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    scalesim = previous.get("scalesim")
    if args.scalesim or args.scalesim_json:
        if args.scalesim_json:
            run = json.loads(args.scalesim_json.read_text())
            s = int(run["m"])
        else:
            s = args.scalesim_size
            proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scalesim" / "record_golden.py"),
                                   "--venv", args.venv, "--time-only", str(s), str(s), str(s), "--array",
                                   "128x128", "--dataflow", "ws"], capture_output=True, text=True, check=True)
            run = json.loads(proc.stdout.strip().splitlines()[-1])
        measured = gemm(s, s, s, te, dataflow="ws", compat="scalesim").total_cycles
        assert measured == run["total_cycles"], (measured, run["total_cycles"])
        scale = compat.total_cycles / run["total_cycles"]
        scalesim = {
            "version": "3.0.0",
            "measured_gemm": [s, s, s],
            "measured_wall_s": run["scalesim_wall_s"],
            "measured_total_cycles": run["total_cycles"],
            "wall_s_2048": run["scalesim_wall_s"] * scale,
            "extrapolated": s != SIZE,
            "conditions": "run under nice on a shared 2-core host (other jobs running): an upper bound",
            "note": ("measured on 2048^3" if s == SIZE else
                     f"measured on {s}^3 and scaled by simulated cycles ({scale:.1f}x) to 2048^3"),
        }

    doc = {
        "gemm": [SIZE, SIZE, SIZE],
        "array": "128x128",
        "dataflow": "ws",
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "processor": platform.processor() or "unknown"},
        "infsim_native": {"total_cycles": native.total_cycles, "utilization": native.utilization,
                          "matmuls": native.tiles, "first_call_s": first_native, "median_s": t_native},
        "infsim_scalesim_compat": {"total_cycles": compat.total_cycles, "utilization": compat.utilization,
                                   "folds": compat.tiles, "first_call_s": first_compat, "median_s": t_compat},
        "infsim_cli_in_process": {"first_call_s": first_cli, "median_s": t_cli,
                                  "note": "infsim.cli.main(['gemm', ...]) incl. chip YAML load; native mode"},
        "scalesim": scalesim,
    }
    if scalesim:
        doc["speedup_native_vs_scalesim"] = scalesim["wall_s_2048"] / t_native
        doc["speedup_compat_vs_scalesim"] = scalesim["wall_s_2048"] / t_compat
        doc["speedup_cli_vs_scalesim"] = scalesim["wall_s_2048"] / t_cli
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
