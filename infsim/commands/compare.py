"""``infsim compare``: next generation vs baseline on a default workload set, with attribution."""

from __future__ import annotations

import argparse
from typing import Any

from infsim.commands._util import print_json


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare two chips on a workload set, with speedup attribution")
    p.add_argument("--baseline", default="inf2", help="baseline chip preset or YAML (default: %(default)s)")
    p.add_argument("--target", required=True, help="target chip preset or YAML")
    p.add_argument("--model", default="llama-2-7b", help="zoo name or config.json (default: %(default)s)")
    p.add_argument("--chips", type=int, default=None, help="chips per side (default: smallest that fits)")
    p.add_argument("--context", type=int, default=None, metavar="N",
                   help="longest context of the workload set (default: 2048, or what the model holds)")
    p.add_argument("--fidelity", choices=["analytical", "cycle"], default="analytical")
    p.add_argument("--no-attribution", action="store_true", help="skip the Shapley attribution")
    p.add_argument("--serving", default="none", metavar="STACK",
                   help="serving stack on both sides (default: %(default)s: device time only)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="bar charts of speedup and attribution")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from infsim.studies.compare import compare

    if args.plot:
        from infsim.studies.plots import check_plot_path

        check_plot_path(args.plot)  # before the comparison, not after it
    r = compare(args.baseline, args.target, args.model, chips=args.chips, context=args.context,
                fidelity=args.fidelity, attribution=not args.no_attribution, progress=not args.json,
                serving=args.serving)
    if args.plot:
        from infsim.studies.plots import plot_compare

        plot_compare(r, args.plot)
    if args.json:
        print_json(r.to_dict())
        return 0
    print(f"{r.model}: {r.target} vs {r.baseline}, {r.chips} chip(s) each (TP {r.target_tp} vs {r.baseline_tp}), "
          f"{r.fidelity} fidelity, serving stack {r.serving}")
    hdr = (f"{'phase':8s} {'batch':>5s} {'ctx':>5s} {'dtype':9s} {'base ms':>9s} {'target ms':>9s} {'speedup':>8s} "
           f"{'tok/s target':>12s} {'J/tok base':>10s} {'J/tok tgt':>10s} {'perf/W x':>8s} {'$/Mtok base':>11s} "
           f"{'$/Mtok tgt':>10s}")
    print(hdr)
    for w in r.rows:
        print(f"{w.phase:8s} {w.batch:5d} {w.context:5d} {w.dtype:9s} {w.baseline_latency_ms:9.3f} "
              f"{w.target_latency_ms:9.3f} {w.speedup:8.2f} {w.target_tokens_per_s:12.1f} "
              f"{w.baseline_energy_per_token_j:10.4f} {w.target_energy_per_token_j:10.4f} "
              f"{w.perf_per_watt_ratio:8.2f} {w.baseline_cost_per_mtok_usd:11.2f} {w.target_cost_per_mtok_usd:10.2f}")
    print(f"geomean speedup {r.geomean_speedup:.2f}x, perf/W {r.geomean_perf_per_watt_ratio:.2f}x")
    if r.attribution:
        print("attribution (Shapley share of the mean log speedup):")
        for g, v in sorted(r.attribution.items(), key=lambda kv: -kv[1]):
            print(f"  {g:10s} {v:7.1%}  (log {r.attribution_log[g]:+.3f})")
    for n in r.notes:
        print(f"note: {n}")
    return 0
