"""The example programs in examples/asm/ parse, validate against inf2 and compute the right numbers."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from infsim.config import load_chip
from infsim.isa.asm import parse_file
from infsim.isa.interp import run
from infsim.isa.program import Program
from infsim.isa.validate import check

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "asm"
BF16 = ml_dtypes.bfloat16


def parse(name: str) -> Program:
    return parse_file(EXAMPLES / name)


@pytest.mark.parametrize("name", ["gemm_tiled.s", "softmax.s", "rmsnorm.s"])
def test_example_validates(name: str) -> None:
    problems = check(parse(name), load_chip("inf2"))
    assert problems == [], [str(p) for p in problems]


def bf16_close(got: np.ndarray, exp: np.ndarray, rel: float = 2**-7, atol: float = 0.0) -> None:
    """Within bf16 rounding of the fp32-accurate result (a few bf16 ulps)."""
    g = got.astype(np.float64)
    assert np.all(np.abs(g - exp) <= rel * np.abs(exp) + atol), np.max(np.abs(g - exp) - rel * np.abs(exp))


def test_gemm_tiled() -> None:
    program = parse("gemm_tiled.s")
    rng = np.random.default_rng(0)
    at = rng.standard_normal((256, 256)).astype(BF16)
    b = rng.standard_normal((256, 512)).astype(BF16)
    r = run(program, {"AT": at, "B": b})
    exp = at.astype(np.float64).T @ b.astype(np.float64)
    c = r.hbm("C")
    assert c.dtype == BF16 and c.shape == (256, 512)
    bf16_close(c, exp, atol=1e-4 * np.abs(at.astype(np.float64)).T @ np.abs(b.astype(np.float64)))
    assert r.steps == 14 and r.semaphores["mm"] == 4


def test_softmax() -> None:
    program = parse("softmax.s")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((128, 512)) * 3).astype(BF16)
    r = run(program, {"X": x})
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    exp = e / e.sum(axis=1, keepdims=True)
    y = r.hbm("Y")
    bf16_close(y, exp, atol=1e-7)
    np.testing.assert_allclose(y.astype(np.float64).sum(axis=1), 1.0, rtol=1e-2)


def test_rmsnorm() -> None:
    program = parse("rmsnorm.s")
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((128, 1024)) * 2).astype(BF16)
    w = (1 + 0.1 * rng.standard_normal(1024)).astype(BF16)
    r = run(program, {"X": x, "W": w})
    x64 = x.astype(np.float64)
    exp = x64 / np.sqrt((x64**2).mean(axis=1, keepdims=True) + 1e-5) * w.astype(np.float64)
    bf16_close(r.hbm("Y"), exp, atol=1e-6)
