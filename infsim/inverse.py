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
``s`` is charged linearly. The search enumerates every combination of scalings from ``levels`` (default
1, 1.5, 2, 4, 8; clocks capped at 1.5x) on the analytical fidelity, keeps those whose geometric-mean
speedup over the phase's workloads reaches the target, and returns the cheapest (ties: higher speedup):
combinations are tried in order of increasing cost, so the search stops at the first cost level that reaches
the target. It also reports the perf/W ratio of the winner (energy parameters unchanged: only activity and
time change) and says when nothing in the bounds reaches the target.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from infsim.config import ChipConfig, load_chip
from infsim.config.loader import validate

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

PHASE_WORKLOADS = {
    "decode": [("decode", 1, 2048, "bf16"), ("decode", 8, 2048, "bf16"), ("decode", 32, 2048, "bf16")],
    "prefill": [("prefill", 1, 512, "bf16"), ("prefill", 1, 2048, "bf16")],
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

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def scaled(base: ChipConfig, scalings: dict[str, float]) -> ChipConfig:
    d = base.model_dump()
    for r, s in scalings.items():
        if s == 1:
            continue
        for path in RESOURCES[r][0]:
            divide = path.startswith("/")
            parts = path.lstrip("/").split(".")
            node = d
            for p in parts[:-1]:
                node = node[p]
            last = parts[-1]
            if last == "*":
                for k in node:
                    node[k] = node[k] * s
            elif divide:
                node[last] = type(node[last])(node[last] / s) if isinstance(node[last], int) else node[last] / s
            elif last == "bytes_per_partition":
                node[last] = int(node[last] * s)
            else:
                node[last] = node[last] * s
    d["name"] = base.name + "".join(f"+{r}x{s:g}" for r, s in scalings.items() if s != 1)
    return validate(d, d["name"])


def what_it_takes(baseline: str | ChipConfig, speedup: float, model: str = "llama-2-7b", phase: str = "decode",
                  levels: tuple[float, ...] = (1, 1.5, 2, 4, 8), chips: int | None = None,
                  progress: bool = False) -> WhatItTakes:
    from tqdm import tqdm

    from infsim.compare import chips_needed
    from infsim.runner import run

    base = load_chip(baseline) if not isinstance(baseline, ChipConfig) else baseline
    wls = PHASE_WORKLOADS[phase]
    n = chips or chips_needed(base, model, wls)
    tp = n * base.cores_per_chip

    def evaluate(cfg: ChipConfig) -> tuple[list[float], list[float]]:
        out = [run(cfg, model, phase=p, batch=b, context=c, tp=tp, dtype=dt, fidelity="analytical")
               for p, b, c, dt in wls]
        return [r.latency_ms for r in out], [r.energy_per_token_j for r in out]

    base_lat, base_e = evaluate(base)
    names = list(RESOURCES)

    def score(sc: dict[str, float]) -> tuple[float, float]:
        lat, en = evaluate(scaled(base, sc))
        sp = math.exp(sum(math.log(b / x) for b, x in zip(base_lat, lat)) / len(lat))
        ppw = math.exp(sum(math.log(b / x) for b, x in zip(base_e, en)) / len(en))
        return sp, ppw

    def cost_of(sc: dict[str, float]) -> float:
        return sum(RESOURCES[r][1] * (s - 1) for r, s in sc.items())

    # everything at the top level first: if even that misses the target, it is unreachable in bounds
    top_sc = {r: max(x for x in levels if x <= MAX_SCALING.get(r, math.inf)) for r in names}
    top_sp, top_ppw = score(top_sc)
    top = (top_sp, top_sc, cost_of(top_sc), top_ppw)
    best: tuple[float, float, dict[str, float], float] | None = None
    per = [tuple(x for x in levels if x <= MAX_SCALING.get(r, math.inf)) or (1.0,) for r in names]
    combos = sorted((dict(zip(names, c)) for c in itertools.product(*per)),
                    key=lambda sc: (cost_of(sc), tuple(sc.values())))
    evaluated = 1
    bar = tqdm(total=len(combos), desc=f"what-it-takes {speedup}x {phase}", disable=not progress)
    if top_sp >= speedup:
        # cheapest first: the first combination that reaches the target wins (equal-cost ties compared)
        for sc in combos:
            cost = cost_of(sc)
            bar.update(1)
            if best is not None and cost > best[0] + 1e-12:
                break
            sp, ppw = score(sc)
            evaluated += 1
            if sp >= speedup and (best is None or sp > best[1]):
                best = (cost, sp, sc, ppw)
    bar.close()
    assert top is not None
    if best is None:
        return WhatItTakes(base.name, str(model), phase, speedup, False, {}, top[0], top[3], None, evaluated,
                           {"scalings": top[1], "speedup": top[0], "cost": top[2], "perf_per_watt_ratio": top[3]})
    cost, sp, sc, ppw = best
    return WhatItTakes(base.name, str(model), phase, speedup, True, sc, sp, ppw, cost, evaluated,
                       {"scalings": top[1], "speedup": top[0], "cost": top[2], "perf_per_watt_ratio": top[3]})
