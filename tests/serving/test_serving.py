"""The serving stack (infsim.serving) and logical NeuronCores (infsim.mapping) as ``infsim run`` and
``infsim compare`` use them: buckets, host/runtime time, ``device_ms + runtime_ms = latency_ms``, TP counted in
logical cores, the collectives reported with their algorithm."""

from __future__ import annotations

import json

import pytest

from infsim.cli import main
from infsim.config import load_chip
from infsim.errors import ConfigError, InfsimError
from infsim.mapping import chips_for, physical_workload
from infsim.models.graph import Workload
from infsim.models.spec import load_model
from infsim.runner import run
from infsim.serving import BucketConfig, buckets, load_serving, select, serving_names


def test_bucket_rules() -> None:
    tnx = load_serving("tnx")
    assert tnx.tkg_buckets(4096) == [128, 256, 512, 1024, 2048, 4096]
    assert tnx.tkg_buckets(3072) == [128, 256, 512, 1024, 2048, 3072]  # the last bucket is n_positions
    assert tnx.cte_buckets(4096) == [64, 128, 256, 512, 1024, 2048]  # half of each token bucket
    assert select([128, 256], 128, "ge") == 128 and select([128, 256], 128, "gt") == 256
    assert select([128, 256], 999, "gt") == 256  # longer than every bucket: the largest
    assert buckets(BucketConfig(kind="list", values=(100, 300, 9999)), 1000) == [100, 300, 1000]
    assert buckets(BucketConfig(kind="none"), 777) == [777]
    with pytest.raises(InfsimError, match="half_of_tkg"):
        buckets(BucketConfig(kind="half_of_tkg"), 100)


def test_device_workload_pads_to_buckets() -> None:
    tnx = load_serving("tnx")
    d = tnx.device_workload(Workload.make("decode", 1, 2112), 4096)
    assert d.context == 4095  # KV length 2113 runs over the 4096 bucket
    assert tnx.device_workload(Workload.make("decode", 1, 127), 4096).context == 127  # exactly the 128 bucket
    assert tnx.device_workload(Workload.make("prefill", 1, 1000), 4096).seq == 1024
    assert tnx.device_workload(Workload.make("prefill", 1, 5000), 4096).seq == 5000  # beyond the largest: unpadded
    none = load_serving(None)
    wl = Workload.make("decode", 1, 2112)
    assert none.name == "none" and none.device_workload(wl, 4096) is wl


def test_runtime_time() -> None:
    spec = load_model("llama-2-7b")
    tnx = load_serving("tnx")
    c = tnx.cfg
    logits = spec.vocab * 4 / c.host_link_gbps
    assert tnx.runtime_ns(Workload.make("decode", 1, 100), spec) == pytest.approx(c.host_step_overhead_us * 1e3
                                                                                 + logits)
    assert tnx.runtime_ns(Workload.make("decode", 4, 100), spec) == pytest.approx(c.host_step_overhead_us * 1e3
                                                                                 + 4 * logits)
    assert load_serving("none").runtime_ns(Workload.make("decode", 1, 100), spec) == 0
    bert = load_model("bert-base-uncased")
    tn = load_serving("torch-neuronx")
    assert tn.runtime_ns(Workload.make("prefill", 8, 128), bert) == pytest.approx(tn.cfg.host_step_overhead_us * 1e3)
    assert set(serving_names()) >= {"none", "tnx", "nxdi", "torch-neuronx"}
    with pytest.raises(ConfigError, match="unknown serving stack"):
        load_serving("tnxx")


