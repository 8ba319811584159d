"""The numerics of the reference interpreter: engine output conversion, the ALU and reduction operations
and the activation functions, each as the interpreter's docstring (:mod:`infsim.isa.interp`, "Arithmetic")
defines it: fp32 operations, float64 evaluation of the transcendental functions rounded once to fp32, the
saturating cast of :func:`infsim.isa.dtypes.cast`.

Left out: operand access and shapes (:mod:`infsim.isa.interp_state`), scheduling (:mod:`infsim.isa.interp`).
"""

from __future__ import annotations

import numpy as np

from .dtypes import DType, cast
from .opcodes import ActFunc, AluOp, ReduceOp

__all__ = ["activation", "alu", "convert", "reduce"]


def convert(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Engine output conversion: :func:`cast`, with the saturation rule applied also when the values
    already have the target dtype (``cast`` returns same-dtype input unchanged, keeping +-inf)."""
    v = np.asarray(values)
    if dtype.is_float and v.dtype == np.float32:  # fast path, same result as cast: every float max is an fp32
        mx = np.float32(dtype.max_finite)
        c = np.clip(v, -mx, mx)  # NaN stays NaN
        return c if dtype == DType.fp32 else c.astype(dtype.np)
    if dtype.is_float and v.dtype == dtype.np:
        mx = v.dtype.type(dtype.max_finite)
        return np.clip(v, -mx, mx)
    return cast(v, dtype)


# ---- float64 math helpers ---------------------------------------------------------------------------

def erfc(x: np.ndarray) -> np.ndarray:
    """erfc in float64, accurate to ~1e-15 relative in both tails (no ``1 - erf`` cancellation).

    |x| <= 2.5: ``1 - erf(|x|)`` from the positive series ``erf(x) = 2/sqrt(pi) e^{-x^2} sum 2^n x^{2n+1}
    / (2n+1)!!``; |x| > 2.5: the continued fraction ``erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x +
    (3/2)/(x + ...))))``; negative x via ``erfc(-x) = 2 - erfc(x)``.
    """
    a = np.abs(x)
    tail = np.empty_like(a)  # erfc(|x|)
    small = a <= 2.5
    xs = a[small]
    if xs.size:
        x2 = xs * xs
        term = xs.copy()
        s = xs.copy()
        for n in range(40):
            term *= (2.0 * x2) / (2 * n + 3)
            s += term
        tail[small] = 1.0 - (2.0 / np.sqrt(np.pi)) * np.exp(-x2) * s
    xl = a[~small]
    if xl.size:
        f = xl.copy()
        for k in range(60, 0, -1):
            f = xl + (k / 2.0) / f
        tail[~small] = np.exp(-xl * xl) / np.sqrt(np.pi) / f
    out = np.where(x < 0, 2.0 - tail, tail)
    return np.where(np.isnan(x), np.nan, out)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def activation(func: ActFunc, x32: np.ndarray) -> np.ndarray:
    """f(x) for fp32 ``x32``: evaluated in float64, rounded once to fp32."""
    if func == ActFunc.identity:
        return x32
    x = x32.astype(np.float64)
    if func == ActFunc.relu:
        y = np.where(np.isnan(x), x, np.maximum(x, 0.0))
    elif func == ActFunc.exp:
        y = np.exp(x)
    elif func == ActFunc.tanh:
        y = np.tanh(x)
    elif func == ActFunc.sigmoid:
        y = sigmoid(x)
    elif func == ActFunc.silu:
        y = x * sigmoid(x)
    elif func == ActFunc.gelu:
        y = 0.5 * x * erfc(-x / np.sqrt(2.0))
    elif func == ActFunc.gelu_tanh:  # 0.5x(1 + tanh(u)) == x * sigmoid(2u), the cancellation-free form
        y = x * sigmoid(2.0 * np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3))
    elif func == ActFunc.rsqrt:
        y = 1.0 / np.sqrt(x)
    elif func == ActFunc.sqrt:
        y = np.sqrt(x)
    elif func == ActFunc.square:
        y = x * x
    elif func == ActFunc.reciprocal:
        y = 1.0 / x
    else:  # pragma: no cover - table error
        raise AssertionError(func)
    return y.astype(np.float32)


def alu(op: AluOp, a: np.ndarray, b: np.ndarray | np.float32) -> np.ndarray:
    """One fp32 ALU operation (IEEE; compare ops give 1.0/0.0)."""
    if op == AluOp.add:
        return a + b
    if op == AluOp.sub:
        return a - b
    if op == AluOp.mul:
        return a * b
    if op == AluOp.div:
        return a / b
    if op == AluOp.max:
        return np.maximum(a, b)
    if op == AluOp.min:
        return np.minimum(a, b)
    if op == AluOp.bypass:
        return a
    cmp = {AluOp.eq: np.equal, AluOp.ne: np.not_equal, AluOp.lt: np.less, AluOp.le: np.less_equal,
           AluOp.gt: np.greater, AluOp.ge: np.greater_equal}[op]
    return cmp(a, b).astype(np.float32)


def reduce(op: ReduceOp, x: np.ndarray, axis: int) -> np.ndarray:
    """Reduce fp32 ``x`` along ``axis``: add in float64 rounded once to fp32; max/min exact."""
    if op == ReduceOp.add:
        return x.astype(np.float64).sum(axis=axis).astype(np.float32)
    if op == ReduceOp.max:
        return np.max(x, axis=axis)
    return np.min(x, axis=axis)
