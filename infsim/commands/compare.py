"""``infsim compare``: next generation vs baseline on a default workload set, with attribution."""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from infsim.commands._util import print_json


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare two chips on a workload set, with speedup attribution")
    p.add_argument("--baseline", default="inf2", help="baseline chip preset or YAML (default: %(default)s)")
    p.add_argument("--target", required=True, help="target chip preset or YAML")
    p.add_argument("--model", default="llama-2-7b", help="zoo name or config.json (default: %(default)s)")
    p.add_argument("--trace", default=None, metavar="DIR",
                   help="write both chips' cycle traces of one workload (--trace-workload) to DIR, side by side")
    p.add_argument("--trace-workload", default="decode:1:2048", metavar="PHASE:BATCH:CONTEXT",
                   help="the workload --trace runs (default: %(default)s)")
    p.add_argument("--chips", type=int, default=None, help="chips per side (default: smallest that fits)")
    p.add_argument("--context", type=int, default=None, metavar="N",
                   help="longest context of the workload set (default: 2048, or what the model holds)")
    p.add_argument("--fidelity", choices=["analytical", "cycle"], default="analytical",
                   help="analytical (closed forms per op) or cycle (lower and simulate) (default: %(default)s)")
    p.add_argument("--no-attribution", action="store_true", help="skip the Shapley attribution")
    p.add_argument("--serving", default="none", metavar="STACK",
                   help="serving stack on both sides (default: %(default)s: device time only)")
    p.add_argument("--json", action="store_true", help="print one JSON object (rows, attribution, provenance)")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="bar charts of speedup and attribution")
    p.add_argument("--csv", default=None, metavar="OUT.csv", help="write the per-workload rows as CSV")
    p.set_defaults(func=_run)


def _traces(args: argparse.Namespace, r: Any) -> None:
    """Both chips' cycle-fidelity traces of one workload, as each runs it in the comparison (same chip count,
    tensor parallel over all their logical cores, the same serving stack), into ``args.trace``."""
    from pathlib import Path

    from infsim.config import load_chip
    from infsim.errors import InfsimError
    from infsim.models.graph import Workload
    from infsim.runner import run_workload

    try:
        phase, batch, ctx = args.trace_workload.split(":")
        wl = Workload.make(phase, int(batch), int(ctx))
    except ValueError:
        raise InfsimError(f"--trace-workload {args.trace_workload}: expected PHASE:BATCH:CONTEXT, e.g. decode:1:2048") \
            from None
    out = Path(args.trace)
    out.mkdir(parents=True, exist_ok=True)
    for side, name in (("baseline", args.baseline), ("target", args.target)):
        cfg = load_chip(name)
        path = out / f"{side}-{cfg.name}.json.gz"
        tp = r.baseline_tp if side == "baseline" else r.target_tp
        res = run_workload(cfg, args.model, dataclasses.replace(wl, tp=tp), serving=args.serving, trace=path)
        print(f"wrote {path} ({res.latency_ms:.3f} ms at cycle fidelity)")


def _run(args: argparse.Namespace) -> int:
    from infsim.studies.compare import compare

    if args.plot:
        from infsim.studies.plots import check_plot_path

        check_plot_path(args.plot)  # before the comparison, not after it
    if args.csv:
        from infsim.userfiles import check_output

        check_output(args.csv, "--csv")
    r = compare(args.baseline, args.target, args.model, chips=args.chips, context=args.context,
                fidelity=args.fidelity, attribution=not args.no_attribution, progress=not args.json,
                serving=args.serving)
    if args.trace:
        _traces(args, r)
    if args.plot:
        from infsim.studies.plots import plot_compare

        plot_compare(r, args.plot)
    if args.csv:
        import pandas as pd

        from infsim.userfiles import write_output

        write_output(args.csv, pd.DataFrame([dataclasses.asdict(w) for w in r.rows]).to_csv(index=False), "--csv")
    if args.json:
        from infsim.config import load_chip
        from infsim.provenance import provenance

        print_json({**r.to_dict(), "provenance": provenance([load_chip(args.baseline), load_chip(args.target)])})
        return 0
    print(f"{r.model}: {r.target} vs {r.baseline}, {r.chips} chip(s) each (TP {r.target_tp} vs {r.baseline_tp}), "
          f"{r.fidelity} fidelity, serving stack {r.serving}")
    from tabulate import tabulate

    table = [[w.phase, w.batch, w.context, w.dtype, f"{w.baseline_latency_ms:.3f}", f"{w.target_latency_ms:.3f}",
              f"{w.speedup:.2f}x", f"{w.target_tokens_per_s:.1f}", f"{w.baseline_energy_per_token_j:.4f}",
              f"{w.target_energy_per_token_j:.4f}", f"{w.perf_per_watt_ratio:.2f}x",
              f"{w.baseline_cost_per_mtok_usd:.2f}", f"{w.target_cost_per_mtok_usd:.2f}", w.baseline_limit,
              w.target_limit] for w in r.rows]
    print(tabulate(table, headers=["phase", "batch", "ctx", "dtype", "base ms", "target ms", "speedup",
                                   "tok/s target", "J/tok base", "J/tok target", "perf/W", "$/Mtok base",
                                   "$/Mtok target", "base limited by", "target limited by"],
                   tablefmt="simple", disable_numparse=True))
    if r.infeasible:
        print(f"infeasible ({len(r.infeasible)} workload(s), not in the rows or the geomeans):")
        print(tabulate([[w.phase, w.batch, w.context, w.dtype, w.chip, w.limit, w.reason] for w in r.infeasible],
                       headers=["phase", "batch", "ctx", "dtype", "chip", "limit", "reason"], tablefmt="simple",
                       disable_numparse=True))
    print(f"geomean speedup {r.geomean_speedup:.2f}x, perf/W {r.geomean_perf_per_watt_ratio:.2f}x"
          + (f" over {len(r.rows)} of {len(r.rows) + len(r.infeasible)} workloads" if r.infeasible else ""))
    if r.attribution:
        print(f"attribution of the {r.geomean_speedup:.2f}x geomean speedup (Shapley shares of the mean log speedup):")
        att = sorted(r.attribution.items(), key=lambda kv: -kv[1])
        print(tabulate([[g, f"{v:+.1%}", f"{math.exp(r.attribution_log[g]):.3f}x"] for g, v in att],
                       headers=["resources", "share", "factor"], tablefmt="simple", disable_numparse=True))
    for n in r.notes:
        print(f"note: {n}")
    return 0
