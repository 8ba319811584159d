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
import math
import time
from dataclasses import replace
from pathlib import Path

from infsim.config import CHIP_PATHS, load_chip
from infsim.models.graph import Workload
from infsim.runner import run_workload
from infsim.studies.compare import compare

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
            cfg = load_chip(target, {path: v})
            r = compare(baseline, cfg, model, chips=chips, attribution=False)
            rows.append({"field": path, "value": v, "relative": lv, "geomean_speedup": r.geomean_speedup,
                         "geomean_perf_per_watt_ratio": r.geomean_perf_per_watt_ratio})
    return rows


def roofline(ax: object, baseline: str, targets: list[str], model: str, chips: int) -> list[dict]:
    pts = []
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for ci, name in enumerate([baseline, *targets]):
        cfg = load_chip(name)
        peak = cfg.peak_tflops("bf16") * chips
        peak8 = cfg.peak_tflops("fp8_e4m3") * chips
        bw = cfg.hbm.bandwidth_gbps * chips / 1e3  # TB/s
        xs = [0.1 * 1.25**i for i in range(60)]
        ax.plot(xs, [min(peak, bw * x) for x in xs], color=colors[ci], lw=1.5, label=f"{name} bf16 roof")  # type: ignore[attr-defined]
        ax.plot(xs, [min(peak8, bw * x) for x in xs], color=colors[ci], lw=0.8, ls="--")  # type: ignore[attr-defined]
        for wl in ROOFLINE_WORKLOADS:
            ph = wl.phase
            r = run_workload(cfg, model, replace(wl, tp=chips * cfg.logical_cores_per_chip), fidelity="analytical")
            ai = r.flops / max(r.hbm_bytes, 1)
            tf = r.flops / (r.latency_ms * 1e-3) / 1e12
            ax.scatter([ai], [tf], color=colors[ci], marker="o" if ph == "decode" else "s", s=18)  # type: ignore[attr-defined]
            pts.append({"chip": name, "phase": ph, "batch": wl.batch, "context": wl.prompt_or_context,
                        "dtype": wl.weight_dtype, "flop_per_byte": ai, "achieved_tflops": tf})
    ax.set_xscale("log")  # type: ignore[attr-defined]
    ax.set_yscale("log")  # type: ignore[attr-defined]
    ax.set_xlabel("arithmetic intensity (FLOP / HBM byte)")  # type: ignore[attr-defined]
    ax.set_ylabel("achieved TFLOPS (dense, whole chip group)")  # type: ignore[attr-defined]
    ax.set_title(f"{model}: roofline, {chips} chip(s) per side (o decode, s prefill; dashed: fp8 roof)")  # type: ignore[attr-defined]
    ax.legend(fontsize=7)  # type: ignore[attr-defined]
    return pts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--baseline", default="inf2")
    ap.add_argument("--targets", default="nextgen-hbm3e,nextgen-decode")
    ap.add_argument("--out", default="results/generation_speedup")
    ap.add_argument("--no-sensitivity", action="store_true")
    ap.add_argument("--speedup", type=float, default=4.0, help="what-it-takes target (default: %(default)s)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, axes = plt.subplots(1, len(targets), figsize=(7 * len(targets), 4.5), squeeze=False)
    for ax, t in zip(axes[0], targets):
        r = results[t]
        labels = [f"{w.phase} b{w.batch}\nc{w.context} {w.dtype}" for w in r.rows]
        ax.bar(range(len(r.rows)), [w.speedup for w in r.rows], color="tab:blue", label="speedup")
        ax.plot(range(len(r.rows)), [w.perf_per_watt_ratio for w in r.rows], "o", color="tab:red", label="perf/W")
        ax.axhline(4.0, color="gray", ls=":", label="claim: 4x perf")
        ax.axhline(2.0, color="tab:red", ls=":", lw=0.8, label="claim: 2x perf/W")
        ax.set_xticks(range(len(r.rows)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(f"{t} / {args.baseline} (x)")
        ax.set_title(f"{t}: geomean {r.geomean_speedup:.2f}x perf, {r.geomean_perf_per_watt_ratio:.2f}x perf/W")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=120)
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4), squeeze=False)
    for ax, t in zip(axes[0], targets):
        items = sorted(results[t].attribution_log.items(), key=lambda kv: -kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:orange")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("Shapley contribution to mean ln(speedup)")
        total_ln = math.log(results[t].geomean_speedup)
        ax.set_title(f"why {t} is faster (total ln {total_ln:.2f})")
    fig.tight_layout()
    fig.savefig(out / "attribution.png", dpi=120)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    pts = roofline(ax, args.baseline, targets, args.model, chips)
    fig.tight_layout()
    fig.savefig(out / "roofline.png", dpi=120)
    data = {"model": args.model, "baseline": args.baseline, "compare": {t: r.to_dict() for t, r in results.items()},
            "sensitivity": sens, "roofline_points": pts,
            "what_it_takes": {ph: r.to_dict() for ph, r in inverse.items()}, "wall_s": time.time() - t0}
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"# Generation speedup: {', '.join(targets)} vs {args.baseline} ({args.model})", ""]
    for t, r in results.items():
        lines += [f"## {t}", "", f"{r.chips} chip(s) per side, TP {r.target_tp} vs {r.baseline_tp}; geomean speedup "
                  f"**{r.geomean_speedup:.2f}x**, perf/W **{r.geomean_perf_per_watt_ratio:.2f}x**", "",
                  "| phase | batch | context | dtype | base ms | target ms | speedup | perf/W x | $/Mtok base "
                  "| $/Mtok target |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for w in r.rows:
            lines.append(f"| {w.phase} | {w.batch} | {w.context} | {w.dtype} | {w.baseline_latency_ms:.3f} | "
                         f"{w.target_latency_ms:.3f} | {w.speedup:.2f} | {w.perf_per_watt_ratio:.2f} | "
                         f"{w.baseline_cost_per_mtok_usd:.3f} | {w.target_cost_per_mtok_usd:.3f} |")
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
