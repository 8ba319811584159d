"""The HBM access pattern of every DMA instruction of a program, and the per-instruction efficiencies a
memory model derives from them (the quantity both engines consume with the shared HBM rate profile).

A DMA transfer's HBM side is one access pattern (:mod:`isa.operand`). Its shape, as the DRAM sees it,
is summarised by three numbers (:func:`hbm_rows`):

* ``row_bytes``: the structurally contiguous block (:func:`infsim.hw.dma.contiguous_run`, in bytes);
* ``stride_bytes``: the distance between the starts of consecutive blocks (the stride of the first
  dimension that breaks contiguity; ``== row_bytes`` for a contiguous transfer);
* ``offset``: the transfer's first byte address (its position inside the first DRAM burst matters).

Left out: dimensions beyond the first breaking one (a pattern of rows of rows is taken as rows at the
innermost breaking stride), the order in which a DMA engine's descriptors reach the memory controller.

:class:`HbmAccess` holds per instruction the *efficiency* of its read and of its write side: payload
bytes per byte of pin time, so a transfer of ``n`` bytes occupies ``n / eff`` bytes of the chip's HBM
pin bandwidth (``1.0`` where an instruction has no such side, and for every transfer of the ``simple``
model). A memory model computes it once before a run (:meth:`MemoryModel.access
<infsim.engine.memory.MemoryModel.access>`), vectorised over the instructions and memoised per distinct
pattern.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from infsim.hw import dma as dma_hw
from infsim.isa.dtypes import DType
from infsim.isa.opcodes import Op, Space
from infsim.isa.program import Program

if TYPE_CHECKING:
    from infsim.engine.costs import ApInfo, SparseColumn

_ITEMSIZE = np.array([DType(d).itemsize for d in range(len(DType))], dtype=np.int64)


@dataclass(frozen=True)
class HbmRows:
    """Per instruction, the HBM side of its DMA as rows (module docstring); zeros where it has no such side."""

    read_row: np.ndarray
    read_stride: np.ndarray
    write_row: np.ndarray
    write_stride: np.ndarray


@dataclass(frozen=True)
class HbmAccess:
    """Per instruction: payload bytes per byte of HBM pin time of its read and its write side (module
    docstring)."""

    read_eff: np.ndarray
    write_eff: np.ndarray

    @classmethod
    def ones(cls, n: int) -> HbmAccess:
        """Every transfer at the full pin rate (the ``simple`` model)."""
        return cls(np.ones(n), np.ones(n))


def _ap_rows(aps: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row_bytes, stride_bytes)`` of the AP table rows ``rows`` (:func:`infsim.hw.dma.ap_row_patterns`)."""
    sel = aps[rows]
    run, stride = dma_hw.ap_row_patterns(sel)
    isz = _ITEMSIZE[sel["dtype"].astype(np.int64)]
    return run * isz, stride * isz


def hbm_rows(program: Program, rows: np.ndarray | None = None, info: ApInfo | None = None) -> HbmRows:
    """The rows of every DMA instruction's HBM source and destination (module docstring): per instruction, or
    per instruction of ``rows`` (instruction indices) when given; zeros where there is no such side. ``info``:
    the program's :func:`~infsim.engine.costs.ap_info` when the caller has it (its row patterns are the
    same per AP; else they are derived here for the APs the DMAs use)."""
    ins = program.instr
    aps = program.aps
    sel = np.flatnonzero(ins["op"] == int(Op.dma_copy)) if rows is None else np.asarray(rows, np.int64)
    is_dma = ins["op"][sel] == int(Op.dma_copy)
    out = []
    for slot in (1, 0):  # source (read), destination (write)
        a = np.where(is_dma, ins["opnd"][sel, slot].astype(np.int64), -1)
        row = np.zeros(len(sel), dtype=np.int64)
        stride = np.zeros(len(sel), dtype=np.int64)
        if len(aps) and info is not None:
            hbm = (a >= 0) & (info.space[np.maximum(a, 0)] == int(Space.hbm))
            ah = a[hbm]
            isz = _ITEMSIZE[info.dtype[ah]]
            row[hbm], stride[hbm] = info.run[ah] * isz, info.row_stride[ah] * isz
        elif len(aps):
            hbm = (a >= 0) & (aps["space"][np.maximum(a, 0)] == int(Space.hbm))
            used = np.unique(a[hbm])
            rb, sb = _ap_rows(aps, used)
            pos = np.searchsorted(used, a[hbm])
            row[hbm], stride[hbm] = rb[pos], sb[pos]
        if rows is None:  # back to every instruction
            dense_row, dense_stride = np.zeros(len(ins), np.int64), np.zeros(len(ins), np.int64)
            dense_row[sel], dense_stride[sel] = row, stride
            row, stride = dense_row, dense_stride
        out += [row, stride]
    return HbmRows(*out)


def per_instruction(rows: HbmRows, read_addr: np.ndarray | SparseColumn, write_addr: np.ndarray | SparseColumn,
                    burst_bytes: int,
                    efficiency: Callable[[int, int, bool, int], float]) -> HbmAccess:
    """:class:`HbmAccess` from ``efficiency(row_bytes, stride_bytes, is_write, offset_in_burst)``, called once
    per distinct pattern."""
    effs = []
    for row, stride, addr, write in ((rows.read_row, rows.read_stride, read_addr, False),
                                     (rows.write_row, rows.write_stride, write_addr, True)):
        eff = np.ones(len(row))
        has = row > 0
        if has.any():
            r, s, o = row[has], stride[has], addr[np.flatnonzero(has)] % burst_bytes  # addr: array or SparseColumn
            order = np.lexsort((o, r, s))  # distinct (row, stride, offset) triples, as np.unique(axis=0) finds
            rs, ss, os_ = r[order], s[order], o[order]
            first = np.ones(len(order), bool)
            first[1:] = (rs[1:] != rs[:-1]) | (ss[1:] != ss[:-1]) | (os_[1:] != os_[:-1])
            vals = np.array([efficiency(int(a), int(b), write, int(c))
                             for a, b, c in zip(rs[first].tolist(), ss[first].tolist(), os_[first].tolist())])
            inv = np.empty(len(order), np.int64)
            inv[order] = np.cumsum(first) - 1
            eff[has] = vals[inv]
        effs.append(eff)
    return HbmAccess(effs[0], effs[1])


__all__ = ["HbmAccess", "HbmRows", "hbm_rows", "per_instruction"]
