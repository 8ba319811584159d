"""``infsim run``: one prefill or decode step of a model on a chip (see infsim/runner.py)."""

from __future__ import annotations

import argparse
from typing import Any

from infsim.commands._util import print_json


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="simulate one prefill/decode step of a transformer on a chip",
                       description="Lower a model step to an ISA program and simulate it.")
    p.add_argument("--chip", default="inf2", help="chip preset or YAML path (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one chip config field (repeatable)")
    p.add_argument("--model", required=True, help="zoo name (e.g. llama-2-7b) or path to a config.json")
    p.add_argument("--phase", choices=["prefill", "decode"], default="decode",
                   help="prefill a prompt or decode one token per sequence (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="sequences in the step (default: %(default)s)")
    p.add_argument("--context", type=int, default=2048,
                   help="prompt tokens (prefill) or cached tokens (decode) (default: %(default)s)")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel degree: ranks = logical cores (lnc physical cores each; spans chips)")
    p.add_argument("--dtype", default="bf16", help="weight dtype: bf16, fp16, fp8_e4m3, fp8_e5m2, int8")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default bf16)")
    p.add_argument("--fidelity", choices=["cycle", "analytical"], default="cycle",
                   help="cycle (lower to ISA and simulate) or analytical (closed forms per op) (default: %(default)s)")
    p.add_argument("--trace", default=None, metavar="OUT.json.gz",
                   help="write a Perfetto/Chrome trace of the run (cycle fidelity): trace-event JSON, or Perfetto's "
                        "protobuf format for a .pftrace path (extra infsim[perfetto]); .gz compresses")
    p.add_argument("--trace-max-events", type=int, default=None, metavar="N",
                   help="cap the trace at about N events, sampling layers beyond it (default: "
                        "infsim.trace.MAX_EVENTS, 1,000,000)")
    p.add_argument("--memory", default=None, metavar="MODEL",
                   help="HBM model behind the memory interface, overriding the chip's hbm.memory_model (dram: "
                        "DRAM-level, the presets' default; simple: bandwidth+latency)")
    p.add_argument("--serving", default="none", metavar="STACK",
                   help="serving stack (infsim/config/serving/: none, tnx, nxdi, torch-neuronx, or a YAML path): "
                        "pads to its buckets and adds its host/runtime time (default: %(default)s, the bare chip)")
    p.add_argument("--max-seq", type=int, default=None, metavar="N",
                   help="sequence length the serving stack compiled for (default: the model's positions)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from infsim.runner import run

    r = run(args.chip, args.model, phase=args.phase, batch=args.batch, context=args.context, tp=args.tp,
            dtype=args.dtype, kv_dtype=args.kv_dtype, fidelity=args.fidelity, overrides=args.overrides,
            memory=args.memory, progress=not args.json, serving=args.serving, max_seq=args.max_seq,
            trace=args.trace, trace_max_events=args.trace_max_events)
    if args.json:
        from infsim.config import load_chip
        from infsim.provenance import provenance

        print_json({**r.to_dict(), "provenance": provenance([load_chip(args.chip, args.overrides)])})
        return 0
    from tabulate import tabulate

    from infsim.breakdown import RESOURCE_LABELS, Breakdown

    lnc = f", LNC={r.lnc}: {r.physical_cores} cores" if r.lnc > 1 else ""
    print(f"{r.model} {r.phase} batch {r.batch} context {r.context} tp {r.tp} {r.dtype} on {r.chip} "
          f"({r.chips} chip(s){lnc}, {r.fidelity} fidelity, serving stack {r.serving})")
    rows = [
        ("latency", f"{r.latency_ms:.3f} ms (device {r.device_ms:.3f} at context {r.device_context}, "
                    f"runtime {r.runtime_ms:.3f})"),
        ("throughput", f"{r.tokens_per_s:.1f} tokens/s"),
        ("FLOPs", f"{r.flops:.4g}"), ("HBM traffic", f"{r.hbm_bytes:.4g} bytes (graph minimum {r.min_hbm_bytes:.4g})"),
        ("HBM bandwidth", f"{r.hbm_gbps:.1f} GB/s"), ("energy", f"{r.energy_j:.4g} J"), ("power", f"{r.power_w:.1f} W"),
    ]
    if r.fidelity == "cycle":
        rows += [("instructions", f"{r.instructions}"),
                 ("wall time", f"lower {r.lower_s:.2f} s, simulate {r.sim_s:.2f} s")]
        rows.append(("utilization", ", ".join(f"{k} {v:.0%}" for k, v in r.utilization.items())))
    for c in r.collectives:
        rows.append(("collective", f"{c['op']} {c['bytes']} B over {c['logical_ranks']} ranks: {c['algorithm']}, "
                                   f"{c['time_us']:.2f} us x {c['count']}"))
    print(tabulate(rows, tablefmt="plain", disable_numparse=True))
    if r.breakdown:
        bd = Breakdown.from_dict(r.breakdown)
        step = bd.step
        print(f"\nlimited by: {RESOURCE_LABELS[step['limit']]} ({step['limit_share']:.0%} of the step; a share is a "
              "resource's work over the time, 'fixed latencies' the time no resource accounts for)")
        print(bd.table())
    return 0
