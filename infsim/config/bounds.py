"""Sensible ranges for every number of a configuration schema: one policy, by the unit in the field's name.

Every configuration model derives from :class:`BoundedModel`. Its numbers must be finite (no ``inf`` or
``nan``: pydantic's ``allow_inf_nan=False``) and, when not zero, within a range that depends on the unit
the field's name ends with (:data:`UNIT_BOUNDS`: ``_ghz``, ``_gbps``, ``_ns``, ``_bytes``, ...) or, for a
number without a unit, on its type (:data:`COUNT_BOUNDS` for integers: counts of things;
:data:`FACTOR_BOUNDS` for floats: rates per cycle and multipliers). A field may name its own range with
``Field(json_schema_extra=sensible(lo, hi))``. Whether zero or a negative value is allowed stays with the
field's own constraints (``ge=0``, ``gt=0``). The values of mapping fields and the items of tuple fields
are checked the same way. A new field gets a range without any code: name its unit.

Why: the simulator turns these numbers into integer picoseconds, bytes and element counts. Outside
these ranges the results are not a faster or slower chip but arithmetic artefacts: a 1e-300 GB/s HBM
overflowed to a *faster* chip, ``inf`` crashed the event engine, a 1e30 ns latency raised
``OverflowError``. The ranges are wide (about 1000x beyond any chip in the presets, either way); the
error names the field, the value and the range.

Left out: ranges that depend on other fields (those are the schemas' ``model_validator`` checks).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

#: (smallest non-zero magnitude, largest magnitude, unit shown in errors), by field-name suffix (longest
#: suffix first wins)
UNIT_BOUNDS: dict[str, tuple[float, float, str]] = {
    "_ghz": (0.01, 100.0, "GHz"),
    "_gbps": (0.1, 1e7, "GB/s"),  # 100 MB/s .. 10 PB/s
    "_ns": (1e-6, 1e9, "ns"),  # up to 1 s
    "_cycles": (1, 1e9, "cycles"),
    "_bytes": (1, 2**40, "bytes"),  # up to 1 TiB
    "_gib": (2**-10, 2**20, "GiB"),  # 1 MiB .. 1 PiB
    "_pj": (1e-6, 1e6, "pJ"),
    "_pj_per_bit": (1e-6, 1e6, "pJ/bit"),
    "_pj_per_byte": (1e-6, 1e6, "pJ/byte"),
    "_w": (1e-3, 1e6, "W"),
    "_usd": (1e-6, 1e9, "USD"),
    "_ma": (1e-3, 1e6, "mA"),
    "_v": (0.01, 100.0, "V"),
}
#: integers without a unit: counts (cores, rows, lanes, banks, queues, stacks, chips)
COUNT_BOUNDS: tuple[float, float, str] = (1, 65536, "")
#: floats without a unit: rates per cycle and multipliers
FACTOR_BOUNDS: tuple[float, float, str] = (1e-3, 1e3, "")


def sensible(lo: float, hi: float, unit: str = "") -> dict[str, Any]:
    """``json_schema_extra`` giving a field its own range: ``Field(gt=0, json_schema_extra=sensible(1, 2**24))``."""
    return {"sensible": [lo, hi, unit]}


def bounds_for(model: type[BaseModel], name: str, value: Any) -> tuple[float, float, str]:
    """The (lo, hi, unit) range of field ``name`` of ``model`` for a number ``value`` of that field."""
    field = model.model_fields.get(name)
    extra = field.json_schema_extra if field is not None else None
    if isinstance(extra, dict) and "sensible" in extra:
        sensible = extra["sensible"]
        if not (isinstance(sensible, (list, tuple)) and len(sensible) == 3):
            raise TypeError(f"{model.__name__}.{name}: json_schema_extra 'sensible' must be (lo, hi, unit), "
                            f"got {sensible!r}")
        lo, hi, unit = sensible
        assert isinstance(lo, (int, float)) and isinstance(hi, (int, float))
        return float(lo), float(hi), str(unit)
    for suffix in sorted(UNIT_BOUNDS, key=len, reverse=True):
        if name.endswith(suffix):
            return UNIT_BOUNDS[suffix]
    return COUNT_BOUNDS if isinstance(value, int) else FACTOR_BOUNDS


def _fmt(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() and abs(x) < 1e7 else f"{x:g}"


def check_number(model: type[BaseModel], name: str, value: Any, where: str = "") -> None:
    """Raise ``ValueError`` if the number ``value`` of field ``name`` is not finite or, when not zero, outside
    its range. Non-numbers pass."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}must be a finite number, got {value}")
    if value == 0:
        return
    lo, hi, unit = bounds_for(model, name, value)
    if not lo <= abs(value) <= hi:
        if isinstance(value, int) and value.bit_length() > 64:  # no repr/float: huge ints overflow or hit
            shown = f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"  # str's limit
        else:
            shown = repr(value) if len(repr(value)) <= 24 else f"{value:.4g}"
        u = f" {unit}" if unit else ""
        raise ValueError(f"{where}{shown} is outside the sensible range {_fmt(lo)}..{_fmt(hi)}{u} "
                         "(infsim.config.bounds)")


def _check_tree(model: type[BaseModel], name: str, value: Any, where: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_tree(model, name, v, f"{where}{k}: ")
    elif isinstance(value, tuple | list):
        for i, v in enumerate(value):
            _check_tree(model, name, v, f"{where}item {i}: ")
    else:
        check_number(model, name, value, where)


class BoundedModel(BaseModel):
    """Base of every configuration model: unknown fields are errors, models are immutable, and every number
    is finite and within its sensible range (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _sensible(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None and not isinstance(value, BaseModel):
            _check_tree(cls, info.field_name, value)
        return value
