"""``infsim interp``: runs an assembly file on .npy inputs, saves outputs, one-line errors with exit 1."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from infsim.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "asm"


def softmax_ref(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_interp_softmax_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = (np.random.default_rng(0).standard_normal((128, 512)) * 2).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "sub" / "y.npy"
    rc = main(["interp", str(EXAMPLES / "softmax.s"), "--input", f"X={tmp_path / 'x.npy'}", "--output", f"Y={out}"])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("ok: ") and "7 instructions executed" in line and "Y -> " in line
    y = np.load(out)
    assert y.dtype == np.float32 and y.shape == (128, 512)  # bf16 saved as exact float32
    xb = x.astype(ml_dtypes.bfloat16).astype(np.float64)  # inputs are converted with RNE
    np.testing.assert_allclose(y, softmax_ref(xb), rtol=2**-7, atol=1e-7)


def test_interp_accepts_raw_bf16_npy_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    x = np.random.default_rng(1).standard_normal((128, 512)).astype(ml_dtypes.bfloat16)
    np.save(tmp_path / "x.npy", x)  # stored as raw |V2
    rc = main(["interp", str(EXAMPLES / "softmax.s"), "-i", f"X={tmp_path / 'x.npy'}", "-o",
               f"Y={tmp_path / 'y.npy'}", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 7 and summary["outputs"][0]["tensor"] == "Y"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), softmax_ref(x.astype(np.float64)), rtol=2**-7,
                               atol=1e-7)


@pytest.mark.parametrize("args, message", [
    ([], "missing input for tensor 'X' (input bf16[128,512])"),
    (["--input", "Z={x}"], "--input Z: no tensor 'Z'"),
    (["--input", "X={bad}"], "dtype"),
    (["--input", "X={missing}"], "nofile.npy"),
    (["--input", "X={x}", "--output", "Q={tmp}/q.npy"], "--output Q: no tensor 'Q'"),
    (["--input", "X={x}", "--max-steps", "3"], "max_steps=3"),
])
def test_interp_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                    message: str) -> None:
    np.save(tmp_path / "x.npy", np.zeros((128, 512), np.float32))
    np.save(tmp_path / "bad.npy", np.array(["a", "b"]))
    subst = {"x": tmp_path / "x.npy", "bad": tmp_path / "bad.npy", "missing": tmp_path / "nofile.npy",
             "tmp": tmp_path}
    rc = main(["interp", str(EXAMPLES / "softmax.s"), *[a.format(**subst) for a in args]])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("infsim: error: ") and "\n" not in err and message in err


def test_interp_deadlock_and_parse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prog = tmp_path / "dead.s"
    prog.write_text(".sem s\n.stream c0.vector\nnop wait=s>=1\n")
    assert main(["interp", str(prog)]) == 1  # the validator sees this one statically
    assert "deadlock" in capsys.readouterr().err
    assert main(["interp", str(prog), "--no-validate"]) == 1
    err = capsys.readouterr().err
    assert "deadlock" in err and "core 0 vector[0] at instruction 0 (nop) waits for semaphore 's' >= 1" in err
    bad = tmp_path / "bad.s"
    bad.write_text(".stream c0.vector\nfrobnicate x=1\n")
    assert main(["interp", str(bad)]) == 1
    assert f"{bad}:2:" in capsys.readouterr().err


def test_interp_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["interp", str(EXAMPLES / "softmax.s"), "--input", "X"])
    assert ei.value.code == 2
