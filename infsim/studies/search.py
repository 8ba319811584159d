"""Multi-objective search over a sweep spec's axes (Optuna NSGA-II), resumable from its SQLite study.

The spec is a sweep spec (:mod:`infsim.studies.sweep`); each trial picks one value per axis (categorical for
a value list, uniform for a ``{min, max}`` range), evaluates every workload of the spec like a sweep point
and scores the mean of each objective over them. A trial with a failed workload is pruned. Needs the
``search`` extra (``pip install -e ".[search]"``: optuna). Left out: constraints, multi-fidelity trials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .extras import require
from .sweep import RESULT_FIELDS, SweepError, evaluate, load_spec, make_task


def run_search(spec: str | Path | dict[str, Any], out: str | Path, trials: int,
               objectives: list[tuple[str, str]], *, seed: int = 0, progress: bool = False) -> Any:
    """Optuna (NSGA-II) search over the spec's axes; the study lives in ``out/study.db`` (SQLite), so a
    second call resumes it. Each trial evaluates every workload of the spec and scores the mean of each
    objective. Returns the Pareto set as a DataFrame (also ``out/pareto.csv``)."""
    import pandas as pd

    optuna = require("optuna", "infsim search")

    s = load_spec(spec)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    for name, _ in objectives:
        if name not in RESULT_FIELDS:
            raise SweepError(f"objective '{name}': expected one of {', '.join(RESULT_FIELDS)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="infsim", storage=f"sqlite:///{outp / 'study.db'}", load_if_exists=True,
        directions=["maximize" if d == "max" else "minimize" for _, d in objectives],
        sampler=optuna.samplers.NSGAIISampler(seed=seed),
    )
    from infsim.config import load_chip

    base = load_chip(s.base)

    def objective(trial: Any) -> tuple[float, ...]:
        pt: dict[str, Any] = {}
        for n, v in sorted(s.axes.items()):
            pt[n] = trial.suggest_categorical(n, v) if isinstance(v, list) else trial.suggest_float(
                n, float(v["min"]), float(v["max"]))
        cfg = load_chip(base, pt)
        rows = [evaluate(make_task(s, pt, cfg, w)) for w in s.workloads]
        vals = []
        for name, _ in objectives:
            xs = [r[name] for r in rows]
            if any(x != x for x in xs):
                raise optuna.TrialPruned()
            vals.append(sum(xs) / len(xs))
        return tuple(vals)

    remaining = max(0, trials - len([t for t in study.trials if t.state.is_finished()]))
    study.optimize(objective, n_trials=remaining, show_progress_bar=progress)
    rows = [{**t.params, **{n: v for (n, _), v in zip(objectives, t.values)}, "trial": t.number}
            for t in study.best_trials]
    df = pd.DataFrame(rows)
    df.to_csv(outp / "pareto.csv", index=False)
    return df
