"""Generation-over-generation comparison: speedup, energy, perf/W and cost, and *why* (Shapley attribution).

``compare(baseline, target, model)`` runs a default workload set — decode at batch 1, 8 and 32 with a
2048-token context, prefill of 512 and 2048 tokens, each with bf16 and fp8 weights — on both chips with
the same number of chips (the smallest count whose HBM holds the largest workload on both, unless
given); tensor parallelism spans all cores of those chips (its degree counts logical cores,
:mod:`infsim.mapping`). Latencies are device time unless a serving stack is named (``serving``,
:mod:`infsim.serving`); the result states which (``serving`` and a note).

A workload that either chip cannot run for a reason more chips do not fix (an
:class:`~infsim.feasibility.InfeasibleError`, e.g. fp8 weights on a chip without an fp8 tensor-engine rate)
is not a row: it is listed in ``infeasible`` (which chip, the limit, the reason), the geomeans and the
attribution cover the other workloads, and a note says how many of the set they cover.

Attribution. The chips' parameters are split into resource groups (:data:`GROUPS`: compute, precision,
clock, HBM, SRAM, DMA, links). For a coalition ``S`` of groups, the hybrid chip is the baseline with
the groups in ``S`` taken from the target; its value ``v(S)`` is the mean over the workload set of
``log(latency_baseline / latency_hybrid)``. The Shapley value of a group is its average marginal
contribution over all orders, computed exactly over the ``2^groups`` coalitions (analytical fidelity);
the values sum to ``v(all) = `` the mean log speedup. Energy parameters, instance name and price are not
resources for the speedup and stay the baseline's in hybrids (:data:`NOT_RESOURCES`); fields checked against
each other share a group (the instance's chip count is in ``links``, the SRAM partition counts in ``compute``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from infsim.breakdown import limit_label
from infsim.config import CHIP_PATHS, ChipConfig, load_chip
from infsim.config.loader import validate
from infsim.config.schema import EnergyConfig
from infsim.errors import InfsimError
from infsim.feasibility import InfeasibleError
from infsim.models.graph import Workload
from infsim.progress import progress_bar

_ELEMENTWISE_ENGINES = ("vector_engine", "scalar_engine", "gpsimd_engine")

#: dtypes of the ``precision`` group (the fp8 tensor-engine rates); the ``compute`` group holds the other dtypes
_PRECISION_DTYPES = ("fp8_e4m3", "fp8_e5m2")
_COMPUTE_DTYPES = ("bf16", "fp16", "fp32", "int8", "uint8", "int32")

#: resource groups: dotted config fields swapped together from target into baseline (every field of the chip
#: schema is in exactly one group or in :data:`NOT_RESOURCES`; tests/studies/test_compare.py checks it).
#: Fields that a validator checks against each other share a group, so that every hybrid is a valid chip
#: (tests/studies/test_compare.py builds every coalition of every pair of presets):
#:
#: * ``compute`` holds the SBUF and PSUM partition counts with the tensor engine's rows and columns (one
#:   partition feeds one PE row / takes one PE column: the array's geometry; ``sram`` is the depth per partition)
#:   and ``cores_per_chip`` with ``lnc``;
#: * a dtype's MAC energy (``energy.mac_pj.<dtype>``) goes with its tensor-engine rate (the schema requires an
#:   energy for every rate; hybrids' energy is never reported, this only keeps them valid);
#: * ``links`` is the interconnect: the links, the topology they form and the instance's chip count that topology
#:   spans (``links.torus_dims`` must tile ``instance.chips``, :class:`infsim.hw.links.Topology`).
GROUPS: dict[str, list[str]] = {
    "compute": [
        "cores_per_chip", "lnc", "tensor_engine.rows", "tensor_engine.cols", "tensor_engine.moving_free_max",
        "sbuf.partitions", "psum.partitions",
        *(f"{m}.{dt}" for m in ("tensor_engine.macs_per_pe_per_cycle", "energy.mac_pj") for dt in _COMPUTE_DTYPES),
        "tensor_engine.min_moving_cycles", "tensor_engine.stationary_load_speedup",
        "tensor_engine.pipeline_latency_cycles", "tensor_engine.issue_overhead_cycles",
        *(f"{e}.{f}" for e in _ELEMENTWISE_ENGINES
          for f in ("lanes", "elems_per_cycle_per_lane", "two_input_factor", "fixed_overhead_cycles",
                    "strided_penalty", "strided_threshold_bytes", "reduce_extra_cycles", "func_cost")),
    ],
    "precision": [f"{m}.{dt}" for m in ("tensor_engine.macs_per_pe_per_cycle", "energy.mac_pj")
                  for dt in _PRECISION_DTYPES],
    "clock": ["tensor_engine.clock_ghz", *(f"{e}.clock_ghz" for e in _ELEMENTWISE_ENGINES)],
    "hbm": ["hbm"],
    "sram": [f"{m}.{f}" for m in ("sbuf", "psum") for f in ("bytes_per_partition", "banks", "partition_start_rules",
                                                           "max_free_elements", "no_access_engines")],
    "dma": ["dma"],
    "links": ["links", "instance.chips"],
}

#: fields that are not resources for the speedup: they stay the baseline's in every hybrid
NOT_RESOURCES: tuple[str, ...] = (
    "name", "description", "generation", "instance.name", "instance.price_per_hour_usd",
    *(f"energy.{f}" for f in EnergyConfig.model_fields if f != "mac_pj"),  # mac_pj: with the rates (GROUPS)
)

#: the default workload set (``tp`` is set per chip by :func:`compare`: all cores of the chips compared)
DEFAULT_WORKLOADS: list[Workload] = [
    Workload.make(ph, b, c, dtype=dt)
    for dt in ("bf16", "fp8_e4m3")
    for ph, b, c in (("decode", 1, 2048), ("decode", 8, 2048), ("decode", 32, 2048), ("prefill", 1, 512),
                     ("prefill", 1, 2048))
]


def fit_contexts(workloads: list[Workload], model: Any, context: int | None = None) -> tuple[list[Workload], list[str]]:
    """A workload set cut to ``context`` tokens (the longest prompt or cached context; ``None``: no cut) and to
    the positions the model holds (a decode step needs ``context + 1``); duplicates that a cut creates are
    dropped. Returns the workloads and notes saying what changed (e.g. GPT-2 holds 1024 positions, the
    default set asks for 2048)."""
    from infsim.models.spec import ModelSpec, load_model

    spec = model if isinstance(model, ModelSpec) else load_model(model)
    if context is not None and context < 1:
        raise InfsimError(f"--context must be >= 1, got {context}")
    out: list[Workload] = []
    cut_by_option: set[int] = set()
    cut_by_model: set[int] = set()
    for wl in workloads:
        c = wl.prompt_or_context
        if context is not None and c > context:
            cut_by_option.add(c)
            c = context
        room = spec.max_positions - (1 if wl.phase == "decode" else 0)  # positions this step may use
        if c > room:
            cut_by_model.add(c)
            c = room
        if c < 1:
            raise InfsimError(f"model '{spec.name}' holds {spec.max_positions} position(s): no {wl.phase} step fits")
        new = Workload.make(wl.phase, wl.batch, c, tp=wl.tp, dtype=wl.weight_dtype, kv_dtype=wl.kv_dtype)
        if new not in out:
            out.append(new)
    notes = []
    if cut_by_option:
        notes.append(f"contexts {', '.join(map(str, sorted(cut_by_option)))} of the workload set cut to --context "
                     f"{context}")
    if cut_by_model:
        notes.append(f"model '{spec.name}' holds {spec.max_positions} positions: contexts "
                     f"{', '.join(map(str, sorted(cut_by_model)))} of the workload set cut to fit (decode "
                     f"{spec.max_positions - 1}, prefill {spec.max_positions}; --context to choose)")
    return out, notes


@dataclass
class CompareRow:
    phase: str
    batch: int
    context: int
    dtype: str
    baseline_latency_ms: float
    target_latency_ms: float
    speedup: float
    baseline_tokens_per_s: float
    target_tokens_per_s: float
    baseline_energy_per_token_j: float
    target_energy_per_token_j: float
    perf_per_watt_ratio: float
    baseline_cost_per_mtok_usd: float
    target_cost_per_mtok_usd: float
    baseline_limit: str = ""  # the resource that limits the step (infsim.breakdown; with its share in %)
    target_limit: str = ""


@dataclass
class InfeasibleRow:
    """A workload of the set that ``chip`` (``baseline``, ``target`` or ``both``) cannot run: no row, no share of
    the geomeans; ``limit`` and ``reason`` are the :class:`~infsim.feasibility.InfeasibleError`'s (the
    baseline's where both refuse)."""

    phase: str
    batch: int
    context: int
    dtype: str
    chip: str
    limit: str
    reason: str


