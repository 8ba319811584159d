"""Why is a step slow? Time per op category and, per category, the resource that limits it, at both fidelities.

A :class:`Breakdown` splits a step's time over the op categories :data:`CATEGORIES` (projections, attention,
MLP, norms, collectives, LM head, other; plus ``runtime`` when a serving-stack time is added with
:meth:`Breakdown.with_runtime`), and gives for each category the *share* of its time that each resource's
work accounts for:

``share[r] = min(1, work of resource r for this category / time of this category)``

where the work is the busy time the category's instructions (or, at the step fidelity, its closed-form
costs) put on the tensor, vector, scalar and GpSimd engines, on the DMA engines (engine time over the
core's DMA engines), on HBM (bytes over the core's share of the chip's achievable streaming bandwidth,
:meth:`~infsim.engine.memory.MemoryModel.stream_gbps`; at the step fidelity the pin time its schedule
charges, the bytes over their access patterns' efficiencies of the core's share of the pin bandwidth) and on
the links (a collective's time less the time
it takes with infinitely fast links, :func:`latency_only`). ``fixed latencies`` takes what no resource
accounts for, ``1 - max(share)``: DMA and HBM latencies, semaphore hand-offs, collective steps, instruction
overheads, dependency chains. The *limit* of a category is the largest of these shares. Work is per core
(tensor-parallel ranks are symmetric: rank 0 is measured).

Time per category:

* cycle fidelity (:func:`from_simulation`): each instruction of core 0 carries its op class from the lowering
  (:data:`infsim.models.lower.tags.OP_CLASS_NAMES`, mapped by :data:`CATEGORY_OF`); time is charged to the
  oldest unfinished compute-side instruction (compute engines, collectives, sync) in program order
  (instruction ``i`` gets ``max(0, end_i - max(end_0..i-1))``), i.e. to what the core waits for; the charges
  add up to the step. A DMA is waited for by the instruction that consumes its data, which is charged with
  the wait; its work goes to the op its data is for (a weight slab's to the op whose weights it carries);
  sync carriers and int8 dequantisation belong to the instruction they precede.
* step fidelity (:mod:`infsim.fidelity.step`): each advance of its schedule's compute chain is charged to
  the op that caused it (a norm's chain to ``norms``, the rest of a weight segment to its op).

Left out: the split of a category's time *between* resources (the shares overlap, they do not add up),
and the critical path across cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from infsim.isa.opcodes import Engine, Op

if TYPE_CHECKING:
    from infsim.config.schema import ChipConfig
    from infsim.models.lower.transformer import Lowered
    from infsim.result import SimResult

#: op categories, in the order tables show them
CATEGORIES: tuple[str, ...] = ("projections", "attention", "mlp", "norms", "collectives", "lm_head", "other")
#: the category of serving-stack time (:meth:`Breakdown.with_runtime`)
RUNTIME = "runtime"
#: resources whose work is measured, then the rest of the time
WORK_RESOURCES: tuple[str, ...] = ("tensor", "vector", "scalar", "gpsimd", "dma", "hbm", "links")
RESOURCES: tuple[str, ...] = (*WORK_RESOURCES, "latency", "runtime")
RESOURCE_LABELS: dict[str, str] = {
    "tensor": "tensor engine", "vector": "vector engine", "scalar": "scalar engine", "gpsimd": "GpSimd engine",
    "dma": "DMA engines", "hbm": "HBM bandwidth", "links": "links", "latency": "fixed latencies",
    "runtime": "serving stack",
}

#: category of each lowering op class (``None``: the category of the next instruction of the core; the
#: weight stream is resolved by the weight it loads, :func:`weight_category`)
CATEGORY_OF: dict[str, str | None] = {
    "sync": None, "setup": "other", "input_dma": "other", "output_dma": "other", "weight_stream": None,
    "dequant": None, "norm": "norms", "qkv": "projections", "rope": "projections", "kv_write": "projections",
    "kv_load": "attention", "attn_scores": "attention", "softmax": "attention", "attn_pv": "attention",
    "o_proj": "projections", "residual": "other", "collective": "collectives", "mlp_up": "mlp",
    "mlp_down": "mlp", "moe_router": "mlp", "moe_combine": "mlp", "head": "lm_head", "patch_embed": "projections",
    "embed": "other",
}


def weight_category(name: str) -> str:
    """The category of the op a weight tensor feeds (``L3.w_up.r0`` -> ``mlp``)."""
    base = name.rsplit(".r", 1)[0]
    if any(k in base for k in ("w_gate", "w_up", "w_down", "gate_up", "router")):
        return "mlp"
    if base in ("lm_head", "classifier"):
        return "lm_head"
    return "projections"


@dataclass
class Part:
    """One category: its time and each resource's work in it (ns)."""

    ns: float = 0.0
    work_ns: dict[str, float] = field(default_factory=dict)

    def add(self, ns: float = 0.0, **work: float) -> None:
        self.ns += ns
        for k, v in work.items():
            self.work_ns[k] = self.work_ns.get(k, 0.0) + float(v)


