"""Step-level analytical fidelity against the cycle engine for every zoo model.

``python benchmarks/fidelity_zoo.py [--chip inf2] [--models gpt2,bert-base-uncased] [--layers N] [--out PATH]``:
for each model in ``models/zoo``, decoders at decode batch 1 and 8 (context 512) and prefill 512, encoders at
prefill batch 1 and 8 (128 tokens), each at TP 1 and 2, the analytical estimate
(:func:`infsim.fidelity.step.estimate`) and the cycle engine's time of the lowered step; writes
``benchmarks/results/fidelity_zoo.json`` (ratio = analytical / cycle, with the layer count of each row; a step the
plan refuses, such as a 70B model on one chip, is a row with the refusal instead) and prints a table. Models run
full size by default; ``--layers N`` cuts them to ``N`` layers (the layer count only repeats the per-layer
schedule, and the cycle engine takes minutes per full-size 7B-13B prefill). The CI test on small configurations
is ``tests/fidelity/test_fidelity_zoo.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

from infsim.config import load_chip
from infsim.feasibility import InfeasibleError
from infsim.fidelity.step import estimate
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.spec import load_model
from infsim.sim import simulate

ROOT = Path(__file__).resolve().parents[1]
ZOO = sorted(p.stem for p in (ROOT / "models" / "zoo").glob("*.json"))


def workloads(kind: str) -> list[Workload]:
    if kind == "encoder":
        return [Workload.make("prefill", b, 128, tp=tp) for b in (1, 8) for tp in (1, 2)]
    return [Workload.make(ph, b, 512, tp=tp) for ph, b in (("decode", 1), ("decode", 8), ("prefill", 1))
            for tp in (1, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chip", default="inf2")
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--layers", type=int, default=None, help="cut every model to this many layers (default: full)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fidelity_zoo.json"))
    args = ap.parse_args()
    chip = load_chip(args.chip)
    rows = []
    for name in args.models.split(","):
        spec = load_model(name)
        if args.layers is not None:
            spec = dataclasses.replace(spec, layers=args.layers)
        for wl in workloads(spec.kind):
            t0 = time.perf_counter()
            try:
                est = estimate(spec, wl, chip)
            except InfeasibleError as e:  # e.g. a 70B model's weights on one chip: refused at every fidelity
                rows.append({"model": name, "layers": spec.layers, "phase": wl.phase, "batch": wl.batch,
                             "context": wl.prompt_or_context, "tp": wl.tp, "refused": str(e)})
                print(f"{name:20s} L{spec.layers:<3d} {wl.phase:8s} b{wl.batch:<2d} tp{wl.tp} refused: {e}", flush=True)
                continue
            cyc = simulate(lower(spec, wl, chip).program, chip)
            row = {"model": name, "layers": spec.layers, "phase": wl.phase, "batch": wl.batch,
                   "context": wl.prompt_or_context, "tp": wl.tp, "analytical_us": round(est.total_ns / 1e3, 3),
                   "cycle_us": round(cyc.total_ns / 1e3, 3),
                   "ratio": round(est.total_ns / cyc.total_ns, 4), "wall_s": round(time.perf_counter() - t0, 2)}
            rows.append(row)
            print(f"{name:20s} L{spec.layers:<3d} {wl.phase:8s} b{wl.batch:<2d} tp{wl.tp} "
                  f"analytical {row['analytical_us']:10.1f} us "
                  f"cycle {row['cycle_us']:10.1f} us ratio {row['ratio']:.3f} ({row['wall_s']} s)", flush=True)
    out = {"chip": args.chip, "machine": platform.machine(), "python": platform.python_version(), "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
