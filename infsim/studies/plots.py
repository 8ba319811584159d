"""Every figure infsim draws, in one style: fonts readable at 100%, a unit on every axis, decode and prefill in
their own colours, shares in % and totals as speedups ("2.83x").

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no backend switch), so the CLI
writes PNGs anywhere and a notebook keeps its own inline backend; each function returns the figure and
writes it when given a path.

* :func:`plot_compare`: speedup per workload (decode / prefill colours, geomean line) and the Shapley
  attribution as % of the total speedup;
* :func:`plot_study_speedups`, :func:`plot_study_attribution` (panels on one scale), :func:`plot_roofline`
  (points labelled with workload, batch and dtype, x-range fitted to the data): the generation study;
* :func:`plot_sweep`: a grid of panels: the Pareto front (duplicate designs collapsed), the effect of each
  axis per workload, a parallel-coordinates view with a colorbar;
* :func:`plot_search`: every trial of a search with its Pareto front.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: the style of every figure (matplotlib rcParams)
STYLE: dict[Any, Any] = {  # rcParams names (matplotlib types them as a Literal of every name)
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
    "legend.fontsize": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "savefig.dpi": 130, "savefig.bbox": "tight",
}
#: colours of the phases, and of successive chips
PHASE_COLORS = {"decode": "tab:blue", "prefill": "tab:orange"}
CHIP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")

#: axis labels with units of the result columns
LABELS = {
    "tokens_per_s": "throughput (tokens/s)", "power_w": "power (W)", "latency_ms": "latency (ms)",
    "energy_j": "energy per step (J)", "energy_per_token_j": "energy per token (J)", "hbm_gbps": "HBM (GB/s)",
    "hbm_bytes": "HBM traffic (bytes)", "flops": "FLOPs", "chips": "chips", "instructions": "instructions",
}


def figure(rows: int = 1, cols: int = 1, *, w: float = 6.0, h: float = 4.2, **kw: Any) -> tuple[Any, Any]:
    """A styled figure with a ``rows x cols`` grid of axes (a 2-D array) of ``w x h`` inches each."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(w * cols, h * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


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


def save(fig: Any, path: str | Path | None, flag: str = "--plot") -> Any:
    """Write ``fig`` to ``path`` (if given) in the style's resolution, whole or not at all
    (:func:`infsim.userfiles.write_output`; an error names ``flag``); returns the figure."""
    import matplotlib as mpl

    from infsim.userfiles import write_output

    if path is not None:
        p = check_plot_path(path, flag)
        with mpl.rc_context(STYLE):
            write_output(p, lambda f: fig.savefig(f, format=p.suffix.lower().lstrip(".")), flag)
    return fig


def axis_label(col: str) -> str:
    """A result or axis column as an axis label with its unit (``axis.hbm.bandwidth_gbps`` -> ``hbm.bandwidth
    (GB/s)``)."""
    from infsim.config.sources import unit_of

    if col in LABELS:
        return LABELS[col]
    name = col[5:] if col.startswith("axis.") else col
    unit = unit_of(name)
    return f"{name} ({unit})" if unit else name


def _style(ax: Any) -> None:
    import matplotlib as mpl

    with mpl.rc_context(STYLE):
        for lab in (ax.xaxis.label, ax.yaxis.label):
            lab.set_fontsize(STYLE["axes.labelsize"])
        ax.title.set_fontsize(STYLE["axes.titlesize"])
        ax.tick_params(labelsize=STYLE["xtick.labelsize"])
        ax.grid(True, alpha=STYLE["grid.alpha"])


def workload_label(phase: str, batch: int, context: int, dtype: str) -> str:
    return f"{phase} b{batch} c{context} {dtype}"


