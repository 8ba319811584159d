"""Collective times of :mod:`infsim.hw.collectives` against message size and ranks on three instances, with the
algorithm the runtime's rule picks at each size, beside the published ``nccom-test`` example outputs.

Writes ``benchmarks/results/collectives.json`` and ``benchmarks/results/collectives.md``:

* ``sweep``: all_reduce and all_gather, 1 KiB to 1 GiB (x4 steps), on inf2.48xlarge (2, 8, 24 ranks),
  trn1.32xlarge (2, 8, 32) and trn2.48xlarge (4, 16, 64 ranks = logical cores at LNC=2, i.e. 8, 32, 128
  physical cores): the algorithm chosen, the time the engine and both analytical fidelities use (the
  contention-free evaluation, links shared between the messages of one step), the event simulation's time
  (links shared across steps too; sizes up to 16 MiB) and the bus bandwidth;
* ``published``: every ``nccom-test`` example of the NCCOM-TEST user guide ([NCCOM] in ``docs/references.md``)
  that fits one instance, each on the presets it could have run on. **No example states its instance**;
  the SDK release that added it is given so the era is known. Two preset numbers are derived from these
  examples (the others are compared, not used): the per-rank collective data rate (``links.intra_chip_gbps``,
  from the saturation bus bandwidth of the 2-rank and 16-rank all-reduce sweeps) and the per-operation cost
  (``links.collective_launch_overhead_ns``, from the 1 KiB all-gather floors, ``launch_floor`` below);
* ``launch_floor``: the 1 KiB all-gather floors of the two newest examples minus the model's steps without a
  launch cost, on trn2: the derivation of the presets' launch cost;
* ``closed_form_checks``: the ring on uniform rings against its closed forms (float rounding only);
* ``contention``: two identical ring all-reduces at TP 24 on inf2 against one alone;
* ``speed``: wall time of the event simulation.

Run: ``python benchmarks/collectives.py`` (about a minute on two cores).
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from infsim.config import ChipConfig, load_chip
from infsim.hw.collectives import (
    CollectiveSpec,
    bus_factor,
    ring_all_gather_time_ns,
    ring_all_reduce_time_ns,
    simulate_collective,
    simulate_concurrent,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "collectives.json"
MD = ROOT / "benchmarks" / "results" / "collectives.md"
KiB, MiB, GiB = 2**10, 2**20, 2**30
SIZES = [KiB * 4**i for i in range(11)]  # 1 KiB .. 1 GiB
RANKS = {"inf2": [2, 8, 24], "trn1": [2, 8, 32], "trn2": [4, 16, 64]}  # ranks = logical cores
EVENT_SIM_MAX_BYTES = 16 * MiB

#: nccom-test examples of the NCCOM-TEST user guide: (id, SDK release that added it, op, ranks, dtype bytes,
#: [(size bytes, time us)], presets it could have run on). Instances are never stated; "could have run on" is
#: our reading of the rank count and the algorithms it prints.
NCCOM = [
    ("E2", "2.10 (2023-05)", "all_reduce", 2, [(KiB, 58), (4 * KiB, 58), (16 * KiB, 58), (64 * KiB, 58),
                                               (256 * KiB, 60), (MiB, 68), (4 * MiB, 107), (16 * MiB, 332),
                                               (64 * MiB, 1214), (256 * MiB, 4750), (GiB, 18930)],
     ["inf2", "trn1"]),
    ("E3", "2.10 (2023-05)", "all_gather", 32, [(KiB, 151), (8 * KiB, 149), (64 * KiB, 150), (512 * KiB, 179)],
     ["trn1"]),
    ("E4", "2.24 (2025-06)", "all_gather", 32, [(KiB, 6.16), (8 * KiB, 6.48), (64 * KiB, 8.17), (512 * KiB, 23.16)],
     ["trn1", "trn2"]),
    ("E5", "2.28 (2026-02)", "all_gather", 8, [(KiB, 10.0), (8 * KiB, 10.22), (64 * KiB, 11.31), (512 * KiB, 14.83)],
     ["inf2", "trn1", "trn2"]),
    ("E6", "2.28 (2026-02)", "all_reduce", 16, [(8 * KiB, 300), (128 * KiB, 574), (2 * MiB, 686), (32 * MiB, 2754),
                                                (512 * MiB, 9690)],
     ["trn1", "trn2"]),
]
E6_ALGORITHMS = {8 * KiB: "mesh", 128 * KiB: "mesh", 2 * MiB: "rdh", 32 * MiB: "kangaring", 512 * MiB: "kangaring"}


def _point(chip: ChipConfig, op: str, ranks: int, S: int, event: bool) -> dict[str, Any]:
    """One collective over the first ``ranks`` logical cores of ``chip``'s instance."""
    cores = list(range(ranks * chip.lnc))
    r = simulate_collective(chip, op, cores, S) if event else None
    if r is None:
        from infsim.hw.collectives import CollectiveModel

        m = CollectiveModel(chip)
        t_ns = m.estimate_ns(op, cores, S)
        sched = m.schedule(op, cores, S)
        alg, steps, sim = sched.algorithm, sched.num_steps, None
    else:
        t_ns, alg, steps, sim = r.contention_free_ns, r.algorithm, r.steps, r.time_us
    p = len(cores)
    return {"op": op, "ranks": ranks, "physical_cores": p, "bytes": S, "algorithm": alg, "steps": steps,
            "time_us": t_ns / 1e3, "event_sim_us": sim,
            "bus_gbps": bus_factor(op, p) * S / t_ns if t_ns > 0 else 0.0}