def _shares(ns: float, work: dict[str, float]) -> dict[str, float]:
    s = {r: (min(1.0, work.get(r, 0.0) / ns) if ns > 0 else 0.0) for r in WORK_RESOURCES}
    s["latency"] = max(0.0, 1.0 - max(s.values())) if ns > 0 else 0.0
    return s


def _limit(shares: dict[str, float]) -> tuple[str, float]:
    r = max(shares, key=lambda k: shares[k])
    return r, shares[r]


@dataclass
class Breakdown:
    """Time per op category and the limiting resource of each (see the module docstring)."""

    fidelity: str
    total_ms: float
    categories: dict[str, dict[str, Any]]  # name -> ms, share, limit, limit_share, shares
    step: dict[str, Any]  # limit, limit_share, shares: the same over the whole step

    def to_dict(self) -> dict[str, Any]:
        """The ``breakdown`` of ``infsim run --json``."""
        return {"fidelity": self.fidelity, "total_ms": self.total_ms, "categories": self.categories,
                "step": self.step}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Breakdown:
        """The breakdown back from :meth:`to_dict`."""
        return cls(d["fidelity"], d["total_ms"], d["categories"], d["step"])

    @property
    def limit(self) -> str:
        return str(self.step["limit"])

    def columns(self) -> dict[str, Any]:
        """Flat columns for a sweep row: ``bd.<category>_ms`` and the step's ``bd.limit`` / ``bd.limit_share``."""
        out: dict[str, Any] = {f"bd.{c}_ms": self.categories.get(c, {}).get("ms", 0.0) for c in CATEGORIES}
        if RUNTIME in self.categories:
            out[f"bd.{RUNTIME}_ms"] = self.categories[RUNTIME]["ms"]
        out["bd.limit"] = self.step["limit"]
        out["bd.limit_share"] = self.step["limit_share"]
        return out

    def table(self) -> str:
        """The breakdown as a text table (one row per category with time, then the whole step)."""
        from tabulate import tabulate

        rows = []
        for c, d in self.categories.items():
            if d["ms"] <= 0:
                continue
            rows.append([c, f"{d['ms']:.3f}", f"{d['share']:.0%}", RESOURCE_LABELS[d["limit"]],
                         f"{d['limit_share']:.0%}"])
        rows.append(["step", f"{self.total_ms:.3f}", "100%", RESOURCE_LABELS[self.step["limit"]],
                     f"{self.step['limit_share']:.0%}"])
        return tabulate(rows, headers=["op category", "ms", "of step", "limited by", "share of its time"],
                        tablefmt="simple", colalign=("left", "right", "right", "left", "right"), disable_numparse=True)

    def with_runtime(self, runtime_ms: float) -> Breakdown:
        """This breakdown with a serving-stack time (host, launch, transfers) added as category ``runtime``."""
        if runtime_ms <= 0:
            return self
        total = self.total_ms + runtime_ms
        cats = {c: {**d, "share": d["ms"] / total} for c, d in self.categories.items()}
        shares = {r: 0.0 for r in RESOURCES}
        shares["runtime"] = 1.0
        cats[RUNTIME] = {"ms": runtime_ms, "share": runtime_ms / total, "limit": "runtime", "limit_share": 1.0,
                         "shares": shares}
        step_shares = {r: v * self.total_ms / total for r, v in self.step["shares"].items()}
        step_shares["runtime"] = runtime_ms / total
        lim, val = _limit(step_shares)
        return Breakdown(self.fidelity, total, cats, {"limit": lim, "limit_share": val, "shares": step_shares})