def speedup_panel(ax: Any, rows: list[Any], title: str, claims: bool = False) -> None:
    """Bars of the speedup per workload coloured by phase, the perf/W ratio as dots, the geomean as a line."""
    xs = range(len(rows))
    ax.bar(xs, [r.speedup for r in rows], color=[PHASE_COLORS[r.phase] for r in rows])
    ax.plot(xs, [r.perf_per_watt_ratio for r in rows], "D", color="k", ms=5, label="perf/W ratio")
    geo = math.exp(sum(math.log(r.speedup) for r in rows) / len(rows))
    ax.axhline(geo, color="tab:green", lw=1.5, label=f"geomean speedup {geo:.2f}x")
    ax.axhline(1.0, color="k", lw=0.8)
    if claims:
        ax.axhline(4.0, color="gray", ls=":", label="claim: 4x perf")
        ax.axhline(2.0, color="gray", ls="--", lw=0.8, label="claim: 2x perf/W")
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=c, label=p) for p, c in PHASE_COLORS.items()]
    top = max([r.speedup for r in rows] + [r.perf_per_watt_ratio for r in rows] + [4.0 if claims else 0.0])
    ax.set_ylim(0, top * 1.45)  # room for the legend above the bars
    ax.legend(handles=handles, loc="upper left", ncols=3)
    ax.set_xticks(list(xs), [workload_label(r.phase, r.batch, r.context, r.dtype) for r in rows], rotation=40,
                  ha="right")
    ax.set_ylabel("ratio over baseline (x)")
    ax.set_title(title)
    _style(ax)


def attribution_panel(ax: Any, res: Any, xlim: tuple[float, float] | None = None) -> None:
    """Shapley attribution of ``res`` (a CompareResult) as % of the total log speedup, the total as ``2.83x``."""
    items = sorted(res.attribution.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [100 * v for _, v in items],
            color=["tab:green" if v >= 0 else "tab:red" for _, v in items])
    for i, (_, v) in enumerate(items):
        ax.annotate(f"{100 * v:+.0f}%", (100 * v, i), xytext=(4 if v >= 0 else -4, 0), textcoords="offset points",
                    ha="left" if v >= 0 else "right", va="center", fontsize=9)
    ax.axvline(0, color="k", lw=0.8)
    if xlim:
        ax.set_xlim(*xlim)
    ax.set_xlabel("share of the total speedup (%, Shapley, of the mean log speedup)")
    ax.set_title(f"why {res.target} is {res.geomean_speedup:.2f}x {res.baseline} (geomean)")
    _style(ax)


def _attr_xlim(results: list[Any]) -> tuple[float, float]:
    vals = [100 * v for r in results for v in r.attribution.values()] or [0.0]
    lo, hi = min(0.0, min(vals)), max(0.0, max(vals))
    pad = 0.18 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def plot_compare(res: Any, path: str | Path | None = None) -> Any:
    """``infsim compare --plot``: speedups per workload and (when computed) the attribution."""
    fig, axes = figure(1, 2 if res.attribution else 1, w=7.0, h=4.8)
    speedup_panel(axes[0][0], res.rows, f"{res.model}: {res.target} vs {res.baseline} ({res.chips} chip(s) each)")
    if res.attribution:
        attribution_panel(axes[0][1], res, _attr_xlim([res]))
    return save(fig, path)


def plot_study_speedups(results: dict[str, Any], baseline: str, path: str | Path | None = None) -> Any:
    """The generation study: one speedup panel per target, on one y scale, with the announced claims."""
    fig, axes = figure(1, len(results), w=7.0, h=4.8, sharey=True)
    for ax, (t, r) in zip(axes[0], results.items()):
        speedup_panel(ax, r.rows, f"{t} / {baseline}: {r.geomean_speedup:.2f}x perf, "
                      f"{r.geomean_perf_per_watt_ratio:.2f}x perf/W", claims=True)
    return save(fig, path)


def plot_study_attribution(results: dict[str, Any], path: str | Path | None = None) -> Any:
    """Attribution panels of several comparisons, on one x scale."""
    fig, axes = figure(1, len(results), w=6.5, h=4.2)
    lim = _attr_xlim(list(results.values()))
    for ax, r in zip(axes[0], results.values()):
        attribution_panel(ax, r, lim)
    return save(fig, path)


