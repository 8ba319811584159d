"""``infsim gemm M N K``: time one GEMM ``C[M,N] = A[M,K] @ B[K,N]`` on one tensor engine.

Prints ``total_cycles``, ``total_ns``, ``utilization`` (0..1) and the tile count. ``--compat scalesim``
gives exactly SCALE-Sim 3.0.0's "Total Cycles" for the same GEMM, array and dataflow (see
:mod:`infsim.hw.systolic` for the model and the differences between the modes).
"""

from __future__ import annotations

import argparse
from typing import Any

from infsim.commands._util import add_chip_args, chip_from_args, print_json
from infsim.errors import InfsimError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _array(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS, e.g. 128x128: {text!r}")
    return _positive(parts[0]), _positive(parts[1])


def register(sub: Any) -> None:
    p = sub.add_parser("gemm", help="cycles and utilization of one GEMM on the tensor engine",
                       description="Time one GEMM C[M,N] = A[M,K] @ B[K,N] on one tensor engine: total_cycles, "
                                   "total_ns, utilization (0..1) and tiles.")
    p.add_argument("m", type=_positive, metavar="M", help="rows of A and C")
    p.add_argument("n", type=_positive, metavar="N", help="columns of B and C")
    p.add_argument("k", type=_positive, metavar="K", help="contraction dimension")
    add_chip_args(p)
    p.add_argument("--dataflow", choices=["ws", "os", "is"], default="ws",
                   help="ws: B (K x N) stationary; is: A stationary; os: output stationary (scalesim only)")
    p.add_argument("--array", type=_array, metavar="RxC", help="override tensor_engine rows x cols")
    p.add_argument("--compat", choices=["scalesim"], help="reproduce SCALE-Sim 3.0.0's Total Cycles")
    p.add_argument("--dtype", default="bf16", help="input dtype (native mode rate; default bf16)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infsim.config.loader import validate_model
    from infsim.config.schema import TensorEngineConfig
    from infsim.hw.systolic import gemm

    chip = chip_from_args(args)
    te = chip.tensor_engine
    if args.array is not None:  # validated like a chip field (sensible ranges)
        te = validate_model(TensorEngineConfig, {**te.model_dump(), "rows": args.array[0], "cols": args.array[1]},
                            "--array", {"rows": f"--array {args.array[0]}x{args.array[1]}: rows",
                                        "cols": f"--array {args.array[0]}x{args.array[1]}: cols"})
    if args.compat is None and args.dtype not in te.macs_per_pe_per_cycle:
        raise InfsimError(f"--dtype {args.dtype}: {chip.name} tensor engine supports "
                          f"{', '.join(sorted(te.macs_per_pe_per_cycle))}")
    res = gemm(args.m, args.n, args.k, te, dtype=args.dtype, dataflow=args.dataflow, compat=args.compat,
               psum_banks=chip.psum.banks)
    out = res.to_dict()
    out["chip"] = chip.name
    if args.json:
        print_json(out)
    else:
        mode = f"compat {res.compat}" if res.compat else "native"
        print(f"gemm {res.m}x{res.n}x{res.k} on {res.rows}x{res.cols} ({chip.name}, {res.dataflow}, {res.dtype}, "
              f"{mode})")
        print(f"  total_cycles  {res.total_cycles}")
        print(f"  total_ns      {res.total_ns:.1f}")
        print(f"  utilization   {res.utilization:.4f}")
        print(f"  tiles         {res.tiles}")
    return 0
