"""Engine speed on long semaphore chains (issue 16: ``infsim sim`` was quadratic in the chain length).

One stream signals a semaphore N times (cheap ``memset``s, so its signals are known far ahead); another
waits for each value in turn (``activate`` instructions). The old simpy fast path's known-crossing lookup
was a linear scan over the pending signals; the cycle engine is now the numba kernel, whose lookup gallops
from the previous answer (:func:`infsim.engine.kernel._crossing`), so the time grows about
linearly with N (12.5k -> 100k instructions per stream: ~8x, was ~50x). Program build and parsing are not
timed.

Writes ``benchmarks/results/sem_chain.json``. Run: ``python benchmarks/sem_chain.py``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from infsim.config import load_chip
from infsim.isa.asm import parse
from infsim.sim import simulate

OUT = Path(__file__).parent / "results" / "sem_chain.json"
SIZES = (12_500, 25_000, 50_000, 100_000)


def chain(n: int) -> str:
    """Assembly of the producer/consumer chain of length ``n`` (see the module docstring)."""
    lines = [".tensor X bf16[128,64] input", ".sem a", ".stream c0.vector"]
    lines += ["memset dst=sbuf[0:128 +0 (1,8) bf16] signal=a+1"] * n
    lines.append(".stream c0.scalar")
    lines += [f"activate dst=sbuf[0:128 +1024 (1,512) bf16] src=sbuf[0:128 +2048 (1,512) bf16] func=exp "
              f"wait=a>={i + 1}" for i in range(n)]
    return "\n".join(lines) + "\n"


def main() -> None:
    chip = load_chip("inf2")
    simulate(parse(chain(100)), chip)  # compile and warm up
    cases = []
    for n in SIZES:
        prog = parse(chain(n))
        t = time.perf_counter()
        r = simulate(prog, chip)
        wall = time.perf_counter() - t
        cases.append({"chain_length": n, "instructions": len(prog), "simulate_s": wall, "total_cycles": r.total_cycles})
        print(f"chain {n:>7}: {wall:6.2f} s")
    growth = cases[-1]["simulate_s"] / cases[0]["simulate_s"]
    out = {"machine": platform.processor() or platform.machine(), "cases": cases,
           "growth_8x_length": growth, "target": "growth_8x_length < 16 (linear-ish; quadratic would be ~64)"}
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"time x{growth:.1f} for 8x the chain length; wrote {OUT}")


if __name__ == "__main__":
    main()
