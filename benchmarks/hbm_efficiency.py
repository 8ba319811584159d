"""HBM efficiency table and model speed.

Writes ``benchmarks/results/hbm_efficiency.json`` with:

* ``table``: every HBM preset x pattern (stream read, stream write, random, mixed, bank-stride), one stack,
  simulated command by command: ``efficiency`` (of pin bandwidth), ``achieved_gbps``, ``row_hit_rate``,
  ``avg_latency_ns``, ``p99_latency_ns``, ``pj_per_bit``; for stream also the steady-state efficiency of a
  13.5 GB transfer (refresh amortised over whole postponement periods);
* ``closed_form``: the closed-form predictions of ``infsim/hw/hbm/model.py`` next to the simulated values
  (streaming steady state, random ACT ceiling, bank-stride tRC bound);
* ``speed``: commands simulated per second by the numba model and by the plain-Python reference on the
  same trace, and the wall time of a 13.5 GB bulk-transfer estimate.

Run: ``python benchmarks/hbm_efficiency.py [--quick]`` (about a minute on two cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from infsim.hw.hbm import HbmModel, hbm_preset_names

OUT = Path(__file__).parent / "results" / "hbm_efficiency.json"
PATTERNS = [("stream", False), ("stream", True), ("random", False), ("mixed", False), ("bank-stride", False)]


def closed_forms(m: HbmModel) -> dict[str, float]:
    t, o, P = m.cfg.timing, m.cfg.organization, m.cfg.controller.refresh_postpone_max
    tbl = o.burst_cycles
    lost_rd = P * t.tRFC + t.tRTP + t.tRP + t.tRCDRD - tbl
    lost_wr = P * t.tRFC + (t.tCWL + tbl + t.tWR) + t.tRP + t.tRCDWR - tbl
    t_act = max(t.tRRD_S, t.tFAW / 4, t.tRC / o.banks)
    t_bank = max(t.tRC, t.tRAS + t.tRP, t.tRCDRD + t.tRTP + t.tRP)
    return {
        "refresh_only_ceiling": 1 - t.tRFC / t.tREFI,
        "stream_read": 1 - lost_rd / (P * t.tREFI),
        "stream_write": 1 - lost_wr / (P * t.tREFI),
        "random_act_ceiling": min(1.0, tbl / t_act),
        "bank_stride": tbl / t_bank,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller transfers")
    args = ap.parse_args()
    size = (4 << 20) if args.quick else (16 << 20)
    table: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for name in hbm_preset_names():
        m = HbmModel(name)
        cf = closed_forms(m)
        sim: dict[str, float] = {}
        for pattern, write in PATTERNS:
            nbytes = size // 4 if pattern == "bank-stride" else size
            s = m.run_pattern(pattern, nbytes, is_write=write).stats
            key = f"{pattern}{'-write' if write else ''}"
            row = {"preset": name, "pattern": key, "bytes": s.bytes, "efficiency": round(s.efficiency, 4),
                   "achieved_gbps": round(s.achieved_gbps, 2), "peak_gbps": round(s.peak_gbps, 2),
                   "row_hit_rate": round(s.row_hit_rate, 4), "avg_latency_ns": round(s.avg_latency_ns, 1),
                   "p99_latency_ns": round(s.p99_latency_ns, 1), "pj_per_bit": round(s.pj_per_bit, 3),
                   "commands_per_s": round(s.commands_per_s)}
            if pattern == "stream":
                row["steady_state_efficiency_13_5GB"] = round(m.stream_gbps(int(13.5e9), write) / m.peak_gbps, 4)
                sim[key] = row["steady_state_efficiency_13_5GB"]
            else:
                sim[key] = s.efficiency
            table.append(row)
            print(json.dumps(row))
        checks.append({
            "preset": name,
            "stream_read": {"closed_form": round(cf["stream_read"], 4), "simulated": sim["stream"]},
            "stream_write": {"closed_form": round(cf["stream_write"], 4), "simulated": sim["stream-write"]},
            "refresh_only_ceiling": round(cf["refresh_only_ceiling"], 4),
            "random": {"act_ceiling": round(cf["random_act_ceiling"], 4), "simulated": round(sim["random"], 4)},
            "bank_stride": {"tbl_over_tbank": round(cf["bank_stride"], 4), "simulated": round(sim["bank-stride"], 4)},
            "stream_read_at_least_90pct": sim["stream"] >= 0.9,
        })
    # speed: same trace through fast and reference controllers
    m = HbmModel("hbm2-2.0", overrides={"organization.channels": 1})
    n_ref = 20_000 if not args.quick else 5_000
    speed: dict[str, Any] = {}
    for pattern in ("stream", "random"):
        from infsim.hw.hbm.patterns import generate

        arr, addr, wr = generate(m.amap, pattern, n_ref)
        t0 = time.perf_counter()
        r = m.simulate(arr, addr, wr, engine="ref")
        t_ref = time.perf_counter() - t0
        m.simulate(arr[:10], addr[:10], wr[:10])  # compiled already; keep timing fair
        t0 = time.perf_counter()
        f = m.simulate(arr, addr, wr, engine="fast")
        t_fast = time.perf_counter() - t0
        ncmd = sum(f.stats.commands.values())
        assert f.stats.commands == r.stats.commands
        big = m.run_pattern(pattern, 64 << 20 if pattern == "stream" else 8 << 20).stats
        speed[pattern] = {"requests": n_ref, "commands": ncmd, "ref_commands_per_s": round(ncmd / t_ref),
                          "fast_commands_per_s": round(ncmd / t_fast), "speedup": round(t_ref / t_fast, 1),
                          "fast_commands_per_s_large": round(big.commands_per_s), "large_requests": big.requests}
    m2 = HbmModel("hbm2e-3.2", stacks=2)
    t0 = time.perf_counter()
    ns = m2.stream_time_ns(int(13.5e9))
    speed["bulk_13_5GB_hbm2e_3_2_x2"] = {"wall_s": round(time.perf_counter() - t0, 3), "time_ms": round(ns / 1e6, 3),
                                         "gbps": round(13.5e9 / ns, 1)}
    out = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
           "table": table, "closed_form": checks, "speed": speed}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(speed, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
