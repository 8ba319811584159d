"""The state of a reference-interpreter run: decoded instructions, the memories (HBM tensors per chip,
SBUF and PSUM per core) with the access-pattern -> numpy view machinery and its bounds checks, the final
result, and the interpreter's error type.

Left out: what instructions compute (:mod:`infsim.isa.interp_numerics`) and in which order they run
(:mod:`infsim.isa.interp`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import IsaError
from .opcodes import Engine, Op, Space
from .operand import AccessPattern
from .program import Program, TensorKind

if TYPE_CHECKING:  # pragma: no cover
    from infsim.config.schema import ChipConfig

__all__ = ["Ins", "InterpError", "InterpResult", "Memory"]

RAW_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # raw (bit-copy) view per item size


class InterpError(IsaError):
    """A program cannot be executed as given (bad inputs, out-of-bounds access, mismatched shapes or
    collectives, step limit). The message names the instruction index, the operand slot and the cause."""


def flat_offsets(ap: AccessPattern) -> np.ndarray:
    """Element offsets of every element of ``ap`` in row-major order (partitions kept apart on-chip)."""
    if ap.space == Space.hbm:
        pstride = ap.partition_stride
    else:  # partitions never alias each other: separate them by more than any in-partition span
        pstride = 1 + sum(abs(st) * (sz - 1) for st, sz in ap.dims)
    off = np.zeros(ap.shape, np.int64)
    strides = (pstride, *ap.strides)
    for k, (st, sz) in enumerate(zip(strides, ap.shape)):
        shp = [1] * len(ap.shape)
        shp[k] = sz
        off = off + (np.arange(sz, dtype=np.int64) * st).reshape(shp)
    return off.reshape(-1)


@functools.lru_cache(maxsize=1 << 16)
def may_alias(ap: AccessPattern) -> bool:
    """Cheap sufficient test: False when no two elements of ``ap`` can share an address."""
    dims = [(abs(st), sz) for st, sz in ap.dims if sz > 1]
    if ap.space == Space.hbm and ap.partitions > 1:
        dims.append((abs(ap.partition_stride), ap.partitions))
    dims.sort()
    extent = 1
    for st, sz in dims:
        if st < extent:
            return True
        extent += st * (sz - 1)
    return False


@dataclass
class Ins:
    """Decoded instruction as the interpreter needs it (operands by slot name, AP-table indices)."""

    index: int
    op: Op
    engine: Engine
    core: int
    queue: int
    operands: dict[str, tuple[int, AccessPattern]]
    imms: dict[str, object]
    waits: list[tuple[int, int]]
    signals: list[tuple[int, int]]

    def where(self) -> str:
        return f"instruction {self.index} ({self.op.name} on core {self.core} {self.engine.name}[{self.queue}])"


class Memory:
    """HBM tensors (per chip), SBUF and PSUM (per core) and the AP -> numpy view machinery."""

    def __init__(self, program: Program, chip: ChipConfig, inputs: Mapping[str, np.ndarray]):
        self.program = program
        self.sbuf_shape = (int(chip.sbuf.partitions), int(chip.sbuf.bytes_per_partition))
        self.psum_shape = (int(chip.psum.partitions), int(chip.psum.bytes_per_partition))
        self.sbuf: dict[int, np.ndarray] = {}
        self.psum: dict[int, np.ndarray] = {}
        self.hbm: dict[str, np.ndarray] = {}
        for name in inputs:
            if name not in program.tensors:
                declared = ", ".join(program.tensors) or "none"
                raise InterpError(f"input '{name}' is not a declared tensor (declared: {declared})")
        for t in program.tensors.values():
            if not (0 <= t.chip < program.num_chips):
                raise InterpError(f"tensor '{t.name}' is on chip {t.chip} but the program has "
                                  f"{program.num_chips} chip(s)")
            desc = f"{t.kind.name} {t.dtype.name}[{','.join(map(str, t.shape))}]"
            if t.kind in (TensorKind.input, TensorKind.weight):
                if t.name not in inputs:
                    raise InterpError(f"missing input for tensor '{t.name}' ({desc})")
                arr = np.asarray(inputs[t.name])
                if arr.shape != t.shape:
                    raise InterpError(f"input '{t.name}': shape {arr.shape} does not match the declared {desc}")
                if arr.dtype != t.dtype.np:
                    raise InterpError(f"input '{t.name}': dtype {arr.dtype} does not match the declared {desc} "
                                      f"(convert with infsim.isa.cast(x, DType.{t.dtype.name}))")
                self.hbm[t.name] = np.ascontiguousarray(arr).view(np.uint8).reshape(-1).copy()
            else:
                if t.name in inputs:
                    raise InterpError(f"input given for tensor '{t.name}' ({desc}); only input and weight "
                                      f"tensors take initial values")
                self.hbm[t.name] = np.zeros(t.num_bytes, np.uint8)
        self._views: dict[tuple[AccessPattern, int, bool], np.ndarray] = {}

    def onchip(self, space: Space, core: int) -> np.ndarray:
        store, shape = (self.sbuf, self.sbuf_shape) if space == Space.sbuf else (self.psum, self.psum_shape)
        mem = store.get(core)
        if mem is None:
            mem = store[core] = np.zeros(shape, np.uint8)
        return mem

    def view(self, ap: AccessPattern, core: int, raw: bool = False, ctx: Ins | None = None,
             slot: str = "") -> np.ndarray:
        """A numpy view of ``ap`` (shape ``ap.shape``) over the memory ``core`` sees; bounds-checked.

        ``ctx`` (the executing instruction) and ``slot`` only serve error messages."""
        key = (ap, core, raw)
        v = self._views.get(key)
        if v is None:
            v = self._views[key] = self._make_view(ap, core, raw, ctx, slot)
        return v

    def _make_view(self, ap: AccessPattern, core: int, raw: bool, ctx: Ins | None, slot: str) -> np.ndarray:
        isz = ap.dtype.itemsize
        what = f"{ctx.where()}: operand '{slot}'" if ctx is not None else "access pattern"
        lo, hi = ap.byte_extent()
        if ap.space == Space.hbm:
            t = self.program.tensors.get(ap.tensor or "")
            if t is None:
                raise InterpError(f"{what}: undeclared HBM tensor '{ap.tensor}'")
            chip = self.program.chip_of_core(core)
            if t.chip != chip:
                raise InterpError(f"{what}: core {core} is on chip {chip} and cannot address HBM tensor "
                                  f"'{t.name}' on chip {t.chip}")
            if lo < 0 or hi > t.num_bytes:
                over = -lo if lo < 0 else hi - t.num_bytes
                side = "before the start" if lo < 0 else "past the end"
                raise InterpError(f"{what}: hbm.{t.name} bytes [{lo}, {hi}) run {over} bytes {side} of the "
                                  f"tensor ({t.num_bytes} bytes)")
            buf = self.hbm[t.name]
            base = ap.offset
            strides = (ap.partition_stride * isz, *(st * isz for st in ap.strides))
        else:
            mem = self.onchip(ap.space, core)
            npart, nbytes = mem.shape
            sp = ap.space.name
            if ap.partition_start + ap.partitions > npart:
                raise InterpError(f"{what}: {sp} partitions [{ap.partition_start}, "
                                  f"{ap.partition_start + ap.partitions}) exceed the {npart} partitions by "
                                  f"{ap.partition_start + ap.partitions - npart}")
            if lo < 0 or hi > nbytes:
                over = -lo if lo < 0 else hi - nbytes
                side = "before the start" if lo < 0 else "past the end"
                raise InterpError(f"{what}: {sp} bytes [{lo}, {hi}) of each partition run {over} bytes {side} "
                                  f"of the partition ({nbytes} bytes)")
            buf = mem
            base = ap.partition_start * nbytes + ap.offset
            strides = (nbytes, *(st * isz for st in ap.strides))
        dt = RAW_DTYPES[isz] if raw else ap.dtype.np
        try:
            return np.ndarray(ap.shape, dtype=dt, buffer=buf, offset=base, strides=strides)
        except ValueError as e:  # pragma: no cover - the checks above should make this unreachable
            raise InterpError(f"{what}: cannot address {ap}: {e}") from None

    def read(self, ap: AccessPattern, core: int, raw: bool = False, ctx: Ins | None = None,
             slot: str = "") -> np.ndarray:
        return np.array(self.view(ap, core, raw, ctx, slot), order="C")

    def write(self, ap: AccessPattern, core: int, values: np.ndarray, raw: bool = False, ctx: Ins | None = None,
              slot: str = "") -> None:
        v = self.view(ap, core, raw, ctx, slot)
        values = np.asarray(values).reshape(ap.shape)
        if may_alias(ap):
            off = flat_offsets(ap)
            _, first_rev = np.unique(off[::-1], return_index=True)
            if len(first_rev) < off.size:
                last = np.sort(off.size - 1 - first_rev)
                v[np.unravel_index(last, ap.shape)] = values.reshape(-1)[last]
                return
        v[...] = values


# ---- result -------------------------------------------------------------------------------------------


class InterpResult:
    """Final machine state of a run: HBM tensors, SBUF/PSUM per core, semaphores and the step count."""

    def __init__(self, program: Program, memory: Memory, semaphores: dict[str, int], steps: int):
        self.program = program
        self._mem = memory
        self.semaphores: dict[str, int] = semaphores
        self.steps: int = steps

    def hbm(self, name: str) -> np.ndarray:
        """The final value of HBM tensor ``name`` with its declared dtype and shape (a copy)."""
        t = self.program.tensors.get(name)
        if t is None:
            raise InterpError(f"no HBM tensor '{name}' (declared: {', '.join(self.program.tensors) or 'none'})")
        return self._mem.hbm[name].view(t.dtype.np).reshape(t.shape).copy()

    def outputs(self) -> dict[str, np.ndarray]:
        """Every ``output`` tensor by name."""
        return {n: self.hbm(n) for n, t in self.program.tensors.items() if t.kind == TensorKind.output}

    def sbuf(self, core: int = 0) -> np.ndarray:
        """Raw SBUF bytes of ``core``: ``uint8[partitions, bytes_per_partition]``."""
        return self._mem.onchip(Space.sbuf, core)

    def psum(self, core: int = 0) -> np.ndarray:
        """Raw PSUM bytes of ``core``: ``uint8[partitions, bytes_per_partition]``."""
        return self._mem.onchip(Space.psum, core)

    def read(self, ap: AccessPattern, core: int = 0) -> np.ndarray:
        """The elements ``ap`` selects in the memory ``core`` sees, shape ``ap.shape``, dtype ``ap.dtype``."""
        return self._mem.read(ap, core)