def limit_label(breakdown: dict[str, Any]) -> str:
    """``'DMA engines 88%'``: the resource that limits a step (a :meth:`Breakdown.to_dict`) and its share."""
    step = breakdown["step"]
    return f"{RESOURCE_LABELS[step['limit']]} {step['limit_share']:.0%}"


def build(parts: dict[str, Part], total_ns: float, fidelity: str) -> Breakdown:
    """A :class:`Breakdown` from each category's time and work (time the parts leave uncovered is ``other``)."""
    parts = {c: parts.get(c, Part()) for c in CATEGORIES}
    covered = sum(p.ns for p in parts.values())
    if total_ns > covered:
        parts["other"].ns += total_ns - covered
    total_ns = max(total_ns, covered)
    cats: dict[str, dict[str, Any]] = {}
    work_all: dict[str, float] = {}
    for c, p in parts.items():
        sh = _shares(p.ns, p.work_ns)
        lim, val = _limit(sh)
        cats[c] = {"ms": p.ns * 1e-6, "share": p.ns / total_ns if total_ns else 0.0, "limit": lim,
                   "limit_share": val, "shares": sh}
        for r, v in p.work_ns.items():
            work_all[r] = work_all.get(r, 0.0) + v
    sh = _shares(total_ns, work_all)
    lim, val = _limit(sh)
    return Breakdown(fidelity, total_ns * 1e-6, cats, {"limit": lim, "limit_share": val, "shares": sh})


def latency_only(chip: ChipConfig) -> ChipConfig:
    """``chip`` with links that move data in no time: what a collective costs there is its fixed part
    (launch, step and hop latencies), the rest of its time is link work."""
    fast = 1e12
    links = chip.links.model_copy(update={"link_gbps": fast, "intra_chip_gbps": fast, "collective_reduce_gbps": 0.0})
    return chip.model_copy(update={"links": links})


