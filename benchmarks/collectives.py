"""Collective figures of :mod:`infsim.hw.collectives` and how fast the event simulation runs.

Writes ``benchmarks/results/collectives.json`` with:

* ``closed_form_checks``: ring all_reduce / all_gather / reduce_scatter on uniform rings (one core per chip,
  p chips) for p = 2, 4, 8, 12, 24 and several sizes: simulated vs closed-form time and the largest relative
  error (float rounding only);
* ``inf2``: every op x algorithm (ring, bidir, tree, hier) x ranks (2..24) x size (8 KiB .. 16 MiB) on the
  inf2 preset: ``time_us``, ``bus_gbps``, contention-free time;
* ``other_chips``: all_reduce over each preset's whole instance (trn1, trn2, trn3 where present);
* ``contention``: two identical all-reduces started together at TP 24 on inf2 vs one alone;
* ``decode_estimate``: Llama-2-7B decode at TP 24 (8 KiB all-reduce, 64 per token): time per all-reduce and
  per token with the preset, and the per-step overhead that would explain the published 6.47 ms TPOT over a
  1.3 ms HBM roofline (an estimate reported, not applied to any preset);
* ``speed``: wall time of the event simulation and transfers simulated per second.

Run: ``python benchmarks/collectives.py`` (about half a minute on two cores).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from infsim.config import load_chip, preset_names
from infsim.hw.collectives import (
    CollectiveSpec,
    ring_all_gather_time_ns,
    ring_all_reduce_time_ns,
    simulate_collective,
    simulate_concurrent,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "collectives.json"
KiB, MiB = 2**10, 2**20
# Published figures used only for the decode estimate: TPOT from [INF2-PERF] (docs/references.md); the HBM
# roofline is our arithmetic (weights / instance HBM bandwidth).
PUBLISHED_TPOT_MS = 6.47
HBM_ROOFLINE_MS = 1.3
ALLREDUCES_PER_TOKEN = 2 * 32
DECODE_BYTES = 4096 * 2


def closed_form_checks() -> dict[str, Any]:
    rows, worst = [], 0.0
    for p in (2, 4, 8, 12, 24):
        chip = load_chip("inf2", ["cores_per_chip=1", f"instance.chips={p}"])
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


def table(chip_name: str, ops: tuple[str, ...], algs: tuple[str, ...], ranks: list[int],
          sizes: list[int]) -> list[dict[str, Any]]:
    chip = load_chip(chip_name)
    rows = []
    for op in ops:
        for alg in algs:
            for p in ranks:
                for S in sizes:
                    if alg == "hier" and p % chip.cores_per_chip and p > chip.cores_per_chip:
                        continue
                    r = simulate_collective(chip, op, p, S, alg)
                    rows.append({"op": op, "algorithm": alg, "ranks": p, "bytes": S, "time_us": r.time_us,
                                 "bus_gbps": r.bus_gbps, "contention_free_us": r.contention_free_ns / 1e3,
                                 "steps": r.steps, "chip_link_bytes": r.chip_link_bytes})
    return rows


def contention() -> list[dict[str, Any]]:
    chip = load_chip("inf2")
    rows = []
    for S in (8 * KiB, MiB, 16 * MiB):
        one = simulate_collective(chip, "all_reduce", 24, S)
        a, b = simulate_concurrent(chip, [CollectiveSpec("all_reduce", 24, S)] * 2)
        rows.append({"bytes": S, "alone_us": one.time_us, "pair_us": [a.time_us, b.time_us],
                     "slowdown": max(a.time_ns, b.time_ns) / one.time_ns})
    return rows


def decode_estimate() -> dict[str, Any]:
    target_ns = (PUBLISHED_TPOT_MS - HBM_ROOFLINE_MS) * 1e6 / ALLREDUCES_PER_TOKEN
    out: dict[str, Any] = {"bytes_per_allreduce": DECODE_BYTES, "allreduces_per_token": ALLREDUCES_PER_TOKEN,
                           "published_tpot_ms": PUBLISHED_TPOT_MS, "hbm_roofline_ms": HBM_ROOFLINE_MS,
                           "gap_per_allreduce_us": target_ns / 1e3, "algorithms": {}}
    preset = load_chip("inf2")
    for alg in ("ring", "bidir", "hier", "tree"):
        def t(ovh: float, alg: str = alg) -> float:
            chip = load_chip("inf2", [f"links.collective_step_overhead_ns={ovh}"])
            return simulate_collective(chip, "all_reduce", 24, DECODE_BYTES, alg).time_ns
        t0, t1 = t(0.0), t(1000.0)
        slope = (t1 - t0) / 1000.0
        with_preset = simulate_collective(preset, "all_reduce", 24, DECODE_BYTES, alg).time_ns
        out["algorithms"][alg] = {
            "time_us_no_step_overhead": t0 / 1e3,
            "overhead_steps_on_critical_path": round(slope, 6),
            "step_overhead_ns_to_explain_gap": (target_ns - t0) / slope,
            "preset_step_overhead_ns": preset.links.collective_step_overhead_ns,
            "preset_time_us": with_preset / 1e3,
            "preset_ms_per_token": with_preset * ALLREDUCES_PER_TOKEN / 1e6,
        }
    return out


def speed() -> list[dict[str, Any]]:
    rows = []
    for chip_name, p, S, alg in (("inf2", 24, 8 * KiB, "ring"), ("inf2", 24, 16 * MiB, "ring"),
                                 ("inf2", 24, 16 * MiB, "hier"), ("trn2", 128, 16 * MiB, "ring")):
        if chip_name not in preset_names():
            continue
        chip = load_chip(chip_name)
        t0 = time.perf_counter()
        r = simulate_collective(chip, "all_reduce", p, S, alg)
        wall = time.perf_counter() - t0
        rows.append({"chip": chip_name, "ranks": p, "bytes": S, "algorithm": alg, "transfers": r.transfers,
                     "wall_s": wall, "transfers_per_s": r.transfers / wall, "sim_time_us": r.time_us})
    return rows


def main() -> int:
    t0 = time.perf_counter()
    res: dict[str, Any] = {"host": {"python": platform.python_version(), "machine": platform.machine()}}
    res["closed_form_checks"] = closed_form_checks()
    sizes = [8 * KiB, 64 * KiB, MiB, 16 * MiB]
    res["inf2"] = table("inf2", ("all_reduce", "all_gather", "reduce_scatter"), ("ring", "bidir", "tree", "hier"),
                        [2, 4, 8, 12, 24], sizes)
    other = {}
    for name in ("trn1", "trn2", "trn3"):
        if name in preset_names():
            chip = load_chip(name)
            n = chip.instance.chips * chip.cores_per_chip
            other[name] = table(name, ("all_reduce",), ("ring", "bidir", "hier"), [min(n, 128)],
                                [8 * KiB, MiB, 16 * MiB])
    res["other_chips"] = other
    res["contention"] = contention()
    res["decode_estimate"] = decode_estimate()
    res["speed"] = speed()
    res["total_wall_s"] = time.perf_counter() - t0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    cf = res["closed_form_checks"]["max_rel_err"]
    print(f"closed-form max rel err {cf:.2e}; wrote {OUT.relative_to(ROOT)} in {res['total_wall_s']:.1f} s")
    for alg, d in res["decode_estimate"]["algorithms"].items():
        print(f"decode TP24 {alg}: preset {d['preset_time_us']:.1f} us/all-reduce ({d['preset_ms_per_token']:.2f} "
              f"ms/token); step overhead to explain the gap {d['step_overhead_ns_to_explain_gap']:.0f} ns")
    for row in res["speed"]:
        print(f"speed {row['chip']} p={row['ranks']} {row['bytes']} B {row['algorithm']}: {row['wall_s']:.2f} s, "
              f"{row['transfers_per_s']:.0f} transfers/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