def test_run_reports_device_and_runtime_separately() -> None:
    kw = {"phase": "decode", "batch": 1, "context": 300, "tp": 2, "fidelity": "analytical"}
    bare = run("inf2", "llama-2-7b", **kw)
    assert bare.serving == "none" and bare.runtime_ms == 0 and bare.latency_ms == bare.device_ms
    served = run("inf2", "llama-2-7b", serving="tnx", max_seq=1024, **kw)
    assert served.latency_ms == pytest.approx(served.device_ms + served.runtime_ms)
    assert served.device_context == 511 and served.context == 300  # attention over the 512 bucket
    assert served.device_ms > bare.device_ms and served.runtime_ms > 0.4
    assert served.tokens_per_s == pytest.approx(1e3 / served.latency_ms)
    assert served.energy_breakdown_j["static_runtime"] > 0
    d = served.to_dict()
    assert {"device_ms", "runtime_ms", "latency_ms", "collectives", "serving"} <= set(d)
    (ar,) = d["collectives"]
    assert ar["op"] == "all_reduce" and ar["algorithm"] == "mesh" and ar["count"] == 64 and ar["bytes"] == 8192


def test_logical_cores_map_onto_physical_cores() -> None:
    trn2 = load_chip("trn2")
    assert trn2.lnc == 2 and trn2.logical_cores_per_chip == 4
    assert chips_for(64, trn2) == 16 and physical_workload(Workload.make("decode", 1, 10, tp=64), trn2).tp == 128
    with pytest.raises(InfsimError, match="LNC=2: 256 physical cores"):
        physical_workload(Workload.make("decode", 1, 10, tp=128), trn2)
    r = run(trn2, "llama-2-7b", phase="decode", batch=1, context=256, tp=64, fidelity="analytical")
    assert (r.tp, r.lnc, r.physical_cores, r.chips) == (64, 2, 128, 16)
    (ar,) = r.collectives
    assert ar["ranks"] == 128 and ar["logical_ranks"] == 64 and ar["algorithm"] == "mesh"
    one = run(load_chip("trn2", ["lnc=1"]), "llama-2-7b", phase="decode", batch=1, context=256, tp=64,
              fidelity="analytical")
    assert (one.physical_cores, one.chips) == (64, 8)


def test_lnc_in_the_cycle_engine() -> None:
    """A 2-layer model at TP 2 on trn2: 4 physical cores, the all-reduces grouped as 2 logical ranks; the
    engine and the step fidelity report the same collectives."""
    import dataclasses

    spec = dataclasses.replace(load_model("llama-2-7b"), layers=2)
    kw = {"phase": "decode", "batch": 1, "context": 128, "tp": 2}
    cyc = run("trn2", spec, fidelity="cycle", **kw)
    ana = run("trn2", spec, fidelity="analytical", **kw)
    assert cyc.physical_cores == 4 and cyc.chips == 1
    assert cyc.collectives == ana.collectives
    assert cyc.collectives[0]["logical_ranks"] == 2
    assert cyc.latency_ms == pytest.approx(ana.latency_ms, rel=0.15)


def test_cli_run_serving_and_compare_states_its_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--chip", "inf2", "--model", "gpt2", "--phase", "decode", "--context", "100", "--tp", "2",
                 "--fidelity", "analytical", "--serving", "tnx", "--max-seq", "512", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["serving"] == "tnx" and d["device_context"] == 127 and d["runtime_ms"] > 0
    assert main(["run", "--chip", "inf2", "--model", "gpt2", "--phase", "decode", "--context", "100",
                 "--fidelity", "analytical", "--serving", "nope"]) == 1
    assert "unknown serving stack 'nope'" in capsys.readouterr().err
    from infsim.models.graph import Workload as W
    from infsim.studies.compare import compare

    wls = [W.make("decode", 1, 256)]
    bare = compare("inf2", "nextgen-hbm3e", "gpt2", workloads=wls, chips=1, attribution=False)
    assert bare.serving == "none" and any("device time only" in n for n in bare.notes)
    served = compare("inf2", "nextgen-hbm3e", "gpt2", workloads=wls, chips=1, attribution=False, serving="tnx")
    assert served.serving == "tnx" and any("serving stack: tnx" in n for n in served.notes)
    assert served.rows[0].speedup < bare.rows[0].speedup  # the same host time on both sides dilutes the ratio
    assert bare.target_tp == load_chip("nextgen-hbm3e").logical_cores_per_chip