def sweep() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, ranks in RANKS.items():
        chip = load_chip(name)
        out[name] = [_point(chip, op, p, S, S <= EVENT_SIM_MAX_BYTES)
                     for op in ("all_reduce", "all_gather") for p in ranks for S in SIZES]
    return out


def published() -> list[dict[str, Any]]:
    rows = []
    for ex, sdk, op, ranks, pts, presets in NCCOM:
        for name in presets:
            chip = load_chip(name)
            if ranks * chip.lnc > chip.instance.chips * chip.cores_per_chip:
                continue
            for S, t_us in pts:
                m = _point(chip, op, ranks, S, False)
                rows.append({"example": ex, "added_in": sdk, "instance": "not stated", "op": op, "ranks": ranks,
                             "bytes": S, "published_us": t_us, "preset": name, "model_us": m["time_us"],
                             "model_algorithm": m["algorithm"],
                             "published_algorithm": E6_ALGORITHMS.get(S) if ex == "E6" else None,
                             "ratio": m["time_us"] / t_us})
    return rows


def launch_floor() -> dict[str, Any]:
    """The per-operation cost implied by the 1 KiB all-gather floors of E4 (32 ranks) and E5 (8 ranks), on
    trn2 (both examples are from the trn2 era), with the model's own steps subtracted."""
    chip = load_chip("trn2", ["links.collective_launch_overhead_ns=0"])
    out: dict[str, Any] = {"preset": "trn2", "examples": {}}
    excess = []
    for ex, _, op, ranks, pts, _ in NCCOM:
        if ex in ("E4", "E5"):
            t_pub = dict(pts)[KiB]
            steps = _point(chip, op, ranks, KiB, False)["time_us"]
            out["examples"][ex] = {"ranks": ranks, "published_us": t_pub, "model_steps_us": steps,
                                   "excess_us": t_pub - steps}
            excess.append(t_pub - steps)
    out["geometric_mean_excess_us"] = math.exp(sum(math.log(x) for x in excess) / len(excess))
    out["preset_launch_overhead_us"] = load_chip("trn2").links.collective_launch_overhead_ns / 1e3
    return out


def closed_form_checks() -> dict[str, Any]:
    rows, worst = [], 0.0
    for p in (2, 4, 8, 12, 24):
        chip = load_chip("inf2", ["cores_per_chip=1", f"instance.chips={p}", "links.collective_algorithm=ring",
                                  "links.intra_chip_gbps=100000"])
        L = chip.links
        bw = L.link_gbps * (2 if p == 2 else 1)
        for S in (8 * KiB, MiB, 16 * MiB):
            for op in ("all_reduce", "all_gather", "reduce_scatter"):
                f = ring_all_reduce_time_ns if op == "all_reduce" else ring_all_gather_time_ns
                want = f(S, p, bw, L.latency_ns, L.collective_step_overhead_ns, L.collective_launch_overhead_ns)
                got = simulate_collective(chip, op, p, S).time_ns
                err = abs(got - want) / want
                worst = max(worst, err)
                rows.append({"op": op, "ranks": p, "bytes": S, "sim_us": got / 1e3, "closed_form_us": want / 1e3,
                             "rel_err": err})
    return {"max_rel_err": worst, "points": rows}


def contention() -> list[dict[str, Any]]:
    chip = load_chip("inf2", ["links.collective_algorithm=ring"])
    rows = []
    for S in (8 * KiB, MiB, 16 * MiB):
        one = simulate_collective(chip, "all_reduce", 24, S)
        a, b = simulate_concurrent(chip, [CollectiveSpec("all_reduce", 24, S)] * 2)
        rows.append({"bytes": S, "alone_us": one.time_us, "pair_us": [a.time_us, b.time_us],
                     "slowdown": max(a.time_ns, b.time_ns) / one.time_ns})
    return rows


def speed() -> list[dict[str, Any]]:
    rows = []
    for chip_name, p, S, alg in (("inf2", 24, 8 * KiB, "ring"), ("inf2", 24, 16 * MiB, "ring"),
                                 ("inf2", 24, 8 * KiB, "mesh"), ("trn2", 128, MiB, "auto"),
                                 ("trn2", 128, 16 * MiB, "ring")):
        chip = load_chip(chip_name)
        t0 = time.perf_counter()
        r = simulate_collective(chip, "all_reduce", p, S, alg)
        wall = time.perf_counter() - t0
        rows.append({"chip": chip_name, "physical_cores": p, "bytes": S, "algorithm": r.algorithm,
                     "transfers": r.transfers, "wall_s": wall, "transfers_per_s": r.transfers / wall,
                     "sim_time_us": r.time_us})
    return rows


