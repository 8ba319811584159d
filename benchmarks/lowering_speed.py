"""Benchmark: wall time and peak memory of lowering, first run and from the on-disk cache.

Cases (issue 14): Llama-2-7B decode (batch 1, context 2048, tp 2) and prefill 2048 on inf2, Llama-2-70B decode
(batch 1, context 2048) at tp 24 on inf2. Each case runs twice, each time in its own subprocess (so peak RSS,
``ru_maxrss``, is its own) against a fresh cache directory: the first run lowers and stores
(:mod:`infsim.models.lower.cache`), the second reads the entry back. Reported per run: the lowering call's
wall time (``lower_s``, including the store on a miss), the whole process's wall time (imports included),
the peak RSS and the program's size; and the CPU times of both (``*_cpu_s``: the machine is shared, so
wall times include waiting for a core). Writes ``benchmarks/results/lowering_speed.json``.

Targets from issue 14 (whole ``infsim run`` at cycle fidelity, lowering being one part): decode <= 2 s first
run and <= 1 s cached, prefill <= 20 s, 70B decode <= 20 s and <= 2 GiB; reported, not asserted.

``python benchmarks/lowering_speed.py [--only NAME]``
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

CASES = {
    "llama-2-7b-decode-b1-c2048-tp2-inf2": ("llama-2-7b", "decode", 1, 2048, 2, "inf2"),
    "llama-2-7b-prefill-b1-c2048-tp2-inf2": ("llama-2-7b", "prefill", 1, 2048, 2, "inf2"),
    "llama-2-70b-decode-b1-c2048-tp24-inf2": ("llama-2-70b", "decode", 1, 2048, 24, "inf2"),
}

CHILD = r"""
import json, resource, sys, time
t_start = time.perf_counter()
from infsim.config import load_chip
from infsim.models.graph import Workload
from infsim.models.lower.cache import lower_cached
from infsim.models.spec import load_model
model, phase, batch, context, tp, chip, cache = sys.argv[1:8]
spec, cfg = load_model(model), load_chip(chip)
wl = Workload.make(phase, int(batch), int(context), tp=int(tp))
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t, c = time.perf_counter(), time.process_time()
lw = lower_cached(spec, wl, cfg, cache=cache)
lower_s, lower_cpu_s = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"lower_s": lower_s, "lower_cpu_s": lower_cpu_s, "process_s": time.perf_counter() - t_start,
                  "process_cpu_s": time.process_time(), "rss_before_mb": rss0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "instructions": len(lw.program), "access_patterns": len(lw.program.aps),
                  "program_mb": lw.program.nbytes() / 2**20, "replicated_layers": lw.replicated_layers}))
"""


def run_case(case: tuple, cache: str) -> dict[str, object]:
    model, phase, batch, context, tp, chip = case
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, model, phase, str(batch), str(context), str(tp), chip, cache],
                         capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - t  # including interpreter start-up
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CASES), help="one case (the results file keeps the others' rows)")
    args = ap.parse_args()
    path = Path(__file__).parent / "results" / "lowering_speed.json"
    old = json.loads(path.read_text())["cases"] if path.exists() else {}
    rows = dict(old)
    for name, case in CASES.items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="infsim-lowering-bench-") as cache:
            first = run_case(case, cache)
            print(name, "first", first, flush=True)
            cached = run_case(case, cache) if "error" not in first else {"error": "first run failed"}
            print(name, "cached", cached, flush=True)
        rows[name] = {"first": first, "cached": cached}
    res = {
        "machine": "2 cores shared with other jobs (CI-class); whole process per run",
        "load_average_1min_at_end": os.getloadavg()[0],  # other sessions' jobs inflate every wall time
        "cases": rows,
        "targets_whole_run_s": {"decode_first": 2.0, "decode_cached": 1.0, "prefill": 20.0, "70b_decode": 20.0},
        "target_70b_peak_rss_mb": 2048,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
