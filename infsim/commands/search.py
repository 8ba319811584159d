"""``infsim search SPEC.yaml --trials N --objectives tokens_per_s:max,power_w:min --out DIR`` (Optuna)."""

from __future__ import annotations

import argparse
from typing import Any

from infsim.errors import InfsimError


def register(sub: Any) -> None:
    p = sub.add_parser("search", help="multi-objective search over a sweep spec's axes (Optuna NSGA-II)")
    p.add_argument("spec")
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--objectives", default="tokens_per_s:max,power_w:min",
                   help="comma-separated NAME:max|min (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder holding study.db (resumes) and pareto.csv")
    p.add_argument("--seed", type=int, default=0, help="sampler seed, 0..2**32-1 (default: %(default)s)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from infsim.studies.search import run_search

    objs = []
    for item in (x.strip() for x in args.objectives.split(",") if x.strip()):
        name, _, d = item.partition(":")
        if d not in ("max", "min"):
            raise InfsimError(f"--objectives '{item}': expected NAME:max or NAME:min")
        objs.append((name, d))
    df = run_search(args.spec, args.out, args.trials, objs, seed=args.seed, progress=True)
    print(f"Pareto set ({len(df)} trials), also in {args.out}/pareto.csv:")
    print(df.to_string(index=False))
    return 0