def plot_roofline(points: list[dict[str, Any]], roofs: dict[str, tuple[float, float, float]], title: str,
                  path: str | Path | None = None) -> Any:
    """Roofline: per chip its bf16 roof (solid) and fp8 roof (dashed) from ``roofs[chip] = (peak bf16 TFLOPS,
    peak fp8 TFLOPS, HBM TB/s)``; ``points`` (chip, phase, batch, dtype, flop_per_byte, achieved_tflops) as
    markers by phase, each labelled; the x range fitted to the points."""
    fig, axes = figure(1, 1, w=9.0, h=6.0)
    ax = axes[0][0]
    xs_pts = [p["flop_per_byte"] for p in points]
    lo, hi = min(xs_pts) / 2.5, max(xs_pts) * 2.5
    n = 80
    xs = [lo * (hi / lo) ** (i / n) for i in range(n + 1)]
    for i, (chip, (peak, peak8, tbs)) in enumerate(roofs.items()):
        c = CHIP_COLORS[i % len(CHIP_COLORS)]
        ax.plot(xs, [min(peak, tbs * x) for x in xs], color=c, lw=1.8, label=f"{chip}: bf16 roof")
        if peak8 > peak:
            ax.plot(xs, [min(peak8, tbs * x) for x in xs], color=c, lw=1.0, ls="--", label=f"{chip}: fp8 roof")
        for p in (p for p in points if p["chip"] == chip):
            ax.scatter([p["flop_per_byte"]], [p["achieved_tflops"]], color=c, s=40, zorder=3,
                       marker="o" if p["phase"] == "decode" else "s", edgecolor="k", lw=0.5)
    # each workload labelled once, beside its lowest point (the chips' points share the workload's intensity)
    seen: list[tuple] = []
    for p in sorted(points, key=lambda p: p["achieved_tflops"]):
        key = (p["phase"], p["batch"], p["context"], p["dtype"])
        if key in seen:
            continue
        seen.append(key)
        what = f"b{p['batch']}" if p["phase"] == "decode" else f"{p['context']} tokens"
        ax.annotate(f"{p['phase']} {what} {p['dtype'].split('_')[0]}", (p["flop_per_byte"], p["achieved_tflops"]),
                    xytext=(6, -14 if len(seen) % 2 else -26), textcoords="offset points", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP per HBM byte)")
    ax.set_ylabel("achieved throughput (TFLOPS)")
    ax.set_title(title + "\n(o decode, s prefill; each workload labelled at its lowest point)")
    ax.legend(loc="upper left", ncols=2)
    _style(ax)
    return save(fig, path)


def _numeric(col: Any) -> Any:
    """``col`` as floats, or ``None`` when some value is not a number (a string axis)."""
    import pandas as pd

    vals = pd.to_numeric(col, errors="coerce")
    return None if vals.isna().any() and not col.isna().equals(vals.isna()) else vals.astype(float)