@dataclass
class CompareResult:
    baseline: str
    target: str
    model: str
    chips: int
    baseline_tp: int
    target_tp: int
    fidelity: str
    rows: list[CompareRow]
    serving: str = "none"  # the serving stack both sides ran under ("none": device time only)
    attribution: dict[str, float] = field(default_factory=dict)  # Shapley share of the mean log speedup
    attribution_log: dict[str, float] = field(default_factory=dict)
    geomean_speedup: float = 0.0
    geomean_perf_per_watt_ratio: float = 0.0
    notes: list[str] = field(default_factory=list)
    infeasible: list[InfeasibleRow] = field(default_factory=list)  # workloads a chip cannot run (not in rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hybrid(base: ChipConfig, target: ChipConfig, groups: tuple[str, ...] | list[str]) -> ChipConfig:
    """The baseline with the listed resource groups taken from the target (a mapping key the target lacks,
    such as a dtype rate, is absent from the hybrid too)."""
    if not groups:
        return base
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise InfsimError(f"unknown resource group(s) {unknown}; known: {', '.join(GROUPS)}")
    b = base.model_dump()
    t = target.model_dump()
    for g in groups:
        for path in GROUPS[g]:
            CHIP_PATHS.take(b, t, path)
    b["name"] = f"{base.name}+{'+'.join(groups)}"
    return validate(b, f"hybrid {base.name}<-{target.name}[{','.join(groups)}]")


