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
half-written file visible or a pair twice. Every pair gives one row: a failing pair is a row with
``status='error'`` and the message (an exception that is not an :class:`InfsimError` too, marked as an
internal error), and so is a pair that kills its worker process (:mod:`.pool` retries it alone first).
One sweep at a time writes to a folder (a lock, :mod:`.folder`; a second one stops with a message), and
a part that cannot be read is moved to ``DIR/quarantine/`` and its pairs computed again. Pairs are
generated lazily, and a spec with more than :data:`MAX_PAIRS` pairs is refused before any is built.
Execution: local processes (``workers``, default all cores) or ``scheduler=ADDRESS`` for a
dask.distributed cluster (inputs and outputs are dicts of picklable values).

Needs the ``sweep`` extra (``pip install -e ".[sweep]"``: pyarrow, and dask ``distributed`` for a cluster).

Left out: per-point time limits and memory limits, retries of failing points (a failing point is recorded
with its error and skipped on resume).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infsim.config import ChipConfig
from infsim.config.loader import shorten
from infsim.errors import InfsimError
from infsim.extras import require
from infsim.models.graph import Workload
from infsim.progress import progress_bar
from infsim.userfiles import parse_yaml, read_text

from .folder import atomic_write, folder_lock, quarantine, remove_stale_temporaries
from .pool import run_batches

log = logging.getLogger("infsim")

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
    tp: int | Literal["chip", "instance"] | None = Field(
        None, description="tensor-parallel ranks (logical cores): a number, 'chip' (all of one chip: the default, "
        "and it follows a cores_per_chip axis) or 'instance' (all cores of the chip's instance)")

    def workload(self, logical_cores_per_chip: int, instance_chips: int = 1) -> Workload:
        """The step this entry names on a chip of ``logical_cores_per_chip`` ranks (logical cores) in an instance
        of ``instance_chips``."""
        if isinstance(self.tp, int):
            if self.tp < 1:
                raise InfsimError(f"tp must be >= 1, got {self.tp}")
            tp = self.tp
        else:
            tp = logical_cores_per_chip * (instance_chips if self.tp == "instance" else 1)
        return Workload.make(self.phase, self.batch, self.context, tp=tp, dtype=self.dtype)


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


def load_spec(spec: str | Path | dict[str, Any], ranges: bool = False) -> SweepSpec:
    """A validated sweep spec (errors name the file and field). ``ranges=True`` (a search): ``{min, max}`` axes
    need no ``random:`` block (a sweep samples them with it; a search picks values itself)."""
    if isinstance(spec, dict):
        data, src = spec, "<spec>"
    else:
        p = Path(spec)
        data = parse_yaml(read_text(p, "sweep spec", error=SweepError), str(p), error=SweepError)
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
        if isinstance(vals, dict) and set(vals) != {"min", "max"}:
            raise SweepError(f"{src}: axes.{name}: expected a list of values or {{min, max}}")
        if isinstance(vals, dict) and s.random is None and not ranges:
            raise SweepError(f"{src}: axes.{name}: a {{min, max}} range needs 'random:' sampling in a sweep "
                             "(infsim search takes ranges as they are)")
        for probe in probes:
            try:
                load_chip(base, {name: probe}, labels={name: f"{src}: axes.{name} value {probe!r}"})
            except InfsimError as e:
                raise SweepError(str(e)) from None
    from infsim.models.spec import load_model

    for i, w in enumerate(s.workloads):  # every workload is valid, every model loads
        try:
            w.workload(base.logical_cores_per_chip, base.instance.chips)
            load_model(w.model)
        except InfsimError as e:
            raise SweepError(f"{src}: workloads.{i}: {e}") from None
    return s


#: the most (design point, workload) pairs a sweep may hold unless the caller raises it (``--max-points``):
#: each pair's key needs its chip validated (~1 ms) and a row of the results (~1 kB)
MAX_PAIRS = 100_000


def count_pairs(spec: SweepSpec) -> int:
    """(design point, workload) pairs of the spec, counted without building them."""
    if spec.random is not None:
        points = spec.random.samples
    else:
        points = math.prod(len(v) for v in spec.axes.values())
    return points * len(spec.workloads)


