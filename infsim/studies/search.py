"""Multi-objective search over a sweep spec's axes (Optuna NSGA-II), resumable from its SQLite study.

The spec is a sweep spec (:mod:`infsim.studies.sweep`); each trial picks one value per axis (categorical for
a value list, uniform for a ``{min, max}`` range), evaluates every workload of the spec like a sweep point
and scores the mean of each objective over them. A trial with a failed workload, or whose design point
is no valid chip, is pruned (the reason kept in the trial's ``error`` attribute) and counts toward
``trials``. The study records what it searches (objectives, axes, base chip, fidelity, workloads); a
resume that asks for anything else is refused, since its trials would not be comparable. One search at a
time writes to a folder (:func:`~.folder.folder_lock`). Needs the ``search`` extra (``pip install -e
".[search]"``: optuna). Left out: constraints, multi-fidelity trials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infsim.errors import InfsimError
from infsim.extras import require
from infsim.progress import show_progress

from .folder import folder_lock
from .sweep import RESULT_FIELDS, SweepError, evaluate, load_spec, make_task

#: seeds the sampler accepts (numpy's legacy seeding)
MAX_SEED = 2**32 - 1


def _identity(spec: Any, objectives: list[tuple[str, str]]) -> dict[str, Any]:
    """What a study's trials depend on, as plain data (stored with the study, compared on resume)."""
    return {"objectives": [f"{n}:{d}" for n, d in objectives], "axes": spec.axes, "base": spec.base,
            "fidelity": spec.fidelity, "workloads": [w.model_dump() for w in spec.workloads]}


def _check_resume(study: Any, want: dict[str, Any], db: Path) -> None:
    have = study.user_attrs.get("infsim")
    if have is None:
        if study.trials:
            raise SweepError(f"{db}: holds a study of {len(study.trials)} trial(s) without a record of its "
                             "objectives and axes; use another --out")
        study.set_user_attr("infsim", want)
        return
    def show(field: str, v: Any) -> str:
        text = ",".join(v) if field == "objectives" and isinstance(v, list) else str(v)
        return text if len(text) <= 120 else text[:117] + "..."

    for field in ("objectives", "axes", "base", "fidelity", "workloads"):
        if have.get(field) != want[field]:
            raise SweepError(f"{db}: the study was started with {field} {show(field, have.get(field))}, not "
                             f"{show(field, want[field])}; resume with the same {field} or use another --out")


def run_search(spec: str | Path | dict[str, Any], out: str | Path, trials: int,
               objectives: list[tuple[str, str]], *, seed: int = 0, progress: bool = False) -> Any:
    """Optuna (NSGA-II) search over the spec's axes; the study lives in ``out/study.db`` (SQLite), so a
    second call resumes it. Each trial evaluates every workload of the spec and scores the mean of each
    objective. Returns the Pareto set as a DataFrame (also ``out/pareto.csv``; every completed trial in
    ``out/trials.csv``)."""
    optuna = require("optuna", "infsim search")

    s = load_spec(spec, ranges=True)
    outp = Path(out)
    if trials < 1:
        raise SweepError(f"--trials must be >= 1, got {trials}")
    if not 0 <= seed <= MAX_SEED:
        raise SweepError(f"--seed must be in 0..{MAX_SEED}, got {seed}")
    if not objectives:
        raise SweepError("no objectives: give NAME:max or NAME:min")
    names = [n for n, _ in objectives]
    for name, d in objectives:
        if name not in RESULT_FIELDS:
            raise SweepError(f"objective '{name}': expected one of {', '.join(RESULT_FIELDS)}")
        if d not in ("max", "min"):
            raise SweepError(f"objective '{name}:{d}': expected {name}:max or {name}:min")
    if len(set(names)) != len(names):
        raise SweepError(f"objectives {','.join(names)}: each may appear once")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with folder_lock(outp, "infsim search"):
        db = outp / "study.db"
        try:
            study = optuna.create_study(
                study_name="infsim", storage=f"sqlite:///{db}", load_if_exists=True,
                directions=["maximize" if d == "max" else "minimize" for _, d in objectives],
                sampler=optuna.samplers.NSGAIISampler(seed=seed),
            )
        except ValueError as e:  # optuna: the stored study has another number of objectives
            raise SweepError(f"{db}: {e}; use the same objectives or another --out") from None
        except Exception as e:  # noqa: BLE001 - sqlalchemy/sqlite errors of a damaged or foreign file
            raise SweepError(f"{db}: not a readable Optuna study ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160]}); move it aside or use another --out") from None
        _check_resume(study, _identity(s, objectives), db)
        return _optimize(optuna, study, s, trials, objectives, outp, progress)


def _optimize(optuna: Any, study: Any, s: Any, trials: int, objectives: list[tuple[str, str]], outp: Path,
              progress: bool) -> Any:
    import pandas as pd

    from infsim.config import load_chip

    base = load_chip(s.base)

    def objective(trial: Any) -> tuple[float, ...]:
        pt: dict[str, Any] = {}
        for n, v in sorted(s.axes.items()):
            pt[n] = trial.suggest_categorical(n, v) if isinstance(v, list) else trial.suggest_float(
                n, float(v["min"]), float(v["max"]))
        try:
            cfg = load_chip(base, pt)
        except InfsimError as e:  # values valid one by one but not together
            trial.set_user_attr("error", str(e))
            raise optuna.TrialPruned() from None
        rows = [evaluate(make_task(s, pt, cfg, w)) for w in s.workloads]
        failed = [r["error"] for r in rows if r["status"] != "ok"]
        if failed:
            trial.set_user_attr("error", failed[0])
            raise optuna.TrialPruned()
        return tuple(sum(r[name] for r in rows) / len(rows) for name, _ in objectives)

    remaining = max(0, trials - len([t for t in study.trials if t.state.is_finished()]))
    study.optimize(objective, n_trials=remaining, show_progress_bar=show_progress(progress))
    rows = [{**t.params, **{n: v for (n, _), v in zip(objectives, t.values)}, "trial": t.number}
            for t in study.best_trials]
    df = pd.DataFrame(rows)
    df.to_csv(outp / "pareto.csv", index=False)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pd.DataFrame([{**t.params, **{n: v for (n, _), v in zip(objectives, t.values)}, "trial": t.number}
                  for t in done]).to_csv(outp / "trials.csv", index=False)
    return df
