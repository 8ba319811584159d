"""``infsim hbm``: run a request pattern through the DRAM-command-level HBM model.

Prints ``achieved_gbps``, ``efficiency`` (0..1 of pin bandwidth), ``row_hit_rate``, ``avg_latency_ns``
(admission to last data), ``p99_latency_ns``, energy and the model's speed. Transfers above
``--exact-limit`` bytes use the steady-state shortcut for time/bandwidth (``extrapolated: true``) and the
simulated window for the other statistics. The command-by-command simulation holds every request in memory
(about 4 bytes per byte moved, and ~1 min per 256 MiB on one core), so ``--exact-limit`` is at most
``MAX_EXACT_BYTES``; ``--bytes`` is at most ``MAX_BYTES``.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

from infsim.config.loader import shorten
from infsim.errors import InfsimError

from ._util import print_json

_SIZE = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
#: largest transfer simulated command by command (memory and time grow with it; see the module docstring)
MAX_EXACT_BYTES = 256 * 2**20
#: largest transfer (1 EiB; the extrapolation is exact arithmetic on a periodic timeline)
MAX_BYTES = 2**60


def _human(n: int) -> str:
    """``268435456`` -> ``'256 MiB'`` (binary units)."""
    for unit in ("EiB", "PiB", "TiB", "GiB", "MiB", "KiB"):
        scale = 2 ** (10 * ("KMGTPE".index(unit[0]) + 1))
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def parse_bytes(text: str, flag: str = "--bytes", limit: int = MAX_BYTES) -> int:
    """``'16M'``/``'16MiB'`` -> 16 MiB, ``'13.5GB'`` -> 13.5e9, ``'4096'`` -> 4096; at most ``limit``."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([KMG]?)(I?B?)\s*", text.upper())
    if not m:
        raise InfsimError(f"{flag} '{text}': expected a number with optional K/M/G (binary) or KB/MB/GB suffix")
    num, prefix, tail = m.groups()
    unit = prefix + ("B" if tail == "B" and prefix else "")
    val = float(num) * _SIZE[unit]
    if val < 1:
        raise InfsimError(f"{flag} '{text}': must be >= 1 byte")
    if val > limit:
        raise InfsimError(f"{flag} '{shorten(text)}': at most {_human(limit)}")
    return int(val)


def register(sub: Any) -> None:
    from infsim.hw.hbm.patterns import PATTERNS

    p = sub.add_parser("hbm", help="DRAM-command-level HBM model on a request pattern",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hbm", required=True, metavar="PRESET", help="HBM preset name or YAML path")
    p.add_argument("--stacks", type=int, default=1, help="HBM stacks (default 1)")
    p.add_argument("--channels", type=int, default=None, help="override channels (or pseudo-channels) per stack")
    p.add_argument("--pattern", choices=PATTERNS, default="stream", help="access pattern (default: %(default)s)")
    p.add_argument("--write", action="store_true", help="stream/random/bank-stride as writes instead of reads")
    p.add_argument("--page-policy", choices=("open", "closed"), default=None, help="override the preset's policy")
    p.add_argument("--bytes", dest="nbytes", default="16M", help="bytes to move (K/M/G binary, KB/MB/GB decimal)")
    p.add_argument("--exact-limit", default="64M", help="largest transfer simulated command by command")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from infsim.hw.hbm import HbmModel

    overrides: dict[str, Any] = {}
    if args.channels is not None:
        if args.channels < 1:
            raise InfsimError(f"--channels must be >= 1, got {args.channels}")
        overrides["organization.channels"] = args.channels
    if args.page_policy:
        overrides["controller.page_policy"] = args.page_policy
    from infsim.config.schema import MAX_HBM_STACKS

    if not 1 <= args.stacks <= MAX_HBM_STACKS:
        raise InfsimError(f"--stacks must be in 1..{MAX_HBM_STACKS}, got {args.stacks}")
    nbytes = parse_bytes(args.nbytes)
    limit = parse_bytes(args.exact_limit, "--exact-limit", MAX_EXACT_BYTES)
    model = HbmModel(args.hbm, stacks=args.stacks, overrides=overrides)
    if nbytes <= limit:
        stats = model.run_pattern(args.pattern, nbytes, is_write=args.write).stats
    else:
        stats = model.run_pattern(args.pattern, limit, is_write=args.write).stats
        scale = nbytes / stats.bytes
        t_ns = model.stream_time_ns(nbytes, args.write, args.pattern, refresh="cold")
        stats.elapsed_ns = t_ns
        stats.elapsed_cycles = int(round(t_ns / model.cfg.organization.tck_ns))
        stats.achieved_gbps = nbytes / t_ns
        stats.efficiency = stats.achieved_gbps / stats.peak_gbps
        stats.energy_j = {k: v * scale for k, v in stats.energy_j.items()}
        stats.bytes = nbytes
        stats.requests = math.ceil(nbytes / model.access_bytes)
        stats.extrapolated = True
        stats.notes.append(f"time from the steady-state shortcut; other statistics from a {limit}-byte window")
    out = {"preset": stats.preset, "pattern": args.pattern, "write": bool(args.write), **stats.to_dict()}
    if args.json:
        print_json(out)
        return 0
    print(f"{stats.preset} x{stats.stacks} stack(s), {stats.channels} channels, pattern {args.pattern}, "
          f"{stats.bytes} bytes{' (extrapolated)' if stats.extrapolated else ''}")
    rows = [
        ("achieved_gbps", f"{stats.achieved_gbps:.1f} of {stats.peak_gbps:.1f} peak"),
        ("efficiency", f"{stats.efficiency:.3f}"),
        ("row_hit_rate", f"{stats.row_hit_rate:.3f}"),
        ("avg_latency_ns", f"{stats.avg_latency_ns:.1f}"),
        ("p99_latency_ns", f"{stats.p99_latency_ns:.1f}"),
        ("energy_j", f"{stats.energy_j['total']:.4g} ({stats.pj_per_bit:.2f} pJ/bit)"),
        ("commands_per_s", f"{stats.commands_per_s:.3g}"),
    ]
    for k, v in rows:
        print(f"  {k:<16} {v}")
    return 0