def check_size(spec: SweepSpec, max_pairs: int = MAX_PAIRS) -> int:
    """The spec's pair count, or :class:`SweepError` when it exceeds ``max_pairs`` (checked before any point
    is built: a 12-axis grid of 10 values each would be 10^12 points)."""
    n = count_pairs(spec)
    if n > max_pairs:
        shape = (f"{spec.random.samples} random samples" if spec.random is not None else
                 " x ".join(str(len(v)) for v in spec.axes.values()) + " grid points")
        raise SweepError(f"the sweep has {n:.4g} (design point, workload) pairs ({shape} x {len(spec.workloads)} "
                         f"workload(s)), above the limit of {max_pairs} (--max-points); narrow the axes or sample "
                         "with 'random:'")
    return n


def iter_design_points(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Override dicts, one per design point (grid, or seeded random samples), generated lazily."""
    names = sorted(spec.axes)
    if spec.random is None:
        lists = [spec.axes[n] for n in names]
        for combo in itertools.product(*lists):
            yield dict(zip(names, combo))
        return
    rng = random.Random(spec.random.seed)
    for _ in range(spec.random.samples):
        pt = {}
        for n in names:
            v = spec.axes[n]
            pt[n] = rng.choice(v) if isinstance(v, list) else rng.uniform(float(v["min"]), float(v["max"]))
        yield pt


def design_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Override dicts, one per design point (grid, or seeded random samples)."""
    check_size(spec)
    return list(iter_design_points(spec))


def _key(chip_dump: dict[str, Any], wl: dict[str, Any], fidelity: str) -> str:
    blob = json.dumps({"chip": chip_dump, "workload": wl, "fidelity": fidelity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def make_task(spec: SweepSpec, point: dict[str, Any], cfg: ChipConfig, entry: WorkloadEntry) -> dict[str, Any]:
    """One (design point, workload) pair with its key, as a dict of picklable values (for any executor)."""
    dump = cfg.model_dump()
    wl = entry.workload(cfg.logical_cores_per_chip, cfg.instance.chips)
    return {"key": _key(dump, workload_fields(entry.model, wl), spec.fidelity), "base": spec.base,
            "overrides": point, "chip": dump, "model": entry.model, "workload": wl, "fidelity": spec.fidelity}


def _invalid_task(spec: SweepSpec, point: dict[str, Any], base: ChipConfig, entry: WorkloadEntry,
                  error: str) -> dict[str, Any]:
    """A pair whose design point is no valid chip (values valid one by one, not together, e.g. PSUM bytes
    and banks): it becomes a failed row, keyed by the base chip and the overrides."""
    wl = entry.workload(base.cores_per_chip)
    dump = {"base": base.model_dump(), "overrides": point}
    return {"key": _key(dump, workload_fields(entry.model, wl), spec.fidelity), "base": spec.base,
            "overrides": point, "chip": None, "model": entry.model, "workload": wl, "fidelity": spec.fidelity,
            "error": error}


def iter_tasks(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Every (design point, workload) pair of the spec (:func:`make_task`), each key once, lazily."""
    from infsim.config import load_chip

    base = load_chip(spec.base)
    seen: set[str] = set()
    for pt in iter_design_points(spec):
        try:
            cfg = load_chip(base, pt) if pt else base
        except InfsimError as e:
            made = [_invalid_task(spec, pt, base, w, str(e)) for w in spec.workloads]
        else:
            made = [make_task(spec, pt, cfg, w) for w in spec.workloads]
        for t in made:
            if t["key"] not in seen:
                seen.add(t["key"])
                yield t


def tasks(spec: SweepSpec, max_pairs: int = MAX_PAIRS) -> list[dict[str, Any]]:
    """Every (design point, workload) pair of the spec (:func:`make_task`)."""
    check_size(spec, max_pairs)
    return list(iter_tasks(spec))


def _row_inputs(task: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"key": task["key"], "base": task["base"], "fidelity": task["fidelity"]}
    row.update({f"axis.{k}": v for k, v in task["overrides"].items()})
    row.update({f"wl.{k}": v for k, v in workload_fields(task["model"], task["workload"]).items()})
    return row


def failed_row(task: dict[str, Any], error: str, eval_s: float = 0.0, *, limit: str = "") -> dict[str, Any]:
    """The row of a pair that has no result: every input field, NaN results and why. ``limit`` set: the
    design cannot run the workload (``status='infeasible'``, ``feasible=False``, the resource in ``limit``);
    otherwise ``status='error'``."""
    row = _row_inputs(task)
    row.update({k: float("nan") for k in RESULT_FIELDS})
    row.update(status="infeasible" if limit else "error", feasible=not limit, limit=limit, error=error,
               eval_s=eval_s)
    return row


def evaluate(task: dict[str, Any]) -> dict[str, Any]:
    """One row: every input field and every result field with ``status='ok'`` (and the breakdown's columns,
    :meth:`infsim.breakdown.Breakdown.columns`); a design point that cannot run the workload
    (:class:`~infsim.feasibility.InfeasibleError`) is a row with ``status='infeasible'``, ``feasible=False``,
    ``limit`` (the resource, :data:`infsim.feasibility.LIMITS`) and the reason in ``error``, and no results
    (NaN); any other failure ``status='error'`` and the error. Any exception becomes a row (one not derived
    from :class:`InfsimError` is a bug of infsim, and the row says so); only the death of the process itself
    escapes, and :mod:`.pool` records that."""
    from infsim.breakdown import Breakdown
    from infsim.config.loader import validate
    from infsim.feasibility import InfeasibleError
    from infsim.runner import run_workload

    t0 = time.perf_counter()
    if task.get("error"):
        return failed_row(task, task["error"])
    try:
        cfg = validate(task["chip"], "sweep point")
        d = run_workload(cfg, task["model"], task["workload"], fidelity=task["fidelity"]).to_dict()
    except InfeasibleError as e:  # a design that cannot run the workload: no latency, the limit and why
        return failed_row(task, str(e), time.perf_counter() - t0, limit=e.limit)
    except InfsimError as e:
        return failed_row(task, str(e), time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - a bug must not end the sweep; the row names it
        msg = f"internal error (please report): {type(e).__name__}: {e}"
        return failed_row(task, msg, time.perf_counter() - t0)
    row = _row_inputs(task)
    row.update({k: d[k] for k in RESULT_FIELDS})
    if d.get("breakdown"):
        row.update(Breakdown(**d["breakdown"]).columns())  # bd.<category>_ms, bd.limit, bd.limit_share
    row.update(status="ok", feasible=True, limit="", error="", eval_s=time.perf_counter() - t0)
    return row


def evaluate_batch(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [evaluate(t) for t in batch]


def crashed_row(task: dict[str, Any], reason: str) -> dict[str, Any]:
    """The row of a pair whose evaluation killed its process (alone, after a retry)."""
    return failed_row(task, f"the process evaluating this point died ({reason})")


# ---- storage ------------------------------------------------------------------------------------
def _read_part(path: Path) -> Any:
    import pandas as pd

    df = pd.read_parquet(path)
    if "key" not in df.columns:
        raise ValueError("no 'key' column")
    if "status" not in df.columns:  # parts written before the status column: derived from the error
        df["status"] = ["ok" if e == "" else "error" for e in df["error"]]
    return df


def load_results(out: str | Path, *, repair: bool = False) -> Any:
    """All finished rows of a sweep folder as a DataFrame (from the parts: always complete). A part that
    cannot be read (truncated, empty, not parquet) is skipped with a warning, or with ``repair=True`` (only
    for the folder's one writer) moved to ``out/quarantine/``, so that its points are computed again."""
    import pandas as pd

    require("pyarrow", "reading sweep results (parquet)")

    outp = Path(out)
    frames = []
    for p in sorted((outp / "parts").glob("part-*.parquet")):
        try:
            frames.append(_read_part(p))
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds (ArrowInvalid, OSError, ...)
            if repair:
                dest = quarantine(outp, p)
                log.warning("%s: unreadable (%s): moved to %s; its points are computed again",
                            p, type(e).__name__, dest)
            else:
                log.warning("%s: unreadable (%s): skipped", p, type(e).__name__)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    if "feasible" not in df:  # parts written before the feasibility columns
        df["feasible"], df["limit"] = True, ""
    df["feasible"] = df["feasible"].fillna(True).astype(bool)
    df["limit"] = df["limit"].fillna("")
    return df.drop_duplicates("key", keep="first").reset_index(drop=True)


def _write_part(out: Path, rows: list[dict[str, Any]], seq: int) -> None:
    import pandas as pd

    (out / "parts").mkdir(parents=True, exist_ok=True)
    path = out / "parts" / f"part-{time.time_ns():020d}-{os.getpid()}-{seq:06d}.parquet"
    atomic_write(path, lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False))


def _consolidate(out: Path, spec: SweepSpec | None = None) -> Any:
    df = load_results(out)
    if len(df):
        from infsim.config import load_chip
        from infsim.provenance import provenance

        prov = provenance([load_chip(spec.base)] if spec is not None else None)
        if spec is not None:
            prov["spec"] = spec.model_dump(mode="json")
        df.attrs["infsim_provenance"] = prov  # parquet metadata: pd.read_parquet(results.parquet).attrs
        atomic_write(out / "results.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    return df


def _batches(items: Iterable[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


#: the most local worker processes per core (more only add memory and start-up time)
MAX_WORKERS_PER_CORE = 4


def check_options(workers: int | None, batch_size: int) -> int:
    """The number of local worker processes (``workers``, default all cores), or :class:`SweepError` for an
    option out of range."""
    cores = os.cpu_count() or 1
    if batch_size < 1:
        raise SweepError(f"--batch-size must be >= 1, got {batch_size}")
    if workers is None:
        return cores
    if workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise SweepError(f"--workers {workers}: at most {MAX_WORKERS_PER_CORE * cores} "
                         f"({MAX_WORKERS_PER_CORE} per core, {cores} core(s) here)")
    return workers


def _connect(scheduler: str, timeout_s: float = 10.0) -> Any:
    """A dask Client for the scheduler ``address`` or :class:`SweepError` within about ``timeout_s``: a refused
    or unresolvable address fails at once, and so does a server that is not dask's. dask bounds the TCP
    connection but not its handshake (a web server on that port, waiting for a request, kept
    ``Client()`` waiting forever), so the handshake is tried first under our own time limit."""
    import asyncio
    import socket
    from urllib.parse import urlsplit

    from distributed import Client
    from distributed.comm import connect

    parts = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise SweepError(f"--scheduler {scheduler}: expected an address like tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise SweepError(f"--scheduler {scheduler}: cannot reach the dask scheduler "
                         f"({e.strerror or type(e).__name__})") from None

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(f"tcp://{host}:{port}", timeout=timeout_s), timeout_s)
        await comm.close()

    try:
        asyncio.run(handshake())
        return Client(scheduler, timeout=f"{timeout_s}s")
    except Exception as e:  # noqa: BLE001 - a server that is not dask's answers with anything (an HTTP page read
        # as a frame length made dask allocate 3 EiB: MemoryError)
        why = shorten(" ".join(f"{type(e).__name__}: {e}".split()), 160) if str(e) else \
            f"no dask handshake within {timeout_s:g} s"
        raise SweepError(f"--scheduler {scheduler}: not a dask scheduler or not answering ({why})") from None


def _run_dask(client: Any, batches: Iterator[list[dict[str, Any]]], on_rows: Any) -> None:
    """Every batch on the cluster, a bounded number in flight. A batch whose worker died (dask gives up
    after its retries: ``KilledWorker``) is retried task by task; a task that fails alone is a failed row."""
    from distributed import as_completed as d_completed

    window = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    futs = d_completed()
    jobs: dict[Any, list[dict[str, Any]]] = {}

    def submit(job: list[dict[str, Any]]) -> None:
        f = client.submit(evaluate_batch, job, pure=False)
        jobs[f] = job
        futs.add(f)

    for job in itertools.islice(batches, window):
        submit(job)
    for fut in futs:
        job = jobs.pop(fut)
        try:
            rows = fut.result()
        except Exception as e:  # noqa: BLE001 - the worker died or the task could not run
            if len(job) > 1:
                for t in job:
                    submit([t])
                continue
            rows = [crashed_row(job[0], f"dask: {type(e).__name__}: {e}")]
        on_rows(rows)
        nxt = next(batches, None)
        if nxt is not None:
            submit(nxt)


def run_sweep(spec: str | Path | dict[str, Any], out: str | Path, *, workers: int | None = None,
              scheduler: str | Any | None = None, batch_size: int = 16, progress: bool = False,
              max_pairs: int = MAX_PAIRS) -> Any:
    """Run (or resume) a sweep; returns the DataFrame of all finished rows (also ``out/results.parquet``).

    Every pair gives exactly one row, also when it fails or kills its worker process. One sweep at a time
    writes to ``out`` (:func:`~.folder.folder_lock`); an unreadable part is quarantined and its pairs
    computed again."""
    require("pyarrow", "infsim sweep")
    if scheduler is not None:
        require("distributed", "infsim sweep --scheduler")
    n_workers = check_options(workers, batch_size)
    s = load_spec(spec)
    total = check_size(s, max_pairs)
    outp = Path(out)
    with folder_lock(outp, "infsim sweep"):
        remove_stale_temporaries(outp)
        done = set(load_results(outp, repair=True).get("key", []))
        bar = progress_bar(progress, total=total, desc="sweep")
        seq = 0

        def todo() -> Iterator[dict[str, Any]]:
            for t in iter_tasks(s):
                if t["key"] in done:
                    bar.update(1)
                else:
                    yield t

        def on_rows(rows: list[dict[str, Any]]) -> None:
            nonlocal seq
            _write_part(outp, rows, seq)
            seq += 1
            bar.update(len(rows))

        batches = _batches(todo(), batch_size)
        if scheduler is not None:
            own = not hasattr(scheduler, "submit")  # an address (ours to close) or a Client (the caller's)
            client: Any = _connect(scheduler) if own else scheduler
            try:
                _run_dask(client, batches, on_rows)
            finally:
                if own:
                    client.close()
        else:
            run_batches(batches, evaluate_batch, n_workers, on_rows, crashed_row)
        bar.close()
        return _consolidate(outp, s)


#: result columns compared by :func:`inert_axes`
EFFECT_FIELDS = ("latency_ms", "tokens_per_s", "energy_j", "power_w", "hbm_bytes")


def inert_axes(df: Any) -> dict[str, list[str]]:
    """Axes that change nothing: ``{axis: result fields it changes}`` for every axis that changes neither the
    latency nor whether a design is feasible (an empty list: no result at all). Compared between rows that
    differ only in that axis (same other axes and workload). A fixed ``tp`` makes ``cores_per_chip`` such an
    axis, for instance."""
    axes = [c for c in df.columns if c.startswith("axis.")]
    if "feasible" in df:  # results and infeasible points (an axis that makes a design infeasible acts)
        df = df[~df["feasible"] | (df["error"] == "")]
    if not len(df):
        return {}
    wl_cols = [c for c in df.columns if c.startswith("wl.") and c != "wl.tp"]  # tp may follow the chip
    out: dict[str, list[str]] = {}
    for a in axes:
        if df[a].nunique() < 2:
            continue
        keys = [c for c in axes if c != a] + wl_cols
        groups = [g for _, g in df.groupby(keys, dropna=False)] if keys else [df]
        groups = [(None, g) for g in groups if g[a].nunique() > 1]
        if not groups:
            continue
        changed = []
        for f in (*EFFECT_FIELDS, "feasible"):
            if f in df and any(g[f].round(12).nunique(dropna=False) > 1 if f != "feasible" else g[f].nunique() > 1
                               for _, g in groups):
                changed.append(f)
        if "latency_ms" not in changed and "feasible" not in changed:
            out[a] = changed
    return out


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
