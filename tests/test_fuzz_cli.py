"""Fuzzing the command line (issue 16, "how to make it stay fixed"): random chip overrides within and outside
their bounds, random model configs, random sweep specs and options, each run as a child process with a time
limit and a memory cap (:mod:`cli_harness`). The only acceptable outcomes are exit 0 with a result that
passes its invariants, or exit 1 with one ``infsim: error:`` line (2 for argparse usage) and no traceback.

Invariants of a result: every number finite and not negative; a step's latency at least its roofline
(FLOPs / peak tensor-engine FLOPs of the cores it uses, graph-minimum HBM bytes / HBM bandwidth of its chips)
and its HBM traffic at least the graph minimum; a program's time at least its own roofline and its HBM
reads and writes at least its input and output tensors; a sweep's rows exactly its (design point, workload)
pairs, each once, ``status`` ok or error with a one-line message, ok rows passing the step invariants, and a
second run (resume) computing nothing and changing nothing.

Size: the ``ci`` hypothesis profile runs a bounded number of examples (about a minute of CPU in all; the
counts are :data:`EXAMPLES`). A longer run, with fresh random examples each time::

    INFSIM_FUZZ_SCALE=50 HYPOTHESIS_PROFILE=dev pytest -n 2 -p no:cacheprovider tests/test_fuzz_cli.py

(``INFSIM_FUZZ_SCALE`` multiplies every count; ``HYPOTHESIS_PROFILE=ci`` keeps the examples derandomized.)
A failure prints the command that failed, its stderr and hypothesis' shrunk example.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness import Outcome, run_cli
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from infsim.config import CHIP_PATHS, load_chip, preset_names
from infsim.errors import InfsimError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness forks and reads /proc")

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "models" / "zoo"
SCALE = float(os.environ.get("INFSIM_FUZZ_SCALE", "1"))
#: examples per test at INFSIM_FUZZ_SCALE=1 (the CI count)
EXAMPLES = {"chip": 24, "model": 30, "sweep": 6, "options": 16}
#: per command: wall-clock limit (generous: CI machines are shared) and resident-memory cap
TIMEOUT_S = 180.0
RSS_CAP_BYTES = 3 << 30


#: ``INFSIM_FUZZ_SHRINK=0`` reports a failing example as found (shrinking re-runs commands: minutes)
SHRINK = os.environ.get("INFSIM_FUZZ_SHRINK", "1") != "0"


def fuzz_settings(name: str) -> settings:
    phases = tuple(Phase) if SHRINK else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(max_examples=max(1, round(EXAMPLES[name] * SCALE)), deadline=None, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def run_ok(argv: list[Any], **kw: Any) -> Outcome:
    """Run the command; fail the test unless the outcome is acceptable (see the module)."""
    o = run_cli(argv, timeout_s=TIMEOUT_S, rss_cap_bytes=RSS_CAP_BYTES, **kw)
    problem = o.problem()
    assert not problem, f"{problem}\n{o.describe()}"
    return o


# ---- what the commands run on --------------------------------------------------------------------------
#: small configs of every zoo architecture (the zoo file with its sizes cut), so that a cycle-fidelity step
#: takes about a second
TINY_SIZES = {
    "llama-2-7b": {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 2,
                   "num_hidden_layers": 1, "vocab_size": 512, "max_position_embeddings": 1024},
    "mistral-7b": {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
                   "num_hidden_layers": 1, "vocab_size": 512, "max_position_embeddings": 1024,
                   "sliding_window": 64},
    "mixtral-8x7b": {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 512,
                     "max_position_embeddings": 1024, "num_local_experts": 4, "num_experts_per_tok": 2},
    "gpt2": {"n_embd": 128, "n_head": 2, "n_layer": 1, "vocab_size": 512, "n_positions": 1024},
    "bert-base-uncased": {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
                          "num_hidden_layers": 1, "vocab_size": 512, "max_position_embeddings": 512},
    "vit-b-16": {"hidden_size": 256, "intermediate_size": 256, "num_attention_heads": 2, "num_hidden_layers": 1,
                 "image_size": 32, "patch_size": 8, "num_labels": 10},
}
#: the sizes a mutation may set on a cycle-fidelity run (larger ones go to the analytical fidelity only)
SMALL_INT = st.integers(1, 512)
HOSTILE_INTS = st.sampled_from([0, -1, -5, 2**31, 2**63, 10**30, 10**400])
HOSTILE_VALUES = st.one_of(
    HOSTILE_INTS, st.sampled_from([float("nan"), float("inf"), -0.0, 1e-300, 1e300, 0.5, True, False, None, "big",
                                   "", "silu", [], ["silu"], {}, {"a": 1}, [1, 2], "9" * 5000]),
    st.text(max_size=20), st.floats(), st.integers())

# the example programs and their rooflines' inputs: (matmul FLOPs, bytes read at least, bytes written at least)
PROGRAMS = {"gemm_tiled.s": (2 * 256 * 256 * 512, 2 * (256 * 256 + 256 * 512), 2 * 256 * 512),
            "rmsnorm.s": (0, 2 * (128 * 1024 + 1024), 2 * 128 * 1024),
            "softmax.s": (0, 2 * 128 * 512, 2 * 128 * 512)}


def tiny_config(name: str) -> dict[str, Any]:
    cfg = json.loads((ZOO / f"{name}.json").read_text())
    cfg.update(TINY_SIZES[name])
    return cfg


@pytest.fixture(scope="module", autouse=True)
def warm_parent() -> None:
    """Import every command and compile numba's functions once in this process: each forked child starts
    with them (else every example pays the imports and compilation, seconds each)."""
    import infsim
    from infsim.cli import build_parser
    from infsim.sim import simulate

    build_parser()
    from infsim.isa.asm import parse_file

    chip = load_chip("inf2")
    for prog in PROGRAMS:
        simulate(parse_file(ROOT / "examples" / "asm" / prog), chip)
        simulate(parse_file(ROOT / "examples" / "asm" / prog), chip, memory="simple")
    infsim.run("inf2", "gpt2", batch=1, context=16, fidelity="analytical")
    import infsim.studies.sweep  # noqa: F401  (pandas, pyarrow)


# ---- invariants ----------------------------------------------------------------------------------------
def all_finite(d: Any, where: str = "") -> None:
    if isinstance(d, dict):
        for k, v in d.items():
            all_finite(v, f"{where}.{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            all_finite(v, f"{where}[{i}]")
    elif isinstance(d, int | float) and not isinstance(d, bool):
        assert math.isfinite(d) and d >= 0, f"{where} = {d}"


def peak_flops_per_core(chip: Any) -> float:
    """The tensor engine's fastest rate over every dtype (a bound for a step mixing dtypes)."""
    te = chip.tensor_engine
    return 2 * te.rows * te.cols * max(te.macs_per_pe_per_cycle.values()) * te.clock_ghz * 1e9


