"""Data types of the ISA and their numerics.

Each dtype has a fixed code (used by the binary encoding), a byte size and a numpy dtype (the 8- and
16-bit float formats come from ``ml_dtypes``).

Conversion rules (these define the semantics; the interpreter implements them in :func:`cast`):

* float -> float: round to nearest, ties to even (RNE). Values beyond the target's largest finite value
  saturate to +-max for every float format, +-inf included ("saturating" conversion, as Neuron
  engines do on output; ``fp8_e4m3`` has no infinity at all); NaN stays NaN.
* float -> integer: round to nearest, ties to even, then saturate to the integer range; NaN becomes 0.
* integer -> float: exact where representable, otherwise RNE (as above).
* All engine arithmetic is performed in fp32 (engines cast inputs to fp32 and outputs to the
  destination dtype with the rules above); the tensor engine accumulates in fp32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .errors import OperandError


class DType(IntEnum):
    """ISA data types; the integer value is the binary encoding."""

    fp32 = 0
    bf16 = 1
    fp16 = 2
    fp8_e4m3 = 3
    fp8_e5m2 = 4
    int8 = 5
    uint8 = 6
    int32 = 7

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def np(self) -> np.dtype:
        return _info()[self].np_dtype

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def max_finite(self) -> float:
        return _info()[self].max_value

    @property
    def min_value(self) -> float:
        return _info()[self].min_value

    @classmethod
    def parse(cls, name: str) -> DType:
        try:
            return cls[name]
        except KeyError:
            raise OperandError(
                f"unknown dtype '{name}' (expected one of {', '.join(d.name for d in cls)})"
            ) from None


@dataclass(frozen=True)
class _DTypeInfo:
    np_dtype: np.dtype
    itemsize: int
    is_float: bool
    max_value: float
    min_value: float


_FLOATS = frozenset({DType.fp32, DType.bf16, DType.fp16, DType.fp8_e4m3, DType.fp8_e5m2})
#: bytes per element of each format (the formats' definitions; the numpy dtypes in :func:`_info` agree)
_ITEMSIZE = {DType.fp32: 4, DType.bf16: 2, DType.fp16: 2, DType.fp8_e4m3: 1, DType.fp8_e5m2: 1, DType.int8: 1,
             DType.uint8: 1, DType.int32: 4}


def _describe(npd: type | np.dtype, finfo: type) -> _DTypeInfo:
    d = np.dtype(npd)
    if d.kind in "iu":
        ii = np.iinfo(d)
        return _DTypeInfo(d, d.itemsize, False, float(ii.max), float(ii.min))
    fi = finfo(d)
    return _DTypeInfo(d, d.itemsize, True, float(fi.max), -float(fi.max))


@functools.cache
def _info() -> dict[DType, _DTypeInfo]:
    """numpy dtype and range of every format. ``ml_dtypes`` (the 8- and 16-bit floats; about a second to
    import) is imported here, on first use, not by every process that only needs sizes."""
    import ml_dtypes

    f = ml_dtypes.finfo
    return {
        DType.fp32: _describe(np.float32, f),
        DType.bf16: _describe(ml_dtypes.bfloat16, f),
        DType.fp16: _describe(np.float16, f),
        DType.fp8_e4m3: _describe(ml_dtypes.float8_e4m3fn, f),
        DType.fp8_e5m2: _describe(ml_dtypes.float8_e5m2, f),
        DType.int8: _describe(np.int8, f),
        DType.uint8: _describe(np.uint8, f),
        DType.int32: _describe(np.int32, f),
    }


FLOAT_DTYPES = tuple(d for d in DType if d.is_float)
INT_DTYPES = tuple(d for d in DType if not d.is_float)


def cast(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Convert ``values`` to ``dtype`` with the ISA's rounding and saturation rules.

    The result has numpy dtype ``dtype.np``. Input may be of any numeric numpy dtype (typically fp32
    engine results).
    """
    v = np.asarray(values)
    if dtype.is_float:
        x = v.astype(np.float64)
        mx = dtype.max_finite
        with np.errstate(invalid="ignore"):
            x = np.where(np.isnan(x), x, np.clip(x, -mx, mx))
        if dtype == DType.fp32:
            return x.astype(np.float32)
        # go through fp32 first for wide inputs: float64 -> fp32 is RNE, fp32 -> small float is RNE.
        # (Double rounding f64->f32->f8 can differ from direct RNE only for f64 values that are not
        # fp32-representable; engine results are fp32, so this never arises on engine paths.)
        return x.astype(np.float32).astype(dtype.np)
    # integer target
    x = v.astype(np.float64)
    x = np.where(np.isnan(x), 0.0, x)
    x = np.rint(x)  # ties to even
    x = np.clip(x, dtype.min_value, dtype.max_finite)
    return x.astype(dtype.np)


def to_fp32(values: np.ndarray) -> np.ndarray:
    """Widen any ISA dtype array to fp32 (exact for every ISA dtype except large int32 values)."""
    return np.asarray(values).astype(np.float32)
