"""Benchmark: wall time and peak memory of ``infsim run`` for Llama-2-7B on inf2.

Cases: decode (batch 1, context 2048) and prefill (2048 tokens), at cycle and analytical fidelity.
Each case runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own. Writes
``benchmarks/results/run_speed.json``. Targets from the workloads issue: decode <= 2 s and prefill
<= 20 s at cycle fidelity, <= 50 ms analytical (reported, not asserted).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CASES = [
    ("decode", 1, 2048, "cycle"),
    ("decode", 1, 2048, "analytical"),
    ("prefill", 1, 2048, "cycle"),
    ("prefill", 1, 2048, "analytical"),
]

CHILD = r"""
import json, resource, sys, time
import infsim
phase, batch, context, fidelity = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t = time.perf_counter()
r = infsim.run("inf2", "llama-2-7b", phase=phase, batch=batch, context=context, fidelity=fidelity)
wall = time.perf_counter() - t
print(json.dumps({"phase": phase, "batch": batch, "context": context, "fidelity": fidelity,
                  "wall_s": wall, "lower_s": r.lower_s, "simulate_s": r.sim_s, "instructions": r.instructions,
                  "instructions_per_s_simulated": r.instructions / max(r.sim_s, 1e-9),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "latency_ms": r.latency_ms, "tokens_per_s": r.tokens_per_s}))
"""


def main() -> None:
    rows = []
    for phase, batch, context, fidelity in CASES:
        out = subprocess.run([sys.executable, "-c", CHILD, phase, str(batch), str(context), fidelity],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        rows.append(row)
    targets = {"decode_cycle_s": 2.0, "prefill_cycle_s": 20.0, "analytical_s": 0.05}
    res = {"machine": "2 cores (CI-class)", "model": "llama-2-7b", "chip": "inf2", "cases": rows, "targets": targets}
    path = Path(__file__).parent / "results" / "run_speed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
