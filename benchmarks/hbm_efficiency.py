"""HBM efficiency table and model speed.

Writes ``benchmarks/results/hbm_efficiency.json`` with:

* ``table``: every HBM preset x pattern (stream read, stream write, random, mixed, bank-stride), one stack,
  simulated command by command: ``efficiency`` (of pin bandwidth), ``achieved_gbps``, ``row_hit_rate``,
  ``avg_latency_ns``, ``p99_latency_ns``, ``pj_per_bit``; for stream also the steady-state efficiency of a
  13.5 GB transfer (refresh amortised over whole postponement periods);
* ``closed_form``: the closed-form predictions of ``infsim/hw/hbm/closed_form.py`` next to the simulated
  values (streaming steady state, random ACT ceiling, bank-stride tRC bound, and the 50/50 copy under
  write-drain batching: the form that applies to the preset, ``copy_fronts_separated`` saying which,
  and both bounds);
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
from infsim.hw.hbm import closed_form as cf

OUT = Path(__file__).parent / "results" / "hbm_efficiency.json"
PATTERNS = [("stream", False), ("stream", True), ("random", False), ("mixed", False), ("bank-stride", False)]


def closed_forms(m: HbmModel) -> dict[str, float]:
    c = m.cfg
    return {
        "refresh_only_ceiling": cf.refresh_only_ceiling(c),
        "stream_read": cf.streaming_efficiency(c),
        "stream_write": cf.streaming_efficiency(c, write=True),
        "random_act_ceiling": cf.random_act_ceiling(c),
        "bank_stride": cf.bank_stride_efficiency(c),
        "mixed": cf.mixed_efficiency(c),
        "mixed_row_conflict_every_switch": cf.mixed_efficiency(c, row_conflicts=True),
        "mixed_no_row_conflict": cf.mixed_efficiency(c, row_conflicts=False),
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
        forms = closed_forms(m)
        sep = cf.copy_fronts_separated(m.cfg)
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
            "stream_read": {"closed_form": round(forms["stream_read"], 4), "simulated": sim["stream"]},
            "stream_write": {"closed_form": round(forms["stream_write"], 4), "simulated": sim["stream-write"]},
            "refresh_only_ceiling": round(forms["refresh_only_ceiling"], 4),
            "random": {"act_ceiling": round(forms["random_act_ceiling"], 4), "simulated": round(sim["random"], 4)},
            "bank_stride": {"tbl_over_tbank": round(forms["bank_stride"], 4),
                            "simulated": round(sim["bank-stride"], 4)},
            "mixed": {"copy_fronts_separated": sep, "closed_form": round(forms["mixed"], 4),
                      "closed_form_row_conflict_every_switch": round(forms["mixed_row_conflict_every_switch"], 4),
                      "closed_form_no_row_conflict": round(forms["mixed_no_row_conflict"], 4),
                      "simulated": round(sim["mixed"], 4)},
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
