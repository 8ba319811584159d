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
    p.add_argument("--phase", choices=["prefill", "decode"], default="decode")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--context", type=int, default=2048,
                   help="prompt tokens (prefill) or cached tokens (decode) (default: %(default)s)")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel degree: ranks = logical cores (lnc physical cores each; spans chips)")
    p.add_argument("--dtype", default="bf16", help="weight dtype: bf16, fp16, fp8_e4m3, fp8_e5m2, int8")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default bf16)")
    p.add_argument("--fidelity", choices=["cycle", "analytical"], default="cycle")
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
            memory=args.memory, progress=not args.json, serving=args.serving, max_seq=args.max_seq)
    if args.json:
        print_json(r.to_dict())
        return 0
    lnc = f", LNC={r.lnc}: {r.physical_cores} cores" if r.lnc > 1 else ""
    print(f"{r.model} {r.phase} batch {r.batch} context {r.context} tp {r.tp} {r.dtype} on {r.chip} "
          f"({r.chips} chip(s){lnc}, {r.fidelity} fidelity, serving stack {r.serving})")
    rows = [
        ("latency_ms", f"{r.latency_ms:.3f} (device {r.device_ms:.3f} at context {r.device_context}, "
                       f"runtime {r.runtime_ms:.3f})"),
        ("tokens_per_s", f"{r.tokens_per_s:.1f}"),
        ("flops", f"{r.flops:.4g}"), ("hbm_bytes", f"{r.hbm_bytes:.4g} (graph minimum {r.min_hbm_bytes:.4g})"),
        ("hbm_gbps", f"{r.hbm_gbps:.1f}"), ("energy_j", f"{r.energy_j:.4g}"), ("power_w", f"{r.power_w:.1f}"),
        ("instructions", f"{r.instructions}"), ("wall_s", f"lower {r.lower_s:.2f}, simulate {r.sim_s:.2f}"),
    ]
    for k, v in rows:
        print(f"  {k:14s} {v}")
    print("  utilization    " + ", ".join(f"{k} {v:.0%}" for k, v in r.utilization.items()))
    for c in r.collectives:
        print(f"  collective     {c['op']} {c['bytes']} B over {c['logical_ranks']} ranks: {c['algorithm']}, "
              f"{c['time_us']:.2f} us x {c['count']}")
    return 0
