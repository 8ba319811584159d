"""``infsim what-it-takes``: cheapest resource scalings of a baseline chip that reach a target speedup."""

from __future__ import annotations

import argparse
from typing import Any

from infsim.commands._util import print_json


def register(sub: Any) -> None:
    p = sub.add_parser("what-it-takes", help="cheapest resource scalings that reach a target speedup")
    p.add_argument("--baseline", default="inf2", help="chip preset or YAML to scale (default: %(default)s)")
    p.add_argument("--speedup", type=float, required=True, help="target geometric-mean speedup over the baseline")
    p.add_argument("--model", default="llama-2-7b", help="zoo name or config.json (default: %(default)s)")
    p.add_argument("--phase", choices=["decode", "prefill"], default="decode",
                   help="the phase's workload set (default: %(default)s)")
    p.add_argument("--levels", default="1,1.5,2,4,8", help="scaling levels per resource (default: %(default)s)")
    p.add_argument("--chips", type=int, default=None, help="chips (default: the fewest whose HBM holds the model)")
    p.add_argument("--context", type=int, default=None, metavar="N",
                   help="longest context of the workload set (default: 2048, or what the model holds)")
    p.add_argument("--method", choices=["branch-and-bound", "exhaustive"], default="branch-and-bound",
                   help="search (default: %(default)s; exhaustive is the slow reference)")
    p.add_argument("--json", action="store_true", help="print one JSON object (with provenance)")
    p.add_argument("--write-chip", default=None, metavar="OUT.yaml",
                   help="write the scaled chip (the cheapest reaching the target) as a chip YAML to run or sweep")
    p.set_defaults(func=_run)


def _tidy(v: Any) -> Any:
    """Config values as written: floats to 12 significant digits (``2.8 * 1.5`` is 4.2, not 4.199999999999999)."""
    if isinstance(v, float):
        return float(f"{v:.12g}")
    if isinstance(v, dict):
        return {k: _tidy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_tidy(x) for x in v]
    return v


def _write_chip(r: Any, path: str) -> None:
    """The winner (or, when unreachable, the best within the bounds) as a chip YAML that loads as a preset."""
    import yaml

    from infsim.commands.chips import _Dumper
    from infsim.config import load_chip
    from infsim.studies.inverse import scaled
    from infsim.userfiles import write_output

    sc = r.scalings or r.best_within_bounds["scalings"]
    cfg = scaled(load_chip(r.baseline), sc)
    what = "reaches" if r.reachable else "does not reach (the best within the levels)"
    head = (f"# {r.baseline} scaled by infsim what-it-takes: " + ", ".join(f"{k} x{v:g}" for k, v in sc.items()
                                                                            if v != 1)
            + f"\n# {what} {r.target_speedup:g}x {r.phase} on {r.model} (achieved {r.achieved_speedup:.3f}x); every "
            f"number is {r.baseline}'s (see its preset for sources) times the scaling of its resource\n")
    body = yaml.dump(_tidy(cfg.model_dump(mode="json")), Dumper=_Dumper, sort_keys=False, width=120)
    write_output(path, head + body, "--write-chip")
    print(f"wrote {path} (chip '{cfg.name}')")


def _run(args: argparse.Namespace) -> int:
    from infsim.errors import InfsimError
    from infsim.studies.inverse import what_it_takes

    try:
        levels = tuple(float(x) for x in args.levels.split(","))
    except ValueError:
        raise InfsimError(f"--levels '{args.levels}': expected comma-separated numbers") from None
    if args.write_chip:
        from infsim.userfiles import check_output

        check_output(args.write_chip, "--write-chip")  # before the search, not after it
    r = what_it_takes(args.baseline, args.speedup, args.model, args.phase, levels, args.chips,
                      progress=not args.json, method=args.method, context=args.context)
    if args.write_chip:
        _write_chip(r, args.write_chip)
    if args.json:
        from infsim.config import load_chip
        from infsim.provenance import provenance

        print_json({**r.to_dict(), "provenance": provenance([load_chip(args.baseline)])})
        return 0
    for n in r.notes:
        print(f"note: {n}")
    if not r.reachable:
        b = r.best_within_bounds
        print(f"{args.speedup}x {args.phase} on {args.model} is unreachable within levels {args.levels}: the best is "
              f"{b['speedup']:.3f}x with " + ", ".join(f"{k} x{v:g}" for k, v in b["scalings"].items() if v != 1))
        _print_limits(r)
        return 0
    print(f"{args.speedup}x {args.phase} on {args.model} over {r.baseline}: cost proxy {r.cost:.2f}, achieved "
          f"{r.achieved_speedup:.2f}x, perf/W {r.perf_per_watt_ratio:.2f}x ({r.evaluated} configurations evaluated)")
    _print_scalings(r.scalings)
    _print_limits(r)
    return 0


def _print_scalings(scalings: dict[str, float]) -> None:
    from tabulate import tabulate

    from infsim.studies.inverse import RESOURCES

    def fields(k: str) -> str:
        fs = [f.lstrip("/") for f in RESOURCES[k][0]]
        return ", ".join(fs[:2]) + (f" and {len(fs) - 2} more" if len(fs) > 2 else "")

    rows = [[k, f"/{v:g}" if RESOURCES[k][0][0].startswith("/") else f"x{v:g}", fields(k)]
            for k, v in scalings.items() if v != 1]
    print(tabulate(rows, headers=["resource", "scaling", "config fields"], tablefmt="simple", disable_numparse=True))


def _print_limits(r: Any) -> None:
    from tabulate import tabulate

    rows = [[w, r.baseline_limits[w], r.scaled_limits.get(w, "")] for w in r.baseline_limits]
    print("what limits each workload (share of the step; infsim run prints the whole breakdown):")
    print(tabulate(rows, headers=["workload", r.baseline, "scaled"], tablefmt="simple", disable_numparse=True))
