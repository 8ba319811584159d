"""Plots (matplotlib, Agg backend): comparison speedups and attribution. Every axis names its unit."""

from __future__ import annotations

from typing import Any


def plot_compare(res: Any, path: str) -> None:
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
