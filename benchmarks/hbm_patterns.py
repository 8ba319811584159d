"""HBM access patterns in the loop: what the ``dram`` memory model charges the transfers of a real step, and
where it stands against the command-level controller.

``python benchmarks/hbm_patterns.py [--quick]`` writes ``benchmarks/results/hbm_patterns.json`` and prints:

1. **Typical transfers of a Llama-2-7B decode step** (bs 1 and 8, context 2048, tp 2, 2 layers) on each
   chip with a DRAM preset: per (op class, direction, row bytes, stride) of the lowered program's DMA
   instructions, their count, bytes and the efficiency the model charges (share of pin bandwidth).
2. **Read/write mix**: the closed form the rate profile uses against the command-level controller (one
   channel, independent read and write streams, mean over 16 placements) per preset and write share.
3. **Engine vs command-level replay** (:mod:`infsim.engine.memory.replay`) on transfer mixes: the six of
   ``tests/engine/test_memory_patterns.py`` (4 queues) and the same streams over 8, 16 and 32 queues and two
   cores at the presets' DMA rates, to record where the pool and the controller part: many concurrent
   streams. The controller's read queue is varied on the 32-stream case to show what that gap rests on.

``--quick`` skips the chips other than inf2 and the queue sweep.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np

from infsim.config import load_chip
from infsim.engine.costs import compute_costs
from infsim.engine.memory import make_memory
from infsim.engine.memory.access import hbm_rows
from infsim.engine.memory.replay import replay
from infsim.engine.synthetic import TRANSFER_MIXES, transfer_mix
from infsim.hw.hbm import HbmModel, hbm_preset_names
from infsim.hw.hbm import closed_form as cf
from infsim.hw.hbm.patterns import independent_mix
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.lower.tags import OP_CLASS_NAMES
from infsim.models.spec import load_model
from infsim.sim import simulate

ROOT = Path(__file__).resolve().parents[1]
CHIPS = ("inf2", "trn1", "trn2", "trn3", "nextgen-hbm3e", "nextgen-decode")


def decode_transfers(chip_name: str, batch: int) -> list[dict]:
    chip = load_chip(chip_name)
    spec = dataclasses.replace(load_model("llama-2-7b"), layers=2)
    low = lower(spec, Workload.make("decode", batch, 2048, tp=2), chip)
    p = low.program
    costs = compute_costs(p, chip)
    mem = make_memory(chip)
    acc = mem.access(p, costs)
    rows = hbm_rows(p)
    groups: dict[tuple, list[float]] = collections.defaultdict(lambda: [0, 0, 0.0])
    for side, row, stride, nbytes, eff in (("read", rows.read_row, rows.read_stride, costs.hbm_read, acc.read_eff),
                                           ("write", rows.write_row, rows.write_stride, costs.hbm_write,
                                            acc.write_eff)):
        for i in np.flatnonzero(row > 0).tolist():
            g = groups[(OP_CLASS_NAMES[low.op_class[i]], side, int(row[i]), int(stride[i]))]
            g[0] += 1
            g[1] += int(nbytes[i])
            g[2] = float(eff[i])
    out = [{"op_class": k[0], "direction": k[1], "row_bytes": k[2], "stride_bytes": k[3], "transfers": v[0],
            "bytes": v[1], "efficiency": round(v[2], 4)} for k, v in groups.items()]
    return sorted(out, key=lambda r: -r["bytes"])


def mix_table() -> list[dict]:
    out = []
    for preset in hbm_preset_names():
        m = HbmModel(preset, overrides={"organization.channels": 1})
        for f in (0.1, 0.25, 0.5, 0.75):
            effs = [m.simulate(*independent_mix(m.amap, 4096, f, seed)).stats.efficiency for seed in range(16)]
            out.append({"preset": preset, "write_fraction": f, "command_level": round(float(np.mean(effs)), 4),
                        "closed_form": round(cf.mixed_stream_efficiency(m.cfg, f), 4)})
    return out


def replay_case(chip_over: dict, kind: str, queues: int, reps: int, cores: int,
                read_queue: int | None = None) -> dict:
    over = dict(chip_over)
    chip = load_chip("inf2", over)
    p = transfer_mix(kind, queues, reps, cores)
    t0 = time.perf_counter()
    res = simulate(p, chip, trace=True)
    costs = compute_costs(p, chip)
    ref = replay(p, chip, costs, res.timeline.start_ps,
                 overrides=None if read_queue is None else {"controller.read_queue": read_queue})
    mem = make_memory(chip)
    done = res.timeline.end_ps - int(chip.dma.fixed_latency_ns * 1000) - mem.latency_ps
    t = res.timeline.start_ps.min()
    nbytes = int(costs.hbm_read.sum() + costs.hbm_write.sum())
    e, r = float(done.max() - t), float(ref.max() - t)
    return {"kind": kind, "queues": queues, "cores": cores, "dma": over or "preset", "replay_read_queue":
            read_queue or "preset", "bytes": nbytes, "engine_us": round(e / 1e6, 3), "replay_us": round(r / 1e6, 3),
            "engine_over_replay": round(e / r, 3), "engine_gbps": round(nbytes / e * 1e3, 1),
            "wall_s": round(time.perf_counter() - t0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hbm_patterns.json"))
    args = ap.parse_args()
    out: dict = {"machine": platform.machine(), "python": platform.python_version()}
    out["llama2_7b_decode_transfers"] = {}
    for chip in CHIPS[:1] if args.quick else CHIPS:
        for b in (1, 8):
            rows = decode_transfers(chip, b)
            out["llama2_7b_decode_transfers"][f"{chip}-b{b}"] = rows
            print(f"== {chip} Llama-2-7B decode bs {b}, ctx 2048, tp 2 (2 layers)")
            for r in rows:
                print(f"  {r['op_class']:14s} {r['direction']:5s} row {r['row_bytes']:6d} B "
                      f"stride {r['stride_bytes']:6d} B  x{r['transfers']:5d} {r['bytes'] / 1e6:9.3f} MB  "
                      f"efficiency {r['efficiency']:.4f}")
    out["read_write_mix"] = mix_table()
    print("== read/write mix: command level (one channel, mean of 16 placements) vs closed form")
    for r in out["read_write_mix"]:
        print(f"  {r['preset']:14s} f={r['write_fraction']:<5} {r['command_level']:.3f} {r['closed_form']:.3f}")
    fast = {"dma.engine_gbps": 250.0, "dma.descriptor_overhead_ns": 0.0}
    cases = [(fast, k, 4, 8, 1, None) for k in TRANSFER_MIXES]
    cases += [({}, "stream", q, 4, c, None) for q, c in ((8, 1), (16, 1), (16, 2))]
    if not args.quick:
        cases += [({}, "stream", 16, 4, 2, rq) for rq in (64, 128, 256)]
    out["replay"] = []
    print("== engine vs command-level replay (time the last transfer's HBM side is done)")
    for over, kind, q, reps, cores, rq in cases:
        r = replay_case(over, kind, q, reps, cores, rq)
        out["replay"].append(r)
        print(f"  {kind:8s} {q:2d} queues x {cores} cores, dma {'fast' if over else 'preset':6s} replay read queue "
              f"{r['replay_read_queue']!s:6s}: engine {r['engine_us']:8.2f} us replay {r['replay_us']:8.2f} us "
              f"ratio {r['engine_over_replay']:.3f} ({r['engine_gbps']} GB/s)")
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
