"""Generation-over-generation study: next-generation Inferentia hypotheses vs Inferentia2.

Reproduces, end to end: for each next-generation preset, ``infsim compare`` against inf2 on the default
workload set (Llama-2-7B decode bs 1/8/32 at 2048 context, prefill 512/2048, bf16 and fp8 weights) with
Shapley attribution, plus a sensitivity sweep over the presets' *assumed* numbers (each varied alone,
everything else fixed), plus a roofline with both chips and every workload placed on it, plus the inverse
question: the cheapest scaling of the baseline that reaches the claimed 4x, for decode and for prefill
(``infsim what-it-takes``).

Writes to ``results/generation_speedup/`` (or ``--out``): ``summary.md`` (tables), ``results.json``,
``speedup.png``, ``attribution.png``, ``roofline.png``. Analytical fidelity (closed forms, seconds); the
analytical model is held within 10% of the cycle engine by tests/fidelity/test_fidelity_step.py.

Usage: ``python experiments/generation_speedup.py [--model llama-2-7b] [--targets nextgen-hbm3e,nextgen-decode]``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from infsim.config import CHIP_PATHS, load_chip
from infsim.models.graph import Workload
from infsim.provenance import provenance
from infsim.runner import run_workload
from infsim.studies.compare import compare
from infsim.studies.plots import plot_roofline, plot_study_attribution, plot_study_speedups

#: assumed numbers of the next-generation presets and the ranges the study varies them over
SENSITIVITY = {
    "cores_per_chip": [2, 4, 8],
    "lnc": [1, 2],  # logical NeuronCore size (absolute values, like cores_per_chip)
    "hbm.bandwidth_gbps": [0.5, 1.0, 1.5],  # x the preset value
    "energy.static_w": [0.5, 1.0, 1.5],
    "links.latency_ns": [0.5, 1.0, 2.0],
    "links.collective_step_overhead_ns": [0.5, 1.0, 2.0],
    "dma.fixed_latency_ns": [0.5, 1.0, 2.0],
}


#: fields varied over absolute values (the others: factors of the preset value)
ABSOLUTE = ("cores_per_chip", "lnc")

#: the workloads placed on the roofline (``tp``: all cores of the chips compared)
ROOFLINE_WORKLOADS = [*(Workload.make("decode", b, 2048) for b in (1, 8, 32)),
                      *(Workload.make("prefill", 1, c) for c in (512, 2048)),
                      Workload.make("decode", 8, 2048, dtype="fp8_e4m3")]


def sensitivity(baseline: str, target: str, model: str, chips: int) -> list[dict]:
    rows = []
    base_cfg = load_chip(target)
    for path, levels in SENSITIVITY.items():
        for lv in levels:
            v = lv if path in ABSOLUTE else float(CHIP_PATHS.get(base_cfg, path)) * lv
            over = {path: v}
            if path == "energy.static_w":  # the chip's whole static power: outside the cores and in them
                over["energy.static_w_per_core"] = base_cfg.energy.static_w_per_core * lv
            cfg = load_chip(target, over)
            r = compare(baseline, cfg, model, chips=chips, attribution=False)
            rows.append({"field": path, "value": v, "relative": lv, "geomean_speedup": r.geomean_speedup,
                         "geomean_perf_per_watt_ratio": r.geomean_perf_per_watt_ratio})
    return rows


def roofline(baseline: str, targets: list[str], model: str, chips: int) -> tuple[list[dict], dict]:
    """The roofline points (analytical runs of :data:`ROOFLINE_WORKLOADS`) and each chip group's roofs
    (peak bf16 and fp8 TFLOPS, HBM TB/s of ``chips`` chips)."""
    pts, roofs = [], {}
    for name in [baseline, *targets]:
        cfg = load_chip(name)
        roofs[name] = (cfg.peak_tflops("bf16") * chips, cfg.peak_tflops("fp8_e4m3") * chips,
                       cfg.hbm.bandwidth_gbps * chips / 1e3)
        for wl in ROOFLINE_WORKLOADS:
            r = run_workload(cfg, model, replace(wl, tp=chips * cfg.logical_cores_per_chip), fidelity="analytical")
            pts.append({"chip": name, "phase": wl.phase, "batch": wl.batch, "context": wl.prompt_or_context,
                        "dtype": wl.weight_dtype, "flop_per_byte": r.flops / max(r.hbm_bytes, 1),
                        "achieved_tflops": r.flops / (r.latency_ms * 1e-3) / 1e12,
                        "limit": r.breakdown["step"]["limit"]})
    return pts, roofs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--baseline", default="inf2")
    ap.add_argument("--targets", default="nextgen-hbm3e,nextgen-decode")
    ap.add_argument("--out", default="results/generation_speedup")
    ap.add_argument("--no-sensitivity", action="store_true")
    ap.add_argument("--speedup", type=float, default=4.0, help="what-it-takes target (default: %(default)s)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = args.targets.split(",")
    t0 = time.time()
    results = {t: compare(args.baseline, t, args.model, progress=True) for t in targets}
    chips = max(r.chips for r in results.values())
    sens = {t: sensitivity(args.baseline, t, args.model, results[t].chips) for t in targets} \
        if not args.no_sensitivity else {}
    from infsim.studies.inverse import what_it_takes

    inverse = {ph: what_it_takes(args.baseline, args.speedup, args.model, ph, progress=True)
               for ph in ("decode", "prefill")}
    plot_study_speedups(results, args.baseline, out / "speedup.png")
    plot_study_attribution(results, out / "attribution.png")
    pts, roofs = roofline(args.baseline, targets, args.model, chips)
    plot_roofline(pts, roofs, f"{args.model}: roofline, {chips} chip(s) per side", out / "roofline.png")
    data = {"model": args.model, "baseline": args.baseline, "compare": {t: r.to_dict() for t, r in results.items()},
            "sensitivity": sens, "roofline_points": pts,
            "what_it_takes": {ph: r.to_dict() for ph, r in inverse.items()}, "wall_s": time.time() - t0,
            "provenance": provenance([load_chip(c) for c in (args.baseline, *targets)])}
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"# Generation speedup: {', '.join(targets)} vs {args.baseline} ({args.model})", ""]
    for t, r in results.items():
        lines += [f"## {t}", "", f"{r.chips} chip(s) per side, TP {r.target_tp} vs {r.baseline_tp}; geomean speedup "
                  f"**{r.geomean_speedup:.2f}x**, perf/W **{r.geomean_perf_per_watt_ratio:.2f}x**", "",
                  "| phase | batch | context | dtype | base ms | target ms | speedup | perf/W x | $/Mtok base "
                  "| $/Mtok target | base limited by | target limited by |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for w in r.rows:
            lines.append(f"| {w.phase} | {w.batch} | {w.context} | {w.dtype} | {w.baseline_latency_ms:.3f} | "
                         f"{w.target_latency_ms:.3f} | {w.speedup:.2f} | {w.perf_per_watt_ratio:.2f} | "
                         f"{w.baseline_cost_per_mtok_usd:.3f} | {w.target_cost_per_mtok_usd:.3f} | "
                         f"{w.baseline_limit} | {w.target_limit} |")
        lines += ["", "Attribution (Shapley share of the mean log speedup): " + ", ".join(
            f"{k} {v:.0%}" for k, v in sorted(r.attribution.items(), key=lambda kv: -kv[1])), ""]
        if sens.get(t):
            lines += ["Sensitivity to assumed numbers (one at a time):", "", "| field | value | speedup | perf/W |",
                      "|---|---|---|---|"]
            lines += [f"| {s['field']} | {s['value']:g} | {s['geomean_speedup']:.2f} | "
                      f"{s['geomean_perf_per_watt_ratio']:.2f} |" for s in sens[t]]
            lines.append("")
    lines += [f"## What it takes: {args.speedup:g}x over {args.baseline}", "",
              "Cheapest combination of resource scalings (cost proxy and levels: `infsim/studies/inverse.py`) whose "
              "geometric-mean speedup over the phase's workloads reaches the target.", "",
              "| phase | reachable | cost proxy | achieved | perf/W x | scalings |", "|---|---|---|---|---|---|"]
    for ph, r in inverse.items():
        sc = ", ".join(f"{k} x{v:g}" for k, v in (r.scalings or r.best_within_bounds["scalings"]).items() if v != 1)
        lines.append(f"| {ph} | {'yes' if r.reachable else 'no (best within bounds shown)'} | "
                     f"{'' if r.cost is None else f'{r.cost:.2f}'} | {r.achieved_speedup:.2f}x | "
                     f"{r.perf_per_watt_ratio:.2f} | {sc} |")
    lines.append("")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/summary.md, results.json, speedup.png, attribution.png, roofline.png "
          f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
