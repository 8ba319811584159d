"""Plots of the studies (matplotlib, Agg backend): comparison speedups and attribution, sweep Pareto fronts and
sensitivities. Every axis names its unit."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def check_plot_path(path: str | Path, flag: str = "--plot") -> Path:
    """``path`` checked as a plot output before the work that produces the plot: a writable place
    (:func:`infsim.userfiles.check_output`) with a file type matplotlib writes (``.png``, ``.pdf``, ``.svg``...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    from infsim.errors import InfsimError
    from infsim.userfiles import check_output

    p = check_output(path, flag)
    kinds = FigureCanvasBase.get_supported_filetypes()
    if p.suffix.lower().lstrip(".") not in kinds:
        raise InfsimError(f"{flag} {p}: expected a file name ending in one of "
                          f"{', '.join('.' + k for k in sorted(kinds))}")
    return p


def save_figure(fig: Any, path: str | Path, flag: str = "--plot") -> None:
    """``fig.savefig`` to ``path`` whole or not at all (:func:`infsim.userfiles.write_output`)."""
    from infsim.userfiles import write_output

    p = check_plot_path(path, flag)
    write_output(p, lambda f: fig.savefig(f, format=p.suffix.lower().lstrip("."), dpi=fig.dpi), flag)


def plot_compare(res: Any, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if res.attribution else 1, figsize=(12, 4.5), squeeze=False)
    ax = axes[0][0]
    labels = [f"{r.phase}\nb{r.batch} c{r.context}\n{r.dtype}" for r in res.rows]
    ax.bar(range(len(res.rows)), [r.speedup for r in res.rows], color="tab:blue")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(res.rows)), labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("speedup over baseline (x, latency ratio)")
    ax.set_title(f"{res.model}: {res.target} vs {res.baseline} ({res.chips} chip(s) each)")
    if res.attribution:
        ax2 = axes[0][1]
        items = sorted(res.attribution_log.items(), key=lambda kv: -kv[1])
        ax2.barh([k for k, _ in items], [v for _, v in items], color="tab:orange")
        ax2.axvline(0.0, color="k", lw=0.8)
        ax2.set_xlabel("Shapley contribution to mean log speedup (ln x)")
        ax2.set_title(f"attribution (total ln {sum(v for _, v in items):.2f} = {res.geomean_speedup:.2f}x geomean)")
    fig.tight_layout()
    fig.set_dpi(120)
    save_figure(fig, path)
    plt.close(fig)


def _numeric(col: Any) -> Any:
    """``col`` as floats, or ``None`` when some value is not a number (a string axis)."""
    import pandas as pd

    vals = pd.to_numeric(col, errors="coerce")
    return None if vals.isna().any() and not col.isna().equals(vals.isna()) else vals.astype(float)


def _codes(col: Any) -> Any:
    """A non-numeric column as the rank of each value among its sorted distinct values (0, 1, ...)."""
    order = {v: i for i, v in enumerate(sorted(col.astype(str).unique()))}
    return col.astype(str).map(order).astype(float)


def plot_sweep(df: Any, path: str | Path) -> None:
    """Pareto front (tokens/s vs power), the sensitivity of tokens/s to each axis, and a parallel-coordinates
    view of every design point (axes and results normalised to [0, 1], coloured by tokens/s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_cols = [c for c in df.columns if c.startswith("axis.")]
    fig, axs = plt.subplots(1, 2 + len(axes_cols), figsize=(5 * (2 + len(axes_cols)), 4), squeeze=False)
    ax = axs[0][0]
    ax.scatter(df["power_w"], df["tokens_per_s"], s=10, alpha=0.5, label="design points")
    from .sweep import pareto

    front = pareto(df)
    ax.plot(front["power_w"], front["tokens_per_s"], "r-o", ms=3, label="Pareto front")
    ax.set_xlabel("power (W)")
    ax.set_ylabel("throughput (tokens/s)")
    ax.legend(fontsize=7)
    numeric = {col: _numeric(df[col]) for col in axes_cols}
    for a, col in zip(axs[0][1:], axes_cols):
        g = df.groupby(col)["tokens_per_s"].mean()
        if numeric[col] is not None:
            a.plot(g.index.astype(float), g.values, "o-")
        else:  # a value list of names (e.g. an HBM preset): one point per value, in sorted order
            a.plot(range(len(g)), g.values, "o")
            a.set_xticks(range(len(g)), [str(v) for v in g.index], rotation=30, ha="right", fontsize=7)
        a.set_xlabel(col[5:])
        a.set_ylabel("mean throughput (tokens/s)")
    pc = axs[0][-1]
    cols = [*axes_cols, "tokens_per_s", "power_w"]
    import pandas as pd

    norm = pd.DataFrame({c: numeric[c] if numeric.get(c) is not None else
                         (df[c].astype(float) if c not in numeric else _codes(df[c])) for c in cols})
    norm = (norm - norm.min()) / (norm.max() - norm.min()).replace(0, 1)
    cmap = plt.get_cmap("viridis")
    for _, row in norm.iterrows():
        pc.plot(range(len(cols)), row.values, color=cmap(row["tokens_per_s"]), alpha=0.4, lw=0.8)
    pc.set_xticks(range(len(cols)), [c.replace("axis.", "") for c in cols], rotation=30, ha="right", fontsize=7)
    pc.set_ylabel("normalised value (0 = min, 1 = max of the sweep)")
    pc.set_title("parallel coordinates (colour: tokens/s)")
    fig.tight_layout()
    fig.set_dpi(110)
    save_figure(fig, path)
    plt.close(fig)