def check_step(d: dict[str, Any], chip: Any, min_hbm_bytes: int, what: str) -> None:
    """A step's result (``run --json`` or a sweep row): latency >= roofline, bytes >= graph minimum."""
    all_finite({k: d[k] for k in ("latency_ms", "tokens_per_s", "flops", "hbm_bytes", "energy_j", "power_w")}, what)
    chips = math.ceil(d["tp"] / chip.cores_per_chip)
    bound_s = max(d["flops"] / (peak_flops_per_core(chip) * d["tp"]),
                  min_hbm_bytes / (chips * chip.hbm.bandwidth_gbps * 1e9))
    assert d["latency_ms"] > 0 and d["latency_ms"] * 1e-3 >= bound_s * (1 - 1e-9), (what, d["latency_ms"], bound_s)
    assert d["hbm_bytes"] >= min_hbm_bytes, (what, d["hbm_bytes"], min_hbm_bytes)


def check_run_output(o: Outcome, chip: Any) -> None:
    d = json.loads(o.out)
    all_finite(d["utilization"], "utilization")
    check_step(d, chip, d["min_hbm_bytes"], o.describe())


def check_sim_output(o: Outcome, chip: Any, program: str) -> None:
    d = json.loads(o.out)
    all_finite(d, "sim")
    flops, read, written = PROGRAMS[program]
    bound_ns = max(flops / (peak_flops_per_core(chip)) * 1e9, (read + written) / chip.hbm.bandwidth_gbps)
    assert d["total_ns"] >= bound_ns * (1 - 1e-9), (o.describe(), bound_ns)
    assert d["hbm_bytes_read"] >= read and d["hbm_bytes_written"] >= written, o.describe()


