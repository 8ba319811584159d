"""Design-space sweeps: resumable, crash-safe, local or on a dask.distributed cluster.

A sweep spec (YAML, validated with field-named errors) names a base chip, axes over any config field
(grid: the cartesian product of value lists; random: ``samples`` draws from value lists or ``{min, max}``
ranges with a seed), a list of workloads (each a model name and a :class:`~infsim.models.graph.Workload`)
and the fidelity. Every (design point, workload) pair is keyed
by the SHA-256 of its full inputs (the resolved chip config, the workload, the fidelity), so re-running
skips finished pairs.

Durability. Results go to ``DIR/parts/part-*.parquet``, one file per finished batch, each written to a
temporary name and renamed into place (atomic on POSIX), and ``DIR/results.parquet`` is rebuilt from the
parts the same way; a SIGKILL at any moment loses at most the batches in flight and never leaves a
half-written file visible or a pair twice. Execution: local processes (``workers``, default all cores) or
``scheduler=ADDRESS`` for a dask.distributed cluster (inputs and outputs are dicts of picklable values).

Needs the ``sweep`` extra (``pip install -e ".[sweep]"``: pyarrow, and dask ``distributed`` for a cluster).

Left out: per-point time limits, retries of failing points (a failing point is recorded with its error).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infsim.config import ChipConfig
from infsim.errors import InfsimError
from infsim.models.graph import Workload

from .extras import require

RESULT_FIELDS = ("latency_ms", "tokens_per_s", "flops", "hbm_bytes", "hbm_gbps", "energy_j", "power_w",
                 "energy_per_token_j", "chips", "instructions")


class SweepError(InfsimError):
    """A sweep spec or output folder is invalid."""


class WorkloadEntry(BaseModel):
    """One ``workloads:`` entry of a spec: a model name and a :class:`~infsim.models.graph.Workload`."""

    model_config = ConfigDict(extra="forbid")
    model: str
    phase: Literal["prefill", "decode"] = "decode"
    batch: int = Field(1, ge=1)
    context: int = Field(2048, ge=1, description="prompt tokens (prefill) or cached tokens (decode)")
    dtype: str = "bf16"
    tp: int | None = Field(None, ge=1, description="default: all cores of one chip")

    def workload(self, cores_per_chip: int) -> Workload:
        """The step this entry names, on a chip of ``cores_per_chip`` cores (the default ``tp``)."""
        return Workload.make(self.phase, self.batch, self.context, tp=self.tp or cores_per_chip, dtype=self.dtype)


def workload_fields(model: str, wl: Workload) -> dict[str, Any]:
    """A workload as a sweep records it (the ``wl.*`` columns, part of the key): the spec entry's fields."""
    return {"model": model, "phase": wl.phase, "batch": wl.batch, "context": wl.prompt_or_context,
            "dtype": wl.weight_dtype, "tp": wl.tp}


class RandomSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int = Field(ge=1)
    seed: int = 0


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str = "inf2"
    fidelity: Literal["analytical", "cycle"] = "analytical"
    axes: dict[str, list[Any] | dict[str, float]] = Field(default_factory=dict)
    random: RandomSpec | None = None
    workloads: list[WorkloadEntry] = Field(min_length=1)


def load_spec(spec: str | Path | dict[str, Any]) -> SweepSpec:
    if isinstance(spec, dict):
        data, src = spec, "<spec>"
    else:
        p = Path(spec)
        if not p.exists():
            raise SweepError(f"{p}: no such file")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise SweepError(f"{p}: invalid YAML: {e}") from None
        src = str(p)
    try:
        s = SweepSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise SweepError(f"{src}: {loc}: {err['msg']}") from None
    from infsim.config import CHIP_PATHS, load_chip
    from infsim.config.paths import UnknownFieldError

    base = load_chip(s.base)
    for name, vals in s.axes.items():  # every axis names a real field, every value is valid: fail before running
        try:
            CHIP_PATHS.check(name)
        except UnknownFieldError as e:
            raise SweepError(f"{src}: axes.{name}: {e.reason}") from None
        probes = vals if isinstance(vals, list) else [vals.get("min"), vals.get("max")]
        if not probes or any(p is None for p in probes):
            raise SweepError(f"{src}: axes.{name}: expected a non-empty list or {{min, max}}")
        if isinstance(vals, dict) and (set(vals) != {"min", "max"} or s.random is None):
            raise SweepError(f"{src}: axes.{name}: a {{min, max}} range needs 'random:' sampling")
        for probe in probes:
            try:
                load_chip(base, {name: probe}, labels={name: f"{src}: axes.{name} value {probe!r}"})
            except InfsimError as e:
                raise SweepError(str(e)) from None
    from infsim.models.spec import load_model

    for i, w in enumerate(s.workloads):  # every workload is valid, every model loads
        try:
            w.workload(base.cores_per_chip)
            load_model(w.model)
        except InfsimError as e:
            raise SweepError(f"{src}: workloads.{i}: {e}") from None
    return s


