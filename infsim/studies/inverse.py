"""Inverse design: the cheapest combination of resource scalings that reaches a target speedup.

Resources (multiplicative scalings of the baseline chip, each a set of config fields):

=========== ================================================================ =====================
resource    fields scaled                                                    cost weight (proxy)
=========== ================================================================ =====================
tensor      tensor_engine.macs_per_pe_per_cycle (every dtype)                0.30
vector      vector/scalar/gpsimd elems_per_cycle_per_lane                     0.10
hbm         hbm.bandwidth_gbps (capacity unchanged)                          0.25
dma         dma.engine_gbps                                                  0.05
sram        sbuf.bytes_per_partition                                         0.15
links       links.link_gbps                                                  0.05
clock       every engine clock_ghz                                           0.10
overheads   fixed latencies (DMA launch, descriptors, links, collective        0.05
            steps, engine instruction overheads, HBM latency), divided by s
=========== ================================================================ =====================

Cost proxy (documented assumption, not a silicon cost model): ``sum_r w_r * (s_r - 1)`` where ``w_r`` is the
assumed share of a NeuronCore-v2-class chip's area+power budget spent on resource ``r`` (tensor array and
HBM PHY/stacks dominate; DMA and link controllers are small) and ``s_r`` its scaling; scaling a resource by
``s`` is charged linearly. The search considers every combination of scalings from ``levels`` (default
1, 1.5, 2, 4, 8; clocks capped at 1.5x) on the analytical fidelity and returns the cheapest whose
geometric-mean speedup over the phase's workloads reaches the target (ties: higher speedup). The default
branch-and-bound search gives the same answer as the exhaustive reference (every combination in order of
cost) with far fewer evaluations; see :func:`what_it_takes`. It also reports the perf/W ratio of the winner
(energy parameters unchanged: only activity and time change) and says when nothing in the bounds reaches
the target, with the best that is reachable.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from infsim.config import CHIP_PATHS, ChipConfig, load_chip
from infsim.config.loader import validate
from infsim.models.graph import Workload

RESOURCES: dict[str, tuple[list[str], float]] = {
    "tensor": (["tensor_engine.macs_per_pe_per_cycle.*"], 0.30),
    "vector": (["vector_engine.elems_per_cycle_per_lane", "scalar_engine.elems_per_cycle_per_lane",
                "gpsimd_engine.elems_per_cycle_per_lane"], 0.10),
    "hbm": (["hbm.bandwidth_gbps"], 0.25),
    "dma": (["dma.engine_gbps"], 0.05),
    "sram": (["sbuf.bytes_per_partition"], 0.15),
    "links": (["links.link_gbps"], 0.05),
    "clock": (["tensor_engine.clock_ghz", "vector_engine.clock_ghz", "scalar_engine.clock_ghz",
               "gpsimd_engine.clock_ghz"], 0.10),
    # fixed latencies, *divided* by the scaling: DMA launch/descriptor costs, link and collective step
    # latencies, per-instruction engine overheads, HBM latency (hardware descriptor generation, faster
    # semaphores, lower-latency links)
    "overheads": (["/dma.fixed_latency_ns", "/dma.descriptor_overhead_ns", "/links.latency_ns",
                   "/links.collective_step_overhead_ns", "/links.collective_launch_overhead_ns",
                   "/links.intra_chip_latency_ns", "/hbm.latency_ns", "/vector_engine.fixed_overhead_cycles",
                   "/scalar_engine.fixed_overhead_cycles", "/gpsimd_engine.fixed_overhead_cycles"], 0.05),
}

#: physical caps on a scaling (assumed): clocks are bounded by the process (~1.5x over a 7 nm-class part at
#: the same power density), everything else may grow by adding units, stacks or links
MAX_SCALING = {"clock": 1.5}

#: the workloads of each phase (``tp`` is set by :func:`what_it_takes`: all cores of the chips needed)
PHASE_WORKLOADS: dict[str, list[Workload]] = {
    "decode": [Workload.make("decode", b, 2048) for b in (1, 8, 32)],
    "prefill": [Workload.make("prefill", 1, c) for c in (512, 2048)],
}


@dataclass
class WhatItTakes:
    baseline: str
    model: str
    phase: str
    target_speedup: float
    reachable: bool
    scalings: dict[str, float]
    achieved_speedup: float
    perf_per_watt_ratio: float
    cost: float | None  # None when unreachable
    evaluated: int
    best_within_bounds: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # per workload of the phase: what limits the baseline and the scaled chip (infsim.breakdown)
    baseline_limits: dict[str, str] = field(default_factory=dict)
    scaled_limits: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def scaled(base: ChipConfig, scalings: dict[str, float]) -> ChipConfig:
    """The baseline with each resource's fields scaled (:meth:`~infsim.config.paths.FieldPaths.scale`:
    ``/field`` divides, ``field.*`` scales every value of a mapping, integer fields stay integers)."""
    d = base.model_dump()
    for r, s in scalings.items():
        if s == 1:
            continue
        for path in RESOURCES[r][0]:
            CHIP_PATHS.scale(d, path, s)
    d["name"] = base.name + "".join(f"+{r}x{s:g}" for r, s in scalings.items() if s != 1)
    return validate(d, d["name"])


def what_it_takes(baseline: str | ChipConfig, speedup: float, model: str = "llama-2-7b", phase: str = "decode",
                  levels: tuple[float, ...] = (1, 1.5, 2, 4, 8), chips: int | None = None,
                  progress: bool = False, resources: tuple[str, ...] | None = None,
                  method: str = "branch-and-bound", context: int | None = None) -> WhatItTakes:
    """Cheapest scalings of ``resources`` (default: all of :data:`RESOURCES`) reaching ``speedup``.

    ``method="branch-and-bound"`` (default) assigns resources one at a time (most expensive first) and
    prunes a partial assignment when (a) its cost already exceeds the best complete one, or (b) even
    with every unassigned resource at its top level it misses the target. (b) relies on the speedup
    being non-decreasing in every scaling, which holds for the analytical model (more throughput, more
    SRAM or smaller fixed latencies never make a step slower; tests/studies/test_inverse.py checks the two
    methods agree). ``method="exhaustive"`` is the reference: every combination in order of cost.
    The phase's workloads are cut to ``context`` and to the model's positions
    (:func:`~infsim.studies.compare.fit_contexts`; the result's ``notes`` say so).
    """
    from infsim.errors import InfsimError
    from infsim.progress import progress_bar
    from infsim.runner import run_workload
    from infsim.studies.compare import chips_needed, fit_contexts

    if method not in ("branch-and-bound", "exhaustive"):
        raise InfsimError(f"what-it-takes: method '{method}': expected 'branch-and-bound' or 'exhaustive'")
    if not (math.isfinite(speedup) and speedup > 0):
        raise InfsimError(f"what-it-takes: --speedup must be a positive number, got {speedup}")
    if chips is not None and chips < 1:
        raise InfsimError(f"--chips must be >= 1, got {chips}")
    if phase not in PHASE_WORKLOADS:
        raise InfsimError(f"what-it-takes: phase '{phase}': expected one of {sorted(PHASE_WORKLOADS)}")
    if not levels or any(not (1 <= x < math.inf) for x in levels):
        raise InfsimError(f"what-it-takes: levels {levels}: every level must be a finite number >= 1")
    names = list(resources or RESOURCES)
    unknown = [r for r in names if r not in RESOURCES]
    if unknown:
        raise InfsimError(f"what-it-takes: unknown resource(s) {unknown}; known: {list(RESOURCES)}")
    base = load_chip(baseline) if not isinstance(baseline, ChipConfig) else baseline
    wls, notes = fit_contexts(PHASE_WORKLOADS[phase], model, context)
    n = chips or chips_needed(base, model, wls)
    tp = n * base.logical_cores_per_chip

    def evaluate(cfg: ChipConfig) -> tuple[list[float], list[float]]:
        out = [run_workload(cfg, model, replace(wl, tp=tp), fidelity="analytical") for wl in wls]
        return [r.latency_ms for r in out], [r.energy_per_token_j for r in out]

    base_lat, base_e = evaluate(base)
    memo: dict[tuple[float, ...], tuple[float, float]] = {}
    bar = progress_bar(progress, desc=f"what-it-takes {speedup}x {phase}", unit=" evaluations")

    def score(sc: dict[str, float]) -> tuple[float, float]:
        key = tuple(sc.get(r, 1.0) for r in names)
        if key not in memo:
            bar.update(1)
            lat, en = evaluate(scaled(base, sc))
            sp = math.exp(sum(math.log(b / x) for b, x in zip(base_lat, lat)) / len(lat))
            ppw = math.exp(sum(math.log(b / x) for b, x in zip(base_e, en)) / len(en))
            memo[key] = (sp, ppw)
        return memo[key]

    def cost_of(sc: dict[str, float]) -> float:
        return sum(RESOURCES[r][1] * (s - 1) for r, s in sc.items())

    per = {r: tuple(sorted({float(x) for x in levels if x <= MAX_SCALING.get(r, math.inf)})) or (1.0,)
           for r in names}
    top_sc = {r: per[r][-1] for r in names}
    top_sp, top_ppw = score(top_sc)
    top = {"scalings": top_sc, "speedup": top_sp, "cost": cost_of(top_sc), "perf_per_watt_ratio": top_ppw}
    best: tuple[float, float, dict[str, float], float] | None = None  # cost, speedup, scalings, perf/W

    def consider(sc: dict[str, float]) -> None:
        nonlocal best
        sp, ppw = score(sc)
        cost = cost_of(sc)
        if sp >= speedup and (best is None or cost < best[0] - 1e-12
                              or (abs(cost - best[0]) <= 1e-12 and sp > best[1])):
            best = (cost, sp, dict(sc), ppw)

    if top_sp >= speedup and method == "exhaustive":
        combos = sorted((dict(zip(names, c)) for c in itertools.product(*(per[r] for r in names))),
                        key=lambda sc: (cost_of(sc), tuple(sc.values())))
        for sc in combos:  # cheapest first: stop past the first cost level that reaches the target
            if best is not None and cost_of(sc) > best[0] + 1e-12:
                break
            consider(sc)
    elif top_sp >= speedup:
        order = sorted(names, key=lambda r: -RESOURCES[r][1])

        def dfs(i: int, sc: dict[str, float]) -> None:
            if i == len(order):
                consider(sc)
                return
            r = order[i]
            for s in per[r]:
                trial = {**sc, r: s}
                if best is not None and cost_of(trial) > best[0] + 1e-12:
                    break  # levels ascend, so every later level costs more too
                sp, _ = score({**trial, **{q: per[q][-1] for q in order[i + 1:]}})
                if sp < speedup:
                    continue  # even the best completion misses: prune this level (try a higher one)
                dfs(i + 1, trial)

        dfs(0, {})
    bar.close()
    evaluated = len(memo) + 1

    def limits(cfg: ChipConfig) -> dict[str, str]:
        from infsim.breakdown import limit_label

        return {f"{wl.phase} b{wl.batch} c{wl.prompt_or_context}":
                limit_label(run_workload(cfg, model, replace(wl, tp=tp), fidelity="analytical").breakdown)
                for wl in wls}

    if best is None:
        return WhatItTakes(base.name, str(model), phase, speedup, False, {}, top_sp, top_ppw, None, evaluated, top,
                           notes, limits(base), limits(scaled(base, top_sc)))
    cost, sp, sc, ppw = best
    sc = {r: sc[r] for r in names}  # in RESOURCES order
    return WhatItTakes(base.name, str(model), phase, speedup, True, sc, sp, ppw, cost, evaluated, top, notes,
                       limits(base), limits(scaled(base, sc)))
