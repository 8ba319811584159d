"""``infsim search SPEC.yaml --trials N --objectives tokens_per_s:max,power_w:min --out DIR`` (Optuna)."""

from __future__ import annotations

import argparse
from typing import Any

from infsim.errors import InfsimError


def register(sub: Any) -> None:
    p = sub.add_parser("search", help="multi-objective search over a sweep spec's axes (Optuna NSGA-II)")
    p.add_argument("spec", help="sweep spec YAML (its axes: value lists or {min, max} ranges)")
    p.add_argument("--trials", type=int, required=True, help="trials in all (a resumed study counts its earlier ones)")
    p.add_argument("--objectives", default="tokens_per_s:max,power_w:min",
                   help="comma-separated NAME:max|min (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder holding study.db (resumes) and pareto.csv")
    p.add_argument("--seed", type=int, default=0, help="sampler seed, 0..2**32-1 (default: %(default)s)")
    p.add_argument("--plot", action="store_true",
                   help="write DIR/search.png: every trial's objectives with the Pareto front")
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
    # the same design found by several trials: one row, with the trials that found it
    keys = [c for c in df.columns if c != "trial"]
    designs = (df.groupby(keys, sort=False)["trial"].agg(lambda t: ", ".join(str(x) for x in sorted(t)))
               .reset_index().rename(columns={"trial": "trials"})) if len(df) else df
    print(f"Pareto set: {len(designs)} design(s) from {len(df)} trial(s) (all in {args.out}/pareto.csv):")
    print(designs.to_markdown(index=False, floatfmt=".4g"))
    if args.plot:
        import pandas as pd

        from infsim.studies.plots import plot_search

        plot_search(pd.read_csv(f"{args.out}/trials.csv"), df, objs, f"{args.out}/search.png")
        print(f"wrote {args.out}/search.png")
    return 0