def design_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Override dicts, one per design point (grid, or seeded random samples)."""
    names = sorted(spec.axes)
    if spec.random is None:
        lists = [spec.axes[n] for n in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*lists)]  # type: ignore[arg-type]
    rng = random.Random(spec.random.seed)
    out = []
    for _ in range(spec.random.samples):
        pt = {}
        for n in names:
            v = spec.axes[n]
            pt[n] = rng.choice(v) if isinstance(v, list) else rng.uniform(float(v["min"]), float(v["max"]))
        out.append(pt)
    return out


def _key(chip_dump: dict[str, Any], wl: dict[str, Any], fidelity: str) -> str:
    blob = json.dumps({"chip": chip_dump, "workload": wl, "fidelity": fidelity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def make_task(spec: SweepSpec, point: dict[str, Any], cfg: ChipConfig, entry: WorkloadEntry) -> dict[str, Any]:
    """One (design point, workload) pair with its key, as a dict of picklable values (for any executor)."""
    dump = cfg.model_dump()
    wl = entry.workload(cfg.cores_per_chip)
    return {"key": _key(dump, workload_fields(entry.model, wl), spec.fidelity), "base": spec.base,
            "overrides": point, "chip": dump, "model": entry.model, "workload": wl, "fidelity": spec.fidelity}


def tasks(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every (design point, workload) pair of the spec (:func:`make_task`)."""
    from infsim.config import load_chip

    base = load_chip(spec.base)
    out: list[dict[str, Any]] = []
    for pt in design_points(spec):
        cfg = load_chip(base, pt) if pt else base
        out.extend(make_task(spec, pt, cfg, w) for w in spec.workloads)
    return out


def evaluate(task: dict[str, Any]) -> dict[str, Any]:
    """One row: every input field and every result field (or the error)."""
    from infsim.config.loader import validate
    from infsim.runner import run_workload

    wl = task["workload"]
    row: dict[str, Any] = {"key": task["key"], "base": task["base"], "fidelity": task["fidelity"]}
    row.update({f"axis.{k}": v for k, v in task["overrides"].items()})
    row.update({f"wl.{k}": v for k, v in workload_fields(task["model"], wl).items()})
    t0 = time.perf_counter()
    try:
        cfg = validate(task["chip"], "sweep point")
        d = run_workload(cfg, task["model"], wl, fidelity=task["fidelity"]).to_dict()
        row.update({k: d[k] for k in RESULT_FIELDS})
        row["error"] = ""
    except InfsimError as e:
        row.update({k: float("nan") for k in RESULT_FIELDS})
        row["error"] = str(e)
    row["eval_s"] = time.perf_counter() - t0
    return row


def evaluate_batch(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [evaluate(t) for t in batch]


# ---- storage ------------------------------------------------------------------------------------
def _atomic_parquet(df: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_results(out: str | Path) -> Any:
    """All finished rows of a sweep folder as a DataFrame (from the parts: always complete)."""
    import pandas as pd

    require("pyarrow", "reading sweep results (parquet)")

    parts = sorted((Path(out) / "parts").glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame()
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return df.drop_duplicates("key", keep="first").reset_index(drop=True)


def _write_part(out: Path, rows: list[dict[str, Any]], seq: int) -> None:
    import pandas as pd

    (out / "parts").mkdir(parents=True, exist_ok=True)
    _atomic_parquet(pd.DataFrame(rows), out / "parts" / f"part-{time.time_ns():020d}-{os.getpid()}-{seq:06d}.parquet")


def _consolidate(out: Path) -> Any:
    df = load_results(out)
    if len(df):
        _atomic_parquet(df, out / "results.parquet")
    return df


def _batches(items: list[dict[str, Any]], n: int) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def run_sweep(spec: str | Path | dict[str, Any], out: str | Path, *, workers: int | None = None,
              scheduler: str | Any | None = None, batch_size: int = 16, progress: bool = False) -> Any:
    """Run (or resume) a sweep; returns the DataFrame of all finished rows (also ``out/results.parquet``)."""
    from tqdm import tqdm

    require("pyarrow", "infsim sweep")
    if scheduler is not None:
        require("distributed", "infsim sweep --scheduler")
    s = load_spec(spec)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    for stale in outp.glob("**/.*.tmp"):
        stale.unlink()
    done = set(load_results(outp).get("key", []))
    todo = [t for t in tasks(s) if t["key"] not in done]
    bar = tqdm(total=len(todo), desc="sweep", disable=not progress)
    seq = 0
    if todo:
        batches = list(_batches(todo, batch_size))
        if scheduler is not None:
            from distributed import Client
            from distributed import as_completed as d_completed

            own = not hasattr(scheduler, "map")  # an address (ours to close) or a Client (the caller's)
            client: Any = Client(scheduler) if own else scheduler
            for dfut in d_completed(client.map(evaluate_batch, batches, pure=False)):
                rows = dfut.result()
                _write_part(outp, rows, seq)
                seq += 1
                bar.update(len(rows))
            if own:
                client.close()
        else:
            n = workers or os.cpu_count() or 1
            if n == 1:
                for b in batches:
                    _write_part(outp, evaluate_batch(b), seq)
                    seq += 1
                    bar.update(len(b))
            else:
                with ProcessPoolExecutor(max_workers=n) as ex:
                    futs = [ex.submit(evaluate_batch, b) for b in batches]
                    for fut in as_completed(futs):
                        rows = fut.result()
                        _write_part(outp, rows, seq)
                        seq += 1
                        bar.update(len(rows))
    bar.close()
    return _consolidate(outp)


def pareto(df: Any, x: str = "power_w", y: str = "tokens_per_s") -> Any:
    """Rows on the Pareto front of maximal ``y`` for minimal ``x``."""
    d = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    best = -float("inf")
    keep = []
    for i, v in zip(d.index, d[y]):
        if v > best:
            keep.append(i)
            best = v
    return d.loc[keep]