def plot_sweep(df: Any, path: str | Path | None = None, y: str = "tokens_per_s", x: str = "power_w") -> Any:
    """``infsim sweep --plot`` (the results of the feasible rows; the infeasible ones counted): a grid of
    panels: the Pareto front of ``y`` against ``x`` per workload (designs with the same results collapsed
    into one point, labelled with how many), the effect of each axis on ``y`` relative to its lowest value
    (one line per workload, the other axes averaged; how many points each value makes infeasible), and a
    parallel-coordinates view of every point coloured by ``y`` with a colorbar."""
    import matplotlib as mpl
    import pandas as pd

    from .sweep import pareto

    infeasible = int((~df["feasible"]).sum()) if "feasible" in df else 0
    every = df  # with the infeasible points, counted per axis value in the effect panels
    if "feasible" in df:
        df = df[df["feasible"]]
    df = df[df["error"] == ""] if "error" in df else df
    axes_cols = [c for c in df.columns if c.startswith("axis.")]
    n = 2 + len(axes_cols)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axs = figure(rows, cols, w=5.4, h=4.2)
    flat = [a for r in axs for a in r]
    for a in flat[n:]:
        a.set_visible(False)
    # Pareto front per workload, duplicates collapsed
    wl_cols = [c for c in ("wl.model", "wl.phase", "wl.batch", "wl.context", "wl.dtype") if c in df]
    groups = list(df.groupby(wl_cols)) if wl_cols else [((), df)]

    def wl_name(key: Any) -> str:
        return " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))

    ax = flat[0]
    for i, (key, g) in enumerate(groups):
        c = CHIP_COLORS[i % len(CHIP_COLORS)]
        pts = g.groupby([x, y]).size().reset_index(name="designs")
        ax.scatter(pts[x], pts[y], s=18 + 6 * pts["designs"], alpha=0.45, color=c)
        front = pareto(pts, x=x, y=y)
        ax.plot(front[x], front[y], "-o", color=c, ms=5, label=f"{wl_name(key)}: Pareto front")
        for _, r in front.iterrows():
            if r["designs"] > 1:
                ax.annotate(f"x{int(r['designs'])}", (r[x], r[y]), xytext=(4, 4), textcoords="offset points",
                            fontsize=8)
    if df[y].max() > 20 * max(df[y].min(), 1e-12):
        ax.set_yscale("log")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title("Pareto fronts" + (f" ({infeasible} infeasible points not shown)" if infeasible else ""))
    ax.legend(fontsize=8)
    _style(ax)
    # effects of each axis, one line per workload, relative to the axis's lowest value
    for a, col in zip(flat[1:], axes_cols):
        num = _numeric(df[col])
        for i, (key, g) in enumerate(groups):
            mean = g.groupby(col)[y].mean()
            rel = mean / mean.iloc[0] if len(mean) and mean.iloc[0] else mean
            xs = mean.index.astype(float) if num is not None else [str(v) for v in mean.index]
            a.plot(xs, rel.values, "o-", color=CHIP_COLORS[i % len(CHIP_COLORS)], label=wl_name(key))
        a.axhline(1.0, color="k", lw=0.8)
        # how many points each value makes infeasible (no latency, so not in the lines): under its tick
        bad = every[~every["feasible"]].groupby(col).size() if infeasible else {}
        if num is not None and df[col].nunique() <= 8:  # the axis's own values as ticks (no 2.25 cores)
            ticks = sorted(num.unique())
            a.set_xticks(ticks, [f"{v:g}" + (f"\n{bad[v]} infeasible" if v in bad else "") for v in ticks])
        elif len(bad):
            a.text(0.02, 0.97, "infeasible: " + ", ".join(f"{k} at {v}" for v, k in bad.items()), va="top",
                   transform=a.transAxes, fontsize=8, color="tab:red")
        a.set_xlabel(axis_label(col))
        a.set_ylabel(f"{axis_label(y).split(' (')[0]} vs the lowest value (x, mean\nover the other axes)")
        a.set_title(f"effect of {col[5:]}")
        a.legend(fontsize=8)
        _style(a)
    # parallel coordinates with a colorbar
    pc = flat[n - 1]
    pcols = [*axes_cols, y, x]
    norm = pd.DataFrame({c: (_numeric(df[c]) if _numeric(df[c]) is not None else
                             df[c].astype(str).rank(method="dense")) for c in pcols})
    span = (norm.max() - norm.min()).replace(0, 1)
    norm = (norm - norm.min()) / span
    vals = df[y].astype(float)
    cmap = mpl.colormaps["viridis"]
    cnorm = mpl.colors.Normalize(vals.min(), vals.max() if vals.max() > vals.min() else vals.min() + 1)
    for (_, row), v in zip(norm.iterrows(), vals):
        pc.plot(range(len(pcols)), row.values, color=cmap(cnorm(v)), alpha=0.6, lw=1.0)
    short = [axis_label(c).split(".")[-1].replace(" (", "\n(") for c in pcols]
    pc.set_xticks(range(len(pcols)), short, rotation=30, ha="right", fontsize=8)
    pc.set_ylabel("each column scaled to its range (0 = min, 1 = max)")
    pc.set_title("every design point")
    fig.colorbar(mpl.cm.ScalarMappable(norm=cnorm, cmap=cmap), ax=pc, label=axis_label(y))
    _style(pc)
    return save(fig, path)


def plot_search(trials: Any, front: Any, objectives: list[tuple[str, str]], path: str | Path | None = None) -> Any:
    """``infsim search --plot``: every completed trial on the first two objectives, the Pareto set marked."""
    fig, axes = figure(1, 1, w=7.0, h=5.0)
    ax = axes[0][0]
    (a, da), (b, db) = (objectives + objectives)[:2] if len(objectives) == 1 else objectives[:2]
    if len(objectives) == 1:  # one objective: against the trial number
        ax.scatter(trials["trial"], trials[a], s=16, alpha=0.6, label="trials")
        ax.scatter(front["trial"], front[a], s=40, color="tab:red", label="best")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{axis_label(a)} ({da})")
    else:
        f = front.sort_values(b)
        ax.plot(f[b], f[a], "-o", color="tab:red", ms=5, label="Pareto set")
        # trials as rings drawn over the front, so a trial that lies on it stays visible
        ax.scatter(trials[b], trials[a], s=90, facecolors="none", edgecolors="tab:blue",
                   linewidths=1.2, zorder=3, label="trials")
        ax.set_xlabel(f"{axis_label(b)} ({db})")
        ax.set_ylabel(f"{axis_label(a)} ({da})")
    ax.set_title(f"search: {len(trials)} completed trials (infeasible or failed ones are pruned)")
    ax.legend()
    _style(ax)
    return save(fig, path)
