"""``infsim collective OP --chip NAME [--set F=V] --ranks R[,R...] --bytes S[,S...] [--algorithm A] [--json]``.

Simulates one collective per (ranks, bytes) point on the chip's instance (:mod:`infsim.hw.collectives`,
event simulation with link contention) and prints ``time_us`` and ``bus_gbps`` per point (bus bandwidth in
the NCCL sense: ``2(p-1)/p * S / time`` for all_reduce, ``(p-1)/p * S / time`` for all_gather and
reduce_scatter, ``S / time`` for send_recv). ``--ranks R`` uses global cores ``0..R-1`` (packed: both cores of
chip 0 first on inf2); send_recv sends from the first of them to the last. Sizes take binary suffixes:
``4K`` = 4096, ``1M`` = 2^20, ``1G`` = 2^30 (also ``KiB``/``MiB``/``GiB``, decimals such as ``1.5M``).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from infsim.commands._util import add_chip_args, chip_from_args, print_json
from infsim.errors import InfsimError

_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$")


def parse_size(text: str) -> int:
    """``'16M'`` -> 16777216; ``'4K'`` -> 4096; ``'1.5M'`` -> 1572864; plain integers as bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise InfsimError(f"--bytes: cannot parse size '{text}' (examples: 4096, 4K, 1M, 16MiB)")
    val = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if val != int(val):
        raise InfsimError(f"--bytes: size '{text}' is not a whole number of bytes")
    return int(val)


def parse_list(text: str, conv: Any, what: str) -> list[Any]:
    items = [x for x in text.split(",") if x.strip()]
    if not items:
        raise InfsimError(f"{what}: empty list")
    return [conv(x) for x in items]


def _rank(text: str) -> int:
    try:
        r = int(text)
    except ValueError:
        raise InfsimError(f"--ranks: '{text}' is not an integer") from None
    if r < 1:
        raise InfsimError(f"--ranks: {r} must be >= 1")
    return r


def register(subparsers: Any) -> None:
    from infsim.hw.collectives import ALGORITHMS, OPS

    p = subparsers.add_parser("collective", help="simulate a collective over the chip-to-chip links",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("op", type=lambda s: s.replace("-", "_").lower(), choices=OPS, metavar="OP",
                   help=f"one of: {', '.join(OPS)}")
    add_chip_args(p)
    p.add_argument("--ranks", required=True, help="comma-separated rank counts, e.g. 2,4,8,12,24")
    p.add_argument("--bytes", dest="sizes", required=True, help="comma-separated sizes, e.g. 8K,1M,16M")
    p.add_argument("--algorithm", default="auto", choices=("auto", *ALGORITHMS),
                   help="auto: the runtime's choice per size (infsim/hw/collectives/choice.py), or the chip's "
                        "pinned links.collective_algorithm (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_collective)


def cmd_collective(args: argparse.Namespace) -> int:
    from infsim.hw.collectives import simulate_collective

    chip = chip_from_args(args)
    ranks = parse_list(args.ranks, _rank, "--ranks")
    sizes = parse_list(args.sizes, parse_size, "--bytes")
    total = chip.instance.chips * chip.cores_per_chip
    for r in ranks:
        if r > total:
            raise InfsimError(f"--ranks: {r} exceeds the {total} cores of {chip.instance.name} "
                              f"({chip.instance.chips} chips x {chip.cores_per_chip})")
        if args.op == "send_recv" and r < 2:
            raise InfsimError("--ranks: send_recv needs at least 2 ranks")
    points = []
    for r in ranks:
        for s in sizes:
            res = simulate_collective(chip, args.op, r, s, args.algorithm)
            points.append({
                "ranks": r, "bytes": s, "algorithm": res.algorithm, "time_us": res.time_us,
                "bus_gbps": res.bus_gbps,
                "alg_gbps": res.alg_gbps, "steps": res.steps,
                "contention_free_us": res.contention_free_ns / 1e3,
                "closed_form_us": None if res.closed_form_ns is None else res.closed_form_ns / 1e3,
                "chips": len({c // chip.cores_per_chip for c in res.cores}),
                "chip_link_bytes": res.chip_link_bytes, "link_energy_j": res.link_energy_j,
            })
    if args.json:
        print_json({"op": args.op, "chip": chip.name, "instance": chip.instance.name,
                    "algorithm": args.algorithm, "topology": chip.links.topology, "points": points})
        return 0
    print(f"{args.op} on {chip.name} ({chip.instance.name}, {chip.links.topology}), algorithm {args.algorithm}")
    from tabulate import tabulate

    rows = [[pt["ranks"], pt["chips"], pt["bytes"], pt["algorithm"], pt["steps"], f"{pt['time_us']:.3f}",
             f"{pt['bus_gbps']:.2f}", "-" if pt["closed_form_us"] is None else f"{pt['closed_form_us']:.3f}"]
            for pt in points]
    print(tabulate(rows, headers=["ranks", "chips", "bytes", "algorithm", "steps", "time_us", "bus_gbps", "closed_us"],
                   tablefmt="simple", disable_numparse=True, colalign=["right"] * 8))
    return 0