def _size(S: int) -> str:
    for unit, v in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if S >= v:
            return f"{S // v} {unit}"
    return f"{S} B"


def markdown(res: dict[str, Any]) -> str:
    md = ["# Collectives: time vs message size and ranks", "",
          "Written by `benchmarks/collectives.py`. `time us` is what the engine and both analytical fidelities "
          "use (contention-free evaluation, links shared between the messages of one step); `event us` the "
          "event simulation (links shared across steps too, sizes up to 16 MiB). Ranks are logical cores (trn2: "
          "LNC=2, two physical cores each). Algorithm: the runtime's choice ([RT-INTRA]): mesh < 1 MiB, rdh < 56 "
          "MiB where the chips form a hypercube, kangaring for whole chips in pairs, ring otherwise.", ""]
    for name, rows in res["sweep"].items():
        for op in ("all_reduce", "all_gather"):
            sel = [r for r in rows if r["op"] == op]
            ranks = sorted({r["ranks"] for r in sel})
            md += [f"## {name}: {op}", "", "| size | " + " | ".join(
                f"{p} ranks: algorithm, time us, event us, busbw GB/s" for p in ranks) + " |",
                   "|---|" + "---|" * len(ranks)]
            for S in SIZES:
                cells = []
                for p in ranks:
                    (r,) = [x for x in sel if x["ranks"] == p and x["bytes"] == S]
                    ev = "-" if r["event_sim_us"] is None else f"{r['event_sim_us']:.1f}"
                    cells.append(f"{r['algorithm']}, {r['time_us']:.1f}, {ev}, {r['bus_gbps']:.1f}")
                md.append(f"| {_size(S)} | " + " | ".join(cells) + " |")
            md.append("")
    md += ["## Published nccom-test examples beside the model", "",
           "From the NCCOM-TEST user guide ([NCCOM]); **none states its instance** (\"should not be considered "
           "up-to-date\"). Each is set beside every preset it could have run on. E2's 1 GiB row and E6's 512 MiB "
           "row give the presets' per-rank collective rate (they match by construction); E4/E5's 1 KiB rows give "
           "the per-operation cost (below). E3 (2023) and E6's small sizes (~300 us) are far above every newer "
           "floor: the runtime of their era, or an instance we cannot tell.", "",
           "| example | added in | op | ranks | size | published us | preset | model us | model algorithm | "
           "published algorithm | model / published |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["published"]:
        md.append(f"| {r['example']} | {r['added_in']} | {r['op']} | {r['ranks']} | {_size(r['bytes'])} | "
                  f"{r['published_us']:g} | {r['preset']} | {r['model_us']:.1f} | {r['model_algorithm']} | "
                  f"{r['published_algorithm'] or '-'} | {r['ratio']:.2f} |")
    lf = res["launch_floor"]
    md += ["", "Per-operation cost: " + "; ".join(
        f"{ex} ({d['ranks']} ranks, 1 KiB all-gather) {d['published_us']:g} us published, {d['model_steps_us']:.2f} us "
        f"of modelled steps on trn2, excess {d['excess_us']:.2f} us" for ex, d in lf["examples"].items())
        + f". Geometric mean of the excesses: {lf['geometric_mean_excess_us']:.2f} us; the presets use "
          f"{lf['preset_launch_overhead_us']:g} us (`links.collective_launch_overhead_ns`).", ""]
    return "\n".join(md) + "\n"


def main() -> int:
    t0 = time.perf_counter()
    res: dict[str, Any] = {"host": {"python": platform.python_version(), "machine": platform.machine()}}
    res["sweep"] = sweep()
    res["published"] = published()
    res["launch_floor"] = launch_floor()
    res["closed_form_checks"] = closed_form_checks()
    res["contention"] = contention()
    res["speed"] = speed()
    res["total_wall_s"] = time.perf_counter() - t0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    MD.write_text(markdown(res))
    cf = res["closed_form_checks"]["max_rel_err"]
    print(f"closed-form max rel err {cf:.2e}; wrote {OUT.relative_to(ROOT)} and {MD.relative_to(ROOT)} in "
          f"{res['total_wall_s']:.1f} s")
    lf = res["launch_floor"]
    print(f"launch cost implied by E4/E5: {lf['geometric_mean_excess_us']:.2f} us (preset "
          f"{lf['preset_launch_overhead_us']:g} us)")
    for row in res["speed"]:
        print(f"speed {row['chip']} p={row['physical_cores']} {row['bytes']} B {row['algorithm']}: "
              f"{row['wall_s']:.2f} s, {row['transfers_per_s']:.0f} transfers/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
