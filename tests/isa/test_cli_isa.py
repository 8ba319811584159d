"""CLI: ``infsim isa list``, ``infsim asm --check`` / ``-o`` and ``infsim disasm``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infsim.cli import main
from infsim.isa import Op
from infsim.isa.asm import parse

GOOD = """\
.program cores=1 cores_per_chip=2
.tensor A bf16[128,128] input
.tensor C fp32[128,128] output
.sem ld, mm, st
.stream c0.dma0
dma_copy dst=sbuf[0:128 +0 (1,128) bf16] src=hbm.A[128@128 +0 (1,128) bf16] signal=ld+1
.stream c0.tensor
matmul dst=psum[0:128 +0 (1,128) fp32] stationary=sbuf[0:128 +0 (1,128) bf16] \
moving=sbuf[0:128 +0 (1,128) bf16] accumulate=false wait=ld>=1 signal=mm+1
.stream c0.vector
tensor_copy dst=sbuf[0:128 +256 (1,128) fp32] src=psum[0:128 +0 (1,128) fp32] wait=mm>=1 signal=st+1
.stream c0.dma1
dma_copy dst=hbm.C[128@128 +0 (1,128) fp32] src=sbuf[0:128 +256 (1,128) fp32] wait=st>=1
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def test_isa_list_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["isa", "list"]) == 0
    out = capsys.readouterr().out
    for op in Op:
        assert f"\n{op.name}  (code {int(op)}" in "\n" + out
    assert "stationary=  in; spaces sbuf" in out and "func=  ActFunc in {identity, relu" in out


def test_isa_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["isa", "list", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["opcodes"]
    assert [e["name"] for e in table] == [o.name for o in Op]
    mm = table[0]
    assert mm["engines"] == ["tensor"]
    assert mm["operands"][0] == {"name": "dst", "output": True, "optional": False, "spaces": ["psum"],
                                 "dtypes": ["fp32"]}
    assert mm["immediates"] == [{"name": "accumulate", "kind": "bool", "required": False, "default": False}]
    assert any("tensor_engine.rows" in c for c in mm["constraints"])


def test_asm_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, "a.s", GOOD)
    b = _write(tmp_path, "b.s", GOOD.replace("signal=st+1", "signal=st+2"))
    assert main(["asm", a, b, "--check"]) == 0
    assert capsys.readouterr().out == "ok\n"


def test_asm_check_parse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "good.s", GOOD)
    bad = _write(tmp_path, "bad.s", GOOD.replace("fp32] src=psum", "fp31] src=psum"))
    assert main(["asm", "--check", good, bad]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{bad}:10:")
    assert "expected a dtype" in out[0]


def test_asm_check_validation_error_maps_to_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # K = 200 partitions exceeds the array and SBUF: a validation (not parse) problem on line 8
    text = GOOD.replace("stationary=sbuf[0:128", "stationary=sbuf[0:200")
    f = _write(tmp_path, "v.s", text)
    assert main(["asm", f, "--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out and all(line.startswith(f"{f}:8: instruction 1") for line in out), out
    assert any("stationary" in line for line in out)


def test_asm_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asm", "--check", str(tmp_path / "nope.s")]) == 1
    assert "nope.s:0:0: cannot read: no such file" in capsys.readouterr().out


def test_asm_usage_errors(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.s", GOOD)
    with pytest.raises(SystemExit) as e:
        main(["asm", a])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["asm", a, a, "-o", str(tmp_path / "x.bin")])
    assert e.value.code == 2


def test_asm_to_bin_and_disasm_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path, "k.s", GOOD)
    binf = str(tmp_path / "k.bin")
    assert main(["asm", src, "-o", binf]) == 0
    assert Path(binf).read_bytes()[:8] == b"INFSIMB1"
    assert main(["disasm", binf]) == 0
    text = capsys.readouterr().out
    assert parse(text) == parse(GOOD)
    out_s = str(tmp_path / "back.s")
    assert main(["disasm", binf, "-o", out_s]) == 0
    assert Path(out_s).read_text() == text
    assert main(["asm", out_s, "--check", "-o", str(tmp_path / "k2.bin")]) == 0
    assert Path(tmp_path / "k2.bin").read_bytes() == Path(binf).read_bytes()


def test_asm_o_parse_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, "bad.s", ".stream c0.vector\nnop wait=x>=1\n")
    assert main(["asm", bad, "-o", str(tmp_path / "x.bin")]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:2:10: undeclared semaphore 'x'" in out
    assert not (tmp_path / "x.bin").exists()


def test_disasm_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.bin"
    f.write_bytes(b"INFSIMB1\x05")
    assert main(["disasm", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("infsim: error: ") and "c.bin: truncated input" in err
