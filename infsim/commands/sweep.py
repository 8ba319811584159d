"""``infsim sweep SPEC.yaml --out DIR``: resumable design-space sweep (see infsim/studies/sweep.py)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("sweep", help="resumable design-space sweep to DIR/results.parquet")
    p.add_argument("spec", help="sweep spec YAML")
    p.add_argument("--out", required=True, help="output folder (resumes if it holds earlier results)")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: all cores)")
    p.add_argument("--scheduler", default=None, help="dask.distributed scheduler address (e.g. tcp://host:8786)")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per task (and per results part file)")
    p.add_argument("--plot", action="store_true", help="write DIR/sweep.png (Pareto front, per-axis sensitivity)")
    p.add_argument("--max-points", type=int, default=None, metavar="N",
                   help="refuse a spec of more than N (design point, workload) pairs (default: "
                        "infsim.studies.sweep.MAX_PAIRS, 100000)")
    p.add_argument("--csv", default=None, metavar="OUT.csv", help="also write every row as CSV")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from infsim.studies.plots import plot_sweep
    from infsim.studies.sweep import MAX_PAIRS, run_sweep

    df = run_sweep(args.spec, args.out, workers=args.workers, scheduler=args.scheduler, batch_size=args.batch_size,
                   progress=True, max_pairs=MAX_PAIRS if args.max_points is None else args.max_points)
    ok = df[df["status"] == "ok"] if len(df) else df
    infeasible = int((df["status"] == "infeasible").sum()) if len(df) else 0
    print(f"{len(df)} rows in {args.out}/results.parquet ({infeasible} infeasible, "
          f"{len(df) - len(ok) - infeasible} failed)")
    from infsim.studies.sweep import inert_axes

    for axis, changed in inert_axes(df).items():
        what = f"it changes only {', '.join(changed)}" if changed else "it changes no result"
        hint = " (a fixed tp uses the same cores whatever the chip has: give tp: chip)" if "cores" in axis else ""
        print(f"warning: axis {axis[5:]} does not change the latency: {what}{hint}")
    if infeasible:
        limits = df.loc[df["status"] == "infeasible", "limit"].value_counts()
        print("infeasible design points (no latency; see the 'error' column): "
              + ", ".join(f"{n} over the {lim} limit" for lim, n in limits.items()))
    if args.csv:
        from infsim.userfiles import write_output

        write_output(args.csv, df.to_csv(index=False), "--csv")
        print(f"wrote {args.csv}")
    if args.plot and len(ok):
        plot_sweep(df, f"{args.out}/sweep.png")  # the results of the feasible points, the others counted
        print(f"wrote {args.out}/sweep.png")
    return 0
