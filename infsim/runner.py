"""``infsim.run`` (defined in this module, ``infsim.runner``): one transformer step on a chip, end to end.

model (zoo name or config.json) -> op graph -> lowering -> ISA program -> simulation -> :class:`RunResult`.

Tensor parallelism over ``tp`` ranks spans chips when ``tp`` exceeds the ranks of one chip (the chip
preset's ``instance`` says how they are linked); a rank is a logical core of ``lnc`` physical cores
(:mod:`infsim.mapping`), so ``tp`` 64 on trn2 (LNC=2) uses all 128 cores of trn2.48xlarge. A serving stack
(:mod:`infsim.serving`, default ``none``) pads the step to its buckets and adds its host and runtime time:
``latency_ms = device_ms + runtime_ms``. Throughput: decode produces ``batch`` tokens per step, prefill
processes ``batch x context`` prompt tokens, over ``latency_ms``. Energy and power cover every chip the step
uses (static power of whole chips included, also while the host works).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infsim.config import ChipConfig, load_chip
from infsim.errors import InfsimError
from infsim.progress import progress_bar

if TYPE_CHECKING:
    from infsim.models.graph import Workload
    from infsim.models.lower.plan import StepPlan


@dataclass
class RunResult:
    """One step's result. ``latency_ms`` = ``device_ms`` (the chip, at the shapes the serving stack pads to)
    + ``runtime_ms`` (the serving stack's host and runtime time, :mod:`infsim.serving`): what a served
    request sees. ``tp`` counts ranks (logical cores); ``physical_cores`` = ``tp * lnc``."""

    chip: str
    model: str
    phase: str
    batch: int
    context: int
    tp: int
    dtype: str
    fidelity: str
    latency_ms: float
    tokens_per_s: float
    flops: int
    hbm_bytes: int
    hbm_gbps: float
    energy_j: float
    power_w: float
    chips: int
    utilization: dict[str, float] = field(default_factory=dict)
    min_hbm_bytes: int = 0
    instructions: int = 0
    lower_s: float = 0.0
    sim_s: float = 0.0
    energy_breakdown_j: dict[str, float] = field(default_factory=dict)
    breakdown: dict[str, Any] = field(default_factory=dict)  # infsim.breakdown.Breakdown.to_dict()
    device_ms: float = 0.0
    runtime_ms: float = 0.0
    serving: str = "none"
    device_context: int = 0  # the context the device ran (a stack's bucket pads it)
    lnc: int = 1
    physical_cores: int = 0
    collectives: list[dict[str, Any]] = field(default_factory=list)

    @property
    def energy_per_token_j(self) -> float:
        tokens = self.batch if self.phase == "decode" else self.batch * self.context
        return self.energy_j / max(tokens, 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["energy_per_token_j"] = self.energy_per_token_j
        return d


def run(chip: ChipConfig | str | Path, model: Any, *, phase: str = "decode", batch: int = 1,
        context: int = 2048, tp: int = 1, dtype: str = "bf16", kv_dtype: str | None = None,
        fidelity: str = "cycle", overrides: list[str] | dict[str, Any] | None = None, memory: str | None = None,
        progress: bool = False, serving: Any = None, max_seq: int | None = None, trace: str | Path | None = None,
        trace_max_events: int | None = None) -> RunResult:
    """Simulate one step. ``model``: zoo name, config.json path or a ModelSpec. ``context``: prompt length
    (prefill) or cached tokens (decode). ``tp``: ranks (logical cores, :mod:`infsim.mapping`). ``memory``:
    a registered memory model overriding the chip's ``hbm.memory_model`` (both fidelities). ``serving``: a
    serving stack (:mod:`infsim.serving`; default ``none``, the bare chip) and ``max_seq`` the sequence
    length it compiled for (default: the model's positions)."""
    from infsim.models.graph import Workload

    if tp < 1:
        raise InfsimError(f"--tp must be >= 1, got {tp}")
    cfg = load_chip(chip, overrides) if not isinstance(chip, ChipConfig) or overrides else chip
    wl = Workload.make(phase, batch, context, tp=tp, dtype=dtype, kv_dtype=kv_dtype)
    return run_workload(cfg, model, wl, fidelity=fidelity, memory=memory, progress=progress, serving=serving,
                        max_seq=max_seq, trace=trace, trace_max_events=trace_max_events)


def run_workload(chip: ChipConfig, model: Any, wl: Workload, *, fidelity: str = "cycle", memory: str | None = None,
                 progress: bool = False, serving: Any = None, max_seq: int | None = None,
                 trace: str | Path | None = None, trace_max_events: int | None = None) -> RunResult:
    """Simulate one step given as a :class:`~infsim.models.graph.Workload` (what :func:`run` builds from its
    arguments; the studies hold their workload sets as such). The serving stack pads the step to its
    buckets (device time) and adds its host and runtime time; the logical ranks map onto physical cores.
    Every fidelity first checks that the chip can run the step at all
    (:func:`infsim.models.lower.plan.check_feasible`; :class:`~infsim.feasibility.InfeasibleError` names the
    limit). ``trace``: write a Perfetto/Chrome trace of the run there (cycle fidelity;
    :func:`infsim.trace.write_trace`, slices named by layer and op)."""
    from infsim.breakdown import Breakdown
    from infsim.mapping import physical_workload
    from infsim.models.lower.plan import check_feasible
    from infsim.models.spec import ModelSpec, load_model
    from infsim.serving import load_serving
    from infsim.sim import FIDELITIES

    if fidelity not in FIDELITIES:
        raise InfsimError(f"unknown fidelity '{fidelity}' (expected one of {', '.join(FIDELITIES)})")
    if fidelity == "analytical" and trace is not None:
        raise InfsimError("--trace needs --fidelity cycle (the analytical fidelity runs no instructions)")
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    stack = load_serving(serving)
    dev = stack.device_workload(wl, stack.compiled_length(wl, spec, max_seq))
    phys = physical_workload(dev, chip)  # InfeasibleError (instance) when the instance has too few cores
    plan = check_feasible(spec, phys, chip)  # the same checks at every fidelity: InfeasibleError names the limit
    if fidelity == "analytical":
        r = _run_analytical(chip, spec, phys, fidelity, memory, plan)
    else:
        r = _run_cycle(chip, spec, phys, fidelity, memory, progress, trace, trace_max_events)
    runtime_ns = stack.runtime_ns(wl, spec)
    device_s = r.latency_ms * 1e-3
    latency_s = device_s + runtime_ns * 1e-9
    tokens = wl.batch if wl.phase == "decode" else wl.batch * wl.seq
    if runtime_ns > 0:  # the chips stay powered while the host works
        r.energy_breakdown_j["static_runtime"] = chip.static_power_w * r.chips * runtime_ns * 1e-9
        r.energy_j = sum(r.energy_breakdown_j.values())
    r.tp, r.context, r.device_context = wl.tp, wl.prompt_or_context, dev.prompt_or_context
    r.device_ms, r.runtime_ms, r.latency_ms = device_s * 1e3, runtime_ns * 1e-6, latency_s * 1e3
    r.tokens_per_s = tokens / latency_s if latency_s else 0.0
    r.power_w = r.energy_j / latency_s if latency_s else 0.0
    r.serving, r.lnc, r.physical_cores = stack.name, chip.lnc, phys.tp
    r.breakdown = Breakdown.from_dict(r.breakdown).with_runtime(r.runtime_ms).to_dict()
    return r


def _run_cycle(cfg: ChipConfig, spec: Any, wl: Workload, fidelity: str, memory: str | None,
               progress: bool, trace: str | Path | None, trace_max_events: int | None) -> RunResult:
    """Lower the step (``wl.tp`` physical cores) and simulate it."""
    from infsim.breakdown import from_simulation
    from infsim.engine.heap import release_free_heap
    from infsim.models.lower.cache import lower_cached
    from infsim.sim import simulate

    phase, batch = wl.phase, wl.batch
    bar = progress_bar(progress, total=2, desc=f"{spec.name} {phase} on {cfg.name}", leave=False)
    t0 = time.perf_counter()
    lw = lower_cached(spec, wl, cfg, wait=False)  # on-disk cache (written in the background): see its module
    lw.program.drop_build_indexes()  # nothing is appended from here on
    release_free_heap()  # the lowering's temporaries, before the simulation's large arrays (engine/heap.py)
    t1 = time.perf_counter()
    bar.update(1)
    # the breakdown needs the per-instruction times; the HBM transfer log only a trace file shows
    res = simulate(lw.program, cfg, fidelity=fidelity, memory=memory, trace=True, memory_log=trace is not None)
    t2 = time.perf_counter()
    breakdown = from_simulation(lw, res, cfg, memory).to_dict()
    if trace is not None:
        from infsim.trace import write_trace

        write_trace(res, trace, program=lw.program, tags=(lw.op_class, lw.layer), chip=cfg,
                    max_events=trace_max_events, flag="--trace")
    bar.update(1)
    bar.close()
    latency_s = res.total_ns * 1e-9
    util: dict[str, list[float]] = {}
    for e in res.engines:
        total = max(res.total_ps, 1)
        util.setdefault(e.engine, []).append(e.busy_ps / total)
    fl = lw.matmul_flops()
    return RunResult(
        chip=cfg.name, model=spec.name, phase=phase, batch=batch, context=wl.prompt_or_context, tp=wl.tp,
        dtype=wl.weight_dtype, fidelity=fidelity, latency_ms=latency_s * 1e3, tokens_per_s=0.0,
        flops=fl["linear"] + fl["attention"], hbm_bytes=int(res.hbm_bytes_read + res.hbm_bytes_written),
        hbm_gbps=(res.hbm_bytes_read + res.hbm_bytes_written) / max(res.total_ns, 1e-9),
        energy_j=res.energy_j, power_w=res.power_w, chips=lw.program.num_chips,
        utilization={k: sum(v) / len(v) for k, v in sorted(util.items())},
        min_hbm_bytes=lw.graph.hbm_bytes(), instructions=len(lw.program), lower_s=t1 - t0, sim_s=t2 - t1,
        energy_breakdown_j=dict(res.energy_breakdown_j), collectives=list(res.collectives), breakdown=breakdown,
    )


def _run_analytical(cfg: ChipConfig, spec: Any, wl: Workload, fidelity: str, memory: str | None,
                    plan: StepPlan) -> RunResult:
    """Closed forms per op (:mod:`infsim.fidelity.step`) at ``wl.tp`` physical cores: no lowering, no event
    loop."""
    from infsim.fidelity.step import estimate, estimate_energy

    t0 = time.perf_counter()
    est = estimate(spec, wl, cfg, memory=memory, plan=plan)
    chips = math.ceil(wl.tp / cfg.cores_per_chip)
    energy = estimate_energy(est, spec, wl, cfg, chips)
    g = est.graph
    assert g is not None and est.breakdown is not None  # estimate() always attaches the graph and the breakdown
    latency_s = est.total_ns * 1e-9
    ej = sum(energy.values())
    return RunResult(
        chip=cfg.name, model=spec.name, phase=wl.phase, batch=wl.batch, context=wl.prompt_or_context, tp=wl.tp,
        dtype=wl.weight_dtype, fidelity=fidelity, latency_ms=latency_s * 1e3, tokens_per_s=0.0, flops=g.flops(),
        hbm_bytes=int(est.hbm_bytes), hbm_gbps=est.hbm_bytes / max(est.total_ns, 1e-9), energy_j=ej,
        power_w=ej / latency_s if latency_s else 0.0, chips=chips, utilization={}, min_hbm_bytes=g.hbm_bytes(),
        instructions=0, lower_s=0.0, sim_s=time.perf_counter() - t0, energy_breakdown_j=energy,
        collectives=list(est.collectives), breakdown=est.breakdown.to_dict(),
    )