def chips_needed(chip: ChipConfig, model: str, workloads: list[Workload], serving: str = "none") -> int:
    """Smallest chip count whose HBM holds every workload as the chip runs it: at least weights + KV cache at
    90% fill, and as many more chips as the feasibility check (:func:`infsim.models.lower.plan.check_feasible`,
    the exact footprint of the lowering's plan) needs for every workload. ``serving``: the stack whose
    buckets pad the device workloads (a stack compiled for the model's positions holds a longer KV cache)."""
    from infsim.mapping import physical_workload
    from infsim.models.graph import build_graph
    from infsim.models.lower.plan import check_feasible
    from infsim.models.spec import load_model
    from infsim.serving import load_serving

    spec = load_model(model)
    stack = load_serving(serving)
    dev = [stack.device_workload(wl, stack.compiled_length(wl, spec, None)) for wl in workloads]
    worst = 0
    for wl in dev:
        g = build_graph(spec, replace(wl, tp=1))
        kv = 2 * spec.layers * wl.batch * (wl.prompt_or_context + 1) * spec.kv_dim * 2
        worst = max(worst, g.weight_bytes() + kv)
    n = max(1, math.ceil(worst / (0.9 * chip.hbm_bytes)))
    while n < chip.instance.chips:  # the exact check: more chips while a workload's tensors exceed HBM
        short = False
        for wl in dev:
            try:
                check_feasible(spec, physical_workload(replace(wl, tp=n * chip.logical_cores_per_chip), chip), chip)
            except InfeasibleError as e:
                # another limit is no question of chip count (the run itself reports it): check the others
                short = e.limit == "hbm"
                if short:
                    break
        if not short:
            break
        n += 1
    return n


def _step(chip: ChipConfig, model: str, wl: Workload, n_chips: int, fidelity: str, serving: str = "none") -> Any:
    """One workload on ``n_chips`` of ``chip``, tensor parallel over all their (logical) cores
    (:class:`~infsim.feasibility.InfeasibleError` where the chip cannot run it, e.g. a dtype without a rate)."""
    from infsim.runner import run_workload

    return run_workload(chip, model, replace(wl, tp=n_chips * chip.logical_cores_per_chip), fidelity=fidelity,
                        serving=serving)