# ---- chip overrides ------------------------------------------------------------------------------------
NUMERIC = [(p, v) for p in CHIP_PATHS.leaves()
           if isinstance(v := CHIP_PATHS.get(load_chip("inf2").model_dump(), p, None), int | float)
           and not isinstance(v, bool)]


@st.composite
def overrides(draw: st.DrawFn) -> list[str]:
    """1-3 ``FIELD=VALUE`` texts: a numeric field scaled within its range, or set to a hostile value, or a
    field that does not exist."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        path, v = draw(st.sampled_from(NUMERIC))
        how = draw(st.sampled_from(["scale", "scale", "hostile", "text", "typo"]))
        if how == "scale":
            f = draw(st.floats(0.125, 8.0))
            value: Any = max(1, round(v * f)) if isinstance(v, int) else v * f
        elif how == "hostile":
            value = draw(HOSTILE_VALUES)
        elif how == "text":
            value = draw(st.sampled_from([".inf", "-.inf", ".nan", "1e400", "-1e400", "1e-400", "9" * 5000, "0x10",
                                          "[1, 2]", "{a: 1}", "!!python/object:os.system", "~", "'1'", "&a 1"]))
        else:
            path = draw(st.sampled_from([path + "x", path.rsplit(".", 1)[0] + ".nope", "nope", path + ".x", ""]))
            value = v
        text = value if isinstance(value, str) else json.dumps(value)
        out.append(f"{path}={text}")
    return out


def parent_chip(preset: str, sets: list[str]) -> Any:
    """The chip the child saw, loaded here (the child exited 0, so this must load too)."""
    return load_chip(preset, sets)


@fuzz_settings("chip")
@given(sets=overrides(), preset=st.sampled_from(preset_names()), data=st.data())
def test_chip_overrides(tmp_path_factory: pytest.TempPathFactory, sets: list[str], preset: str,
                        data: st.DataObject) -> None:
    command = data.draw(st.sampled_from(["sim", "sim", "run", "gemm"]))
    flags = [a for s in sets for a in ("--set", s)] + ["--chip", preset]
    if command == "sim":
        program = data.draw(st.sampled_from(sorted(PROGRAMS)))
        extra = data.draw(st.sampled_from([[], ["--fidelity", "analytical"], ["--memory", "simple"]]))
        o = run_ok(["sim", ROOT / "examples" / "asm" / program, "--json", *flags, *extra])
        if o.rc == 0:
            check_sim_output(o, parent_chip(preset, sets), program)
    elif command == "run":
        d = tmp_path_factory.mktemp("chip")
        model = d / "m.json"
        model.write_text(json.dumps(tiny_config(data.draw(st.sampled_from(sorted(TINY_SIZES))))))
        fid = data.draw(st.sampled_from(["analytical", "cycle"]))
        phase = data.draw(st.sampled_from(["prefill", "decode"]))
        o = run_ok(["run", "--model", model, "--json", "--fidelity", fid, "--phase", phase, "--context",
                    data.draw(st.integers(1, 128)), "--batch", data.draw(st.integers(1, 4)), *flags])
        if o.rc == 0:
            check_run_output(o, parent_chip(preset, sets))
    else:
        m, n, k = (data.draw(st.integers(1, 4096)) for _ in range(3))
        o = run_ok(["gemm", m, n, k, "--json", *flags])
        if o.rc == 0:
            d = json.loads(o.out)
            all_finite(d, "gemm")
            assert 0 < d["utilization"] <= 1 + 1e-9, o.describe()


# ---- model configs -------------------------------------------------------------------------------------
SIZE_FIELDS = {"hidden_size", "n_embd", "intermediate_size", "n_inner", "num_attention_heads", "n_head",
               "num_key_value_heads", "num_hidden_layers", "n_layer", "vocab_size", "max_position_embeddings",
               "n_positions", "head_dim", "num_local_experts", "num_experts_per_tok", "sliding_window",
               "image_size", "patch_size", "num_labels", "num_channels"}
OTHER_FIELDS = ["model_type", "hidden_act", "activation_function", "rms_norm_eps", "layer_norm_epsilon",
                "layer_norm_eps", "tie_word_embeddings", "attention_bias", "rope_theta", "architectures",
                "torch_dtype", "unknown_field"]


@st.composite
def model_files(draw: st.DrawFn, small: bool) -> tuple[bytes, bool]:
    """(file content, still small): a tiny zoo config with fields changed or removed, or not a config at all.
    ``small``: size fields only get small values (a cycle-fidelity step stays quick)."""
    kind = draw(st.sampled_from(["mutate"] * 8 + ["bytes", "json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)), True
    if kind == "json":
        return json.dumps(draw(st.one_of(st.lists(st.integers()), st.integers(), st.text(), st.none()))).encode(), True
    cfg = tiny_config(draw(st.sampled_from(sorted(TINY_SIZES))))
    stays_small = True
    for _ in range(draw(st.integers(0, 4))):
        field = draw(st.sampled_from(sorted(SIZE_FIELDS | set(cfg)) + OTHER_FIELDS))
        action = draw(st.sampled_from(["set", "set", "set", "delete"]))
        if action == "delete":
            cfg.pop(field, None)
        elif field in SIZE_FIELDS and small:
            cfg[field] = draw(st.one_of(SMALL_INT, HOSTILE_INTS.filter(lambda v: v <= 0)))
        else:
            cfg[field] = draw(st.one_of(HOSTILE_VALUES, SMALL_INT, st.integers(1, 2**20)))
            stays_small = stays_small and not (field in SIZE_FIELDS and isinstance(cfg[field], int)
                                               and cfg[field] > 512)
    return json.dumps(cfg).encode(), stays_small  # NaN and Infinity as JSON's extension writes them


@fuzz_settings("model")
@given(data=st.data())
def test_model_configs(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    fid = data.draw(st.sampled_from(["analytical", "analytical", "cycle"]))
    content, _ = data.draw(model_files(small=fid == "cycle"))
    path = tmp_path_factory.mktemp("model") / "config.json"
    path.write_bytes(content)
    phase = data.draw(st.sampled_from(["prefill", "decode"]))
    small = fid == "cycle"
    argv = ["run", "--model", path, "--json", "--fidelity", fid, "--phase", phase,
            "--batch", data.draw(st.integers(1, 4) if small else st.one_of(st.integers(1, 64), HOSTILE_INTS)),
            "--context", data.draw(st.integers(1, 256) if small else st.one_of(st.integers(1, 4096), HOSTILE_INTS)),
            "--tp", data.draw(st.sampled_from([1, 2]) if small else st.one_of(st.integers(1, 8), HOSTILE_INTS)),
            "--dtype", data.draw(st.sampled_from(["bf16", "fp8_e4m3", "int8", "int32", "fp32", "bogus"])),
            "--kv-dtype", data.draw(st.sampled_from(["bf16", "bf16", "fp8_e4m3", "uint8", "x"]))]
    o = run_ok(argv)
    if o.rc == 0:
        check_run_output(o, load_chip("inf2"))


# ---- other commands' options ---------------------------------------------------------------------------
SIZES = st.one_of(st.integers(1, 1 << 20), st.sampled_from(["1K", "64K", "1M", "1e30", "-1", "0", "1G", "nan",
                                                            "99999999999999999999999", "x"]))


@fuzz_settings("options")
@given(data=st.data())
def test_command_options(data: st.DataObject) -> None:
    """gemm and hbm with random sizes and options (bounded: the exact HBM simulation stays under 1 MiB)."""
    if data.draw(st.booleans()):
        dims = [data.draw(st.one_of(st.integers(1, 10**7), HOSTILE_INTS, st.sampled_from(["x", "1.5", "1e3"])))
                for _ in range(3)]
        extra = data.draw(st.sampled_from([[], ["--dataflow", "os", "--compat", "scalesim"], ["--dataflow", "is"],
                                           ["--array", "64x64"], ["--array", "0x4"], ["--dtype", "fp8_e4m3"],
                                           ["--dtype", "int32"]]))
        o = run_ok(["gemm", *dims, "--json", *extra])
        if o.rc == 0:
            d = json.loads(o.out)
            all_finite(d, "gemm")
            assert 0 < d["utilization"] <= 1 + 1e-9, o.describe()
    else:
        from infsim.hw.hbm.config import hbm_preset_names

        argv = ["hbm", "--hbm", data.draw(st.sampled_from([*hbm_preset_names(), "nope"])), "--json",
                "--bytes", data.draw(SIZES), "--exact-limit", data.draw(st.sampled_from(["4K", "64K", "1M", "0"])),
                "--pattern", data.draw(st.sampled_from(["stream", "random", "mixed", "bank-stride"]))]
        if data.draw(st.booleans()):
            argv += ["--stacks", data.draw(st.one_of(st.integers(1, 4), HOSTILE_INTS))]
        if data.draw(st.booleans()):
            argv += ["--channels", data.draw(st.one_of(st.integers(1, 32), HOSTILE_INTS))]
        o = run_ok(argv)
        if o.rc == 0:
            d = json.loads(o.out)
            all_finite({k: v for k, v in d.items() if k != "notes"}, "hbm")
            assert 0 < d["efficiency"] <= 1 + 1e-9, o.describe()


# ---- sweeps --------------------------------------------------------------------------------------------
@st.composite
def sweep_specs(draw: st.DrawFn, model_path: str) -> Any:
    """A small sweep spec: 0-2 axes (values in or out of range), grid or random sampling, 1-2 workloads
    (some invalid); sometimes a spec that is not a mapping or has an unknown key."""
    axes: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 2))):
        path, v = draw(st.sampled_from(NUMERIC))
        vals = []
        for _ in range(draw(st.integers(1, 3))):
            if draw(st.integers(0, 4)):
                f = draw(st.floats(0.25, 4.0))
                vals.append(max(1, round(v * f)) if isinstance(v, int) else v * f)
            else:
                vals.append(draw(st.sampled_from([0, -1, float("inf"), 1e300, "x", None, [1]])))
        axes[path] = vals
    spec: dict[str, Any] = {"base": draw(st.sampled_from(["inf2", "inf2", "trn1", "nope"])),
                            "fidelity": draw(st.sampled_from(["analytical", "analytical", "cycle", "exact"])),
                            "axes": axes}
    if axes and draw(st.integers(0, 3)) == 0:
        spec["random"] = {"samples": draw(st.integers(-1, 4)), "seed": draw(st.integers(0, 2**70))}
        name = next(iter(axes))
        if isinstance(axes[name][0], int | float) and not isinstance(axes[name][0], bool):
            lo = axes[name][0]
            axes[name] = {"min": lo, "max": draw(st.sampled_from([lo, lo * 2, -lo, float("nan")]))}
    wls = []
    for _ in range(draw(st.integers(1, 2))):
        wl: dict[str, Any] = {"model": draw(st.sampled_from([model_path, model_path, "gpt2", "no-such-model"])),
                              "phase": draw(st.sampled_from(["decode", "prefill", "train"])),
                              "batch": draw(st.one_of(st.integers(1, 4), st.sampled_from([0, -3, 10**12]))),
                              "context": draw(st.one_of(st.integers(1, 256), st.sampled_from([0, 10**9]))),
                              "dtype": draw(st.sampled_from(["bf16", "bf16", "fp8_e4m3", "int32"]))}
        if draw(st.booleans()):
            wl["tp"] = draw(st.sampled_from([1, 2, 0, 64]))
        wls.append(wl)
    spec["workloads"] = wls
    shape = draw(st.integers(0, 9))
    if shape == 0:
        spec["extra_key"] = 1
    elif shape == 1:
        return draw(st.sampled_from([[spec], "just text", 42, None]))
    return spec


def expected_pairs(spec_path: Path) -> dict[str, dict[str, Any]]:
    from infsim.studies.sweep import load_spec, tasks

    return {t["key"]: t for t in tasks(load_spec(spec_path))}


def check_sweep_folder(out: Path, spec_path: Path) -> Any:
    """Rows = the spec's pairs, each once; status ok or error with a one-line message; ok rows pass the step
    invariants on the chip of their design point."""
    import pandas as pd

    from infsim.config.loader import validate
    from infsim.models.graph import build_graph
    from infsim.models.spec import load_model

    pairs = expected_pairs(spec_path)
    df = pd.read_parquet(out / "results.parquet")
    assert df["key"].is_unique and set(df["key"]) == set(pairs), (len(df), len(pairs))
    assert set(df["status"]) <= {"ok", "error"}
    for _, row in df.iterrows():
        if row["status"] == "error":
            assert row["error"] and "\n" not in row["error"].strip(), row["error"]
            assert "internal error" not in row["error"] and "died" not in row["error"], row["error"]
            continue
        t = pairs[row["key"]]
        chip = validate(t["chip"], "sweep point")
        minimum = build_graph(load_model(t["model"]), t["workload"]).hbm_bytes()
        check_step({**row.to_dict(), "tp": t["workload"].tp}, chip, minimum, f"sweep row {row['key']}")
    return df


@fuzz_settings("sweep")
@given(data=st.data())
def test_sweeps(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    d = tmp_path_factory.mktemp("sweep")
    model = d / "tiny.json"
    model.write_text(json.dumps(tiny_config(data.draw(st.sampled_from(["llama-2-7b", "gpt2", "mixtral-8x7b"])))))
    spec = data.draw(sweep_specs(str(model)))
    spec_path = d / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    opts: list[Any] = []
    if data.draw(st.booleans()):
        opts += ["--workers", data.draw(st.sampled_from([1, 2, 0, -1, 10000]))]
    if data.draw(st.booleans()):
        opts += ["--batch-size", data.draw(st.sampled_from([1, 2, 5, 0, -1]))]
    if data.draw(st.integers(0, 3)) == 0:
        opts += ["--max-points", data.draw(st.sampled_from([1, 2, 0, -1]))]
    if data.draw(st.integers(0, 3)) == 0:
        opts += ["--plot"]
    argv = ["sweep", spec_path, "--out", d / "out", *opts]
    o = run_ok(argv)
    if o.rc != 0:
        assert not (d / "out" / "results.parquet").exists(), o.describe()
        return
    try:
        expected_pairs(spec_path)
    except InfsimError as e:  # the child accepted a spec the same code refuses here
        raise AssertionError(f"{e}\n{o.describe()}") from None
    first = check_sweep_folder(d / "out", spec_path)
    parts = sorted((d / "out" / "parts").iterdir())
    again = run_ok(argv)  # resume: nothing to compute, nothing changes
    assert again.rc == 0, again.describe()
    assert sorted((d / "out" / "parts").iterdir()) == parts
    assert len(check_sweep_folder(d / "out", spec_path)) == len(first)
