"""Interfaces: chip diff / schema / show with sources, the generated field reference, provenance in results,
CSV output, search ranges without a random block, what-it-takes --write-chip."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from infsim.cli import main
from infsim.config import load_chip
from infsim.config.sources import chip_fields_markdown, field_sources, unit_of

ROOT = Path(__file__).resolve().parents[2]


def test_chip_fields_doc_is_current() -> None:
    """docs/chip-fields.md is `infsim chip schema --markdown`: regenerate it when the schema changes."""
    assert (ROOT / "docs" / "chip-fields.md").read_text() == chip_fields_markdown()


def test_every_field_has_a_meaning() -> None:
    from infsim.config.sources import field_table

    assert [r["field"] for r in field_table() if not r["meaning"]] == []


def test_units_and_sources() -> None:
    assert unit_of("hbm.bandwidth_gbps") == "GB/s" and unit_of("tensor_engine.macs_per_pe_per_cycle.bf16") == \
        "MACs/PE/cycle" and unit_of("energy.link_pj_per_bit") == "pJ/bit"
    src = field_sources(ROOT / "infsim" / "config" / "presets" / "inf2.yaml")
    assert "[NKI-ARCH2]" in src["hbm.bandwidth_gbps"] and "assumed" in src["energy.static_w_per_core"]


def test_chip_diff(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chip", "diff", "inf2", "nextgen-hbm3e", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = {r["field"]: r for r in d["fields"]}
    assert rows["cores_per_chip"]["a"] == 2 and rows["cores_per_chip"]["b"] == 4
    assert rows["hbm.bandwidth_gbps"]["unit"] == "GB/s" and rows["hbm.bandwidth_gbps"]["source_a"]
    assert "tensor_engine.rows" not in rows  # same value
    assert main(["chip", "diff", "inf2", "trn1"]) == 0
    assert "field" in capsys.readouterr().out


def test_chip_schema_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chip", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "hbm" in schema["properties"] and "$defs" in schema
    assert main(["chip", "show", "inf2"]) == 0
    out = capsys.readouterr().out
    assert "presets/inf2.yaml" in out and "[NKI-ARCH2]" in out


def test_run_json_has_provenance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "gpt2", "--context", "64", "--fidelity", "analytical", "--json"]) == 0
    prov = json.loads(capsys.readouterr().out)["provenance"]
    assert prov["infsim_version"] and prov["chips"]["inf2"]["hbm"]["bandwidth_gbps"] > 0
    assert "git_commit" in prov  # the tests run from a git checkout


def test_sweep_csv_and_parquet_provenance(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"base": "inf2", "axes": {"hbm.bandwidth_gbps": [400, 800]},
                                "workloads": [{"model": "gpt2", "context": 64}]}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "1", "--csv",
                 str(tmp_path / "o.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "o.csv")) == 2
    prov = pd.read_parquet(tmp_path / "o" / "results.parquet").attrs["infsim_provenance"]
    assert prov["spec"]["base"] == "inf2" and "inf2" in prov["chips"]


def test_search_takes_ranges_without_random_and_plots(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"base": "inf2", "axes": {"hbm.bandwidth_gbps": {"min": 400, "max": 1600}},
                                "workloads": [{"model": "gpt2", "context": 64}]}))
    assert main(["search", str(spec), "--trials", "3", "--out", str(tmp_path / "o"), "--plot"]) == 0
    assert (tmp_path / "o" / "search.png").stat().st_size > 10_000
    assert len(pd.read_csv(tmp_path / "o" / "trials.csv")) == 3


def test_compare_csv(tmp_path: Path) -> None:
    cfg = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 4096}
    model = tmp_path / "tiny.json"
    model.write_text(json.dumps(cfg))
    assert main(["compare", "--target", "trn1", "--model", str(model), "--no-attribution", "--csv",
                 str(tmp_path / "c.csv")]) == 0
    df = pd.read_csv(tmp_path / "c.csv")
    assert len(df) == 10 and {"speedup", "baseline_limit", "target_limit"} <= set(df.columns)


def test_what_it_takes_writes_a_runnable_chip(tmp_path: Path) -> None:
    out = tmp_path / "scaled.yaml"
    assert main(["what-it-takes", "--speedup", "1.2", "--levels", "1,2", "--phase", "prefill",
                 "--write-chip", str(out)]) == 0
    chip = load_chip(out)
    assert chip.name.startswith("inf2+")
    assert main(["run", "--chip", str(out), "--model", "gpt2", "--context", "64", "--fidelity", "analytical"]) == 0