def from_simulation(lw: Lowered, res: SimResult, chip: ChipConfig, memory: Any = None) -> Breakdown:
    """The breakdown of a simulated lowered step (``res`` from ``simulate(..., trace=True)``)."""
    from infsim.engine.collectives import make_collectives
    from infsim.engine.costs import IS_COLLECTIVE
    from infsim.engine.memory import make_memory
    from infsim.models.lower.tags import OP_CLASS_NAMES

    tl, costs, prog = res.timeline, res.costs, lw.program
    if tl is None or costs is None:
        raise ValueError("from_simulation needs a result simulated with trace=True")
    ins = prog.instr
    idx = np.flatnonzero(ins["core"] == 0)  # rank 0, program order
    n_cat = len(CATEGORIES)
    cat_id = {c: i for i, c in enumerate(CATEGORIES)}
    klass = lw.op_class[idx]
    class_cat = np.array([cat_id.get(CATEGORY_OF[name] or "", -1) for name in OP_CLASS_NAMES],
                         dtype=np.int64)  # per op class (-1: resolved below)
    cats = class_cat[klass]
    # weight slabs: the op their weights feed (the HBM operand's tensor)
    ws = np.flatnonzero(klass == OP_CLASS_NAMES.index("weight_stream"))
    if len(ws):  # the first operand (slot order) that names an HBM tensor
        opnd = ins["opnd"][idx[ws]]
        tens = np.where(opnd >= 0, prog.aps["tensor"][np.maximum(opnd, 0)], -1)
        has = tens >= 0
        t = tens[np.arange(len(tens)), np.argmax(has, axis=1)]
        names = list(prog.tensors)
        used = np.unique(t[has.any(axis=1)])
        lut = np.full(len(names) + 1, cat_id["other"], np.int64)  # (index -1: no tensor)
        lut[used] = [cat_id[weight_category(names[i])] for i in used.tolist()]
        cats[ws] = lut[np.where(has.any(axis=1), t, -1)]
    # sync carriers and dequantisation: the category of the next instruction that has one
    unknown = cats < 0
    if unknown.any():
        pos = np.where(~unknown, np.arange(len(cats)), len(cats))
        nxt = np.minimum.accumulate(pos[::-1])[::-1]
        fill = np.append(cats, cat_id["other"])
        cats = np.where(unknown, fill[nxt], cats)
    # time: to the oldest unfinished compute-side instruction (DMAs are waited for by their consumers)
    eng = ins["engine"][idx].astype(np.int64)
    chain = np.flatnonzero(eng != int(Engine.dma))
    end = tl.end_ps[idx[chain]].astype(np.int64)
    prev = np.concatenate([[0], np.maximum.accumulate(end)[:-1]])
    charge = np.maximum(end - prev, 0).astype(np.float64) * 1e-3  # ns
    ns = np.bincount(cats[chain], weights=charge, minlength=n_cat)
    # work per category and resource (ns)
    busy = costs.busy_ps[idx].astype(np.float64) * 1e-3
    compute = (("tensor", Engine.tensor), ("vector", Engine.vector), ("scalar", Engine.scalar),
               ("gpsimd", Engine.gpsimd))
    slot = np.full(max(int(e) for e in Engine) + 1, len(compute), np.int64)  # engine -> its column, others last
    for k, (_, e) in enumerate(compute):
        slot[int(e)] = k
    # one pass for every (category, engine) pair: the same sums in the same order as one pass per engine
    per = np.bincount(cats * (len(compute) + 1) + slot[eng], weights=busy,
                      minlength=n_cat * (len(compute) + 1)).reshape(n_cat, len(compute) + 1)
    work: dict[str, np.ndarray] = {r: per[:, k] for k, (r, _) in enumerate(compute)}
    # the DMA columns are nonzero on the DMA rows only: summed over those of rank 0 (the same sums in the same
    # order as over every instruction of rank 0, less the zeros)
    d_at = np.flatnonzero(ins["core"][costs.dma_rows] == 0)  # positions in the DMA columns
    d_pos = np.searchsorted(idx, costs.dma_rows[d_at])  # positions in idx
    on_dma = eng[d_pos] == int(Engine.dma)
    dma_ns = costs.dma_engine_ps.values[d_at[on_dma]].astype(np.float64) * 1e-3 / chip.dma.engines_per_core
    work["dma"] = np.bincount(cats[d_pos[on_dma]], weights=dma_ns, minlength=n_cat)
    active = min(prog.num_cores, chip.cores_per_chip)
    share_gbps = make_memory(chip, memory).stream_gbps() / active
    hbm = (costs.hbm_read.values[d_at] + costs.hbm_write.values[d_at]).astype(np.float64) / share_gbps
    work["hbm"] = np.bincount(cats[d_pos], weights=hbm, minlength=n_cat)
    links = np.zeros(len(idx))
    cc = np.flatnonzero(IS_COLLECTIVE[ins["op"][idx]])
    if len(cc):
        full, fixed = make_collectives(chip), make_collectives(latency_only(chip))
        groups = list(prog.groups)
        memo: dict[tuple, float] = {}
        cc_i = idx[cc]
        cc_op, cc_i0 = ins["op"][cc_i].tolist(), ins["i0"][cc_i].tolist()
        src, dst = costs.cc_src_bytes[cc_i].tolist(), costs.cc_dst_bytes[cc_i].tolist()
        for x, j in enumerate(cc.tolist()):
            o = Op(cc_op[x])
            if o in (Op.send, Op.recv):
                members: tuple[int, ...] = (0, int(cc_i0[x]))
            else:
                members = tuple(prog.groups[groups[int(cc_i0[x])]])
            key = (o, members, int(src[x]), int(dst[x]))
            if key not in memo:
                d, _ = full.duration_ps(o, members, key[2], key[3], prog.cores_per_chip)
                f, _ = fixed.duration_ps(o, members, key[2], key[3], prog.cores_per_chip)
                memo[key] = max(0.0, (d - f) * 1e-3)
            links[j] = memo[key]
    work["links"] = np.bincount(cats, weights=links, minlength=n_cat)
    parts = {c: Part(float(ns[k]), {r: float(w[k]) for r, w in work.items()}) for c, k in cat_id.items()}
    return build(parts, res.total_ns, res.fidelity)
