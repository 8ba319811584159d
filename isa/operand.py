"""Operands: access patterns over the three memory spaces.

An :class:`AccessPattern` (AP) selects a multi-dimensional tile of elements:

* on-chip (SBUF / PSUM, per core): partitions ``partition_start .. partition_start+partitions-1``;
  within every selected partition the same free-dimension pattern starting at byte ``offset``;
  element ``(p, i_0, .., i_k)`` lives at byte ``offset + itemsize * sum(i_j * stride_j)`` of partition
  ``partition_start + p``.
* HBM (per chip, byte-addressed): a named tensor; the "partition" dimension is an ordinary strided
  dimension (``partition_stride`` elements apart) so that a DMA can map HBM rows to SBUF partitions;
  element ``(p, i_0, ..)`` lives at byte ``offset + itemsize * (p * partition_stride + sum(i_j *
  stride_j))`` from the tensor's base.

``dims`` lists the free dimensions outermost first as ``(stride, size)`` pairs with strides in
elements (as in NKI). The shape of the tile is ``(partitions, *sizes)``. Strides may be zero
(broadcast on reads) or negative.

Field ranges are those of the binary encoding; constructing an AP outside them raises
:class:`~infsim.isa.errors.OperandError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, Unpack

from .dtypes import DType
from .errors import OperandError
from .opcodes import MAX_FREE_DIMS, Space

# Encodable ranges (see isa/encoding.py).
U16_MAX = 0xFFFF
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
U32_MAX = 2**32 - 1
I64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class AccessPattern:
    space: Space
    dtype: DType
    partition_start: int = 0
    partitions: int = 1
    offset: int = 0
    dims: tuple[tuple[int, int], ...] = ((1, 1),)
    tensor: str | None = None
    partition_stride: int = 0

    def __post_init__(self) -> None:
        def bad(field: str, msg: str) -> OperandError:
            return OperandError(f"operand field '{field}': {msg}")

        if not isinstance(self.space, Space):
            raise bad("space", f"{self.space!r} is not a memory space")
        if not isinstance(self.dtype, DType):
            raise bad("dtype", f"{self.dtype!r} is not a dtype")
        if not (0 <= self.partition_start <= U16_MAX):
            raise bad("partition_start", f"{self.partition_start} not in [0, {U16_MAX}]")
        if not (1 <= self.partitions <= U16_MAX):
            raise bad("partitions", f"{self.partitions} not in [1, {U16_MAX}]")
        if not (0 <= self.offset <= I64_MAX):
            raise bad("offset", f"{self.offset} not in [0, 2^63-1]")
        if not (I32_MIN <= self.partition_stride <= I32_MAX):
            raise bad("partition_stride", f"{self.partition_stride} not a 32-bit signed integer")
        if len(self.dims) > MAX_FREE_DIMS:
            raise bad("dims", f"{len(self.dims)} free dimensions, at most {MAX_FREE_DIMS}")
        for k, d in enumerate(self.dims):
            if len(d) != 2:
                raise bad(f"dims[{k}]", "expected a (stride, size) pair")
            stride, size = d
            if not (I32_MIN <= stride <= I32_MAX):
                raise bad(f"dims[{k}].stride", f"{stride} not a 32-bit signed integer")
            if not (1 <= size <= U32_MAX):
                raise bad(f"dims[{k}].size", f"{size} not in [1, 2^32-1]")
        if self.space == Space.hbm:
            if self.tensor is None:
                raise bad("tensor", "an HBM operand must name a tensor")
            if self.partition_start != 0:
                raise bad("partition_start", "must be 0 for HBM (use offset)")
        else:
            if self.tensor is not None:
                raise bad("tensor", f"only HBM operands name a tensor, not {self.space.name}")
            if self.partition_stride != 0:
                raise bad("partition_stride", f"only HBM operands have a partition stride, not {self.space.name}")

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(s for _, s in self.dims)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(st for st, _ in self.dims)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.partitions, *self.sizes)

    @property
    def free_size(self) -> int:
        """Elements per partition."""
        n = 1
        for _, s in self.dims:
            n *= s
        return n

    @property
    def num_elements(self) -> int:
        return self.partitions * self.free_size

    @property
    def num_bytes(self) -> int:
        return self.num_elements * self.dtype.itemsize

    def byte_extent(self) -> tuple[int, int]:
        """(lowest, highest+1) byte touched, relative to the partition (on-chip) or tensor base (HBM).

        For on-chip APs this is within each partition; for HBM it spans all rows.
        """
        isz = self.dtype.itemsize
        spans = [stride * (size - 1) for stride, size in self.dims]  # in elements, per dimension
        if self.space == Space.hbm:
            spans.append(self.partition_stride * (self.partitions - 1))
        lo = sum(s for s in spans if s < 0)
        hi = sum(s for s in spans if s > 0)
        return self.offset + lo * isz, self.offset + (hi + 1) * isz

    def innermost_stride_bytes(self) -> int:
        return (self.dims[-1][0] if self.dims else 1) * self.dtype.itemsize

    def with_(self, **changes: Unpack[_ApFields]) -> AccessPattern:
        """A copy with the given fields changed (checked again by ``__post_init__``)."""
        from dataclasses import replace

        return replace(self, **changes)


class _ApFields(TypedDict, total=False):
    """The fields of :class:`AccessPattern`, as keywords of :meth:`AccessPattern.with_`."""

    space: Space
    dtype: DType
    partition_start: int
    partitions: int
    offset: int
    dims: tuple[tuple[int, int], ...]
    tensor: str | None
    partition_stride: int


def row_major_dims(free: int | tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``(stride, size)`` free dims of a contiguous row-major shape (outermost first)."""
    sizes = (free,) if isinstance(free, int) else tuple(free)
    dims = []
    stride = 1
    for s in reversed(sizes):
        dims.append((stride, s))
        stride *= s
    return tuple(reversed(dims))


def sbuf(partitions: int, free: int | tuple[int, ...], dtype: DType, *, start: int = 0, offset: int = 0,
         space: Space = Space.sbuf) -> AccessPattern:
    """A contiguous row-major on-chip tile: ``partitions`` x ``free`` elements at ``offset`` bytes."""
    return AccessPattern(space, dtype, start, partitions, offset, row_major_dims(free))


def psum(partitions: int, free: int | tuple[int, ...], *, start: int = 0, offset: int = 0,
         dtype: DType = DType.fp32) -> AccessPattern:
    """A contiguous row-major PSUM tile (fp32 by default)."""
    return sbuf(partitions, free, dtype, start=start, offset=offset, space=Space.psum)


def hbm(tensor: str, rows: int, cols: int | tuple[int, ...], dtype: DType, *, row_stride: int | None = None,
        offset: int = 0) -> AccessPattern:
    """A row-major HBM tile of ``rows`` x ``cols`` elements of ``tensor`` starting at byte ``offset``.

    ``row_stride`` (elements) defaults to the product of ``cols`` (a contiguous tile).
    """
    dims = row_major_dims(cols)
    elems = dims[0][0] * dims[0][1]  # elements per row
    return AccessPattern(Space.hbm, dtype, 0, rows, offset, dims, tensor, elems if row_stride is None else row_stride)