def compare(baseline: str | ChipConfig, target: str | ChipConfig, model: str = "llama-2-7b", *,
            workloads: list[Workload] | None = None, chips: int | None = None, context: int | None = None,
            fidelity: str = "analytical", attribution: bool = True, progress: bool = False,
            serving: str = "none") -> CompareResult:
    """``target`` against ``baseline`` on ``workloads`` (default :data:`DEFAULT_WORKLOADS`, cut to ``context``
    and to the model's positions by :func:`fit_contexts`), with the Shapley attribution of the speedup;
    ``serving``: the serving stack both sides run under (default ``none``: device time)."""
    base = load_chip(baseline) if not isinstance(baseline, ChipConfig) else baseline
    targ = load_chip(target) if not isinstance(target, ChipConfig) else target
    if chips is not None and chips < 1:
        raise InfsimError(f"--chips must be >= 1, got {chips}")
    wls, fit_notes = fit_contexts(list(workloads or DEFAULT_WORKLOADS), model, context)
    n_chips = chips or max(chips_needed(base, model, wls, serving), chips_needed(targ, model, wls, serving))
    groups = list(GROUPS)
    n_eval = 2 * len(wls) + (len(wls) * (2 ** len(groups) - 2) if attribution else 0)
    bar = progress_bar(progress, total=n_eval, desc=f"compare {base.name} -> {targ.name}")
    rows = []
    refused: list[InfeasibleRow] = []
    ran: list[Workload] = []  # the workloads both chips run (rows; the geomeans and attribution cover these)
    lat_base: dict[int, float] = {}
    for wl in wls:
        outcome: dict[str, Any] = {}
        for side, chip in (("baseline", base), ("target", targ)):
            try:
                outcome[side] = _step(chip, model, wl, n_chips, fidelity, serving)
            except InfeasibleError as e:
                outcome[side] = e
        bar.update(2)
        errs = {k: v for k, v in outcome.items() if isinstance(v, InfeasibleError)}
        if errs:
            side = "both" if len(errs) == 2 else next(iter(errs))
            err = next(iter(errs.values()))
            refused.append(InfeasibleRow(wl.phase, wl.batch, wl.prompt_or_context, wl.weight_dtype, side, err.limit,
                                         err.reason))
            continue
        rb, rt = outcome["baseline"], outcome["target"]
        lat_base[len(ran)] = rb.latency_ms
        ran.append(wl)
        price_b = base.instance.price_per_hour_usd / base.instance.chips * n_chips
        price_t = targ.instance.price_per_hour_usd / targ.instance.chips * n_chips
        rows.append(CompareRow(
            wl.phase, wl.batch, wl.prompt_or_context, wl.weight_dtype, rb.latency_ms, rt.latency_ms,
            rb.latency_ms / rt.latency_ms,
            rb.tokens_per_s, rt.tokens_per_s, rb.energy_per_token_j, rt.energy_per_token_j,
            rb.energy_per_token_j / rt.energy_per_token_j,
            price_b / 3600 / rb.tokens_per_s * 1e6, price_t / 3600 / rt.tokens_per_s * 1e6,
            limit_label(rb.breakdown), limit_label(rt.breakdown),
        ))
    if not rows:
        raise InfsimError(f"compare {base.name} -> {targ.name} on '{model}': no workload of the set runs on both "
                          "chips: " + "; ".join(f"{r.phase} b{r.batch} ctx {r.context} {r.dtype} on {r.chip} "
                                                f"({r.limit}): {r.reason}" for r in refused))
    bar.total = 2 * len(wls) + (len(rows) * (2 ** len(groups) - 2) if attribution else 0)
    geo = math.exp(sum(math.log(r.speedup) for r in rows) / len(rows))
    geo_ppw = math.exp(sum(math.log(r.perf_per_watt_ratio) for r in rows) / len(rows))
    res = CompareResult(base.name, targ.name, str(model), n_chips, n_chips * base.logical_cores_per_chip,
                        n_chips * targ.logical_cores_per_chip, fidelity, rows, serving=serving, geomean_speedup=geo,
                        geomean_perf_per_watt_ratio=geo_ppw)
    res.notes.extend(fit_notes)
    res.infeasible = refused
    if refused:
        res.notes.append(f"geomeans{' and attribution' if attribution else ''} cover {len(rows)} of the {len(wls)} "
                         f"workloads: {len(refused)} cannot run on one or both chips (listed under 'infeasible', "
                         "with the limit and the reason)")
    res.notes.append(f"both chips: {n_chips} chip(s), tensor parallel over all their cores (logical cores: "
                     f"{base.name} LNC={base.lnc}, {targ.name} LNC={targ.lnc})")
    res.notes.append("serving stack: none - latencies are device time only (the chips compared, no host or "
                     "runtime time)" if serving == "none" else
                     f"serving stack: {serving} on both sides - latencies are device time at its buckets plus its "
                     "host and runtime time")
    if attribution:
        if fidelity != "analytical":
            res.notes.append("attribution computed at analytical fidelity")
        base_an = lat_base if fidelity == "analytical" else {
            i: _step(base, model, wl, n_chips, "analytical", serving).latency_ms
            for i, wl in enumerate(ran)
        }
        value: dict[frozenset[str], float] = {frozenset(): 0.0}
        for r in range(1, len(groups) + 1):
            for coal in itertools.combinations(groups, r):
                if len(coal) == len(groups) and fidelity == "analytical":
                    # every resource from the target: the target's own speed (checked by a test)
                    value[frozenset(coal)] = sum(math.log(row.speedup) for row in rows) / len(rows)
                    continue
                hyb = hybrid(base, targ, coal)
                logs = []
                for i, wl in enumerate(ran):
                    logs.append(math.log(base_an[i] / _step(hyb, model, wl, n_chips, "analytical",
                                                            serving).latency_ms))
                    bar.update(1)
                value[frozenset(coal)] = sum(logs) / len(logs)
        n = len(groups)
        shap = {}
        for g in groups:
            others = [x for x in groups if x != g]
            s = 0.0
            for r in range(len(others) + 1):
                w = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
                for coal in itertools.combinations(others, r):
                    s += w * (value[frozenset(coal) | {g}] - value[frozenset(coal)])
            shap[g] = s
        total = value[frozenset(groups)]
        res.attribution_log = shap
        res.attribution = {g: (v / total if total else 0.0) for g, v in shap.items()}
    bar.close()
    return res
