"""Validation of access patterns: per-AP properties and problems, computed once over the AP table.

A program's operands index its deduplicated access-pattern table (``program.aps``), so everything about an AP
that does not depend on the instruction using it is computed here once, column-wise with numpy: its space,
dtype, shape, free size, the byte range it touches (relative to the partition on chip, to the tensor in HBM)
and the chip of its HBM tensor. :class:`ApTable` also lists the problems of each bad AP, in two groups that the
instruction rules (``isa/validate_instr.py``) attach to every operand slot using that AP:

* for every engine: unknown space or dtype, too many free dims or a size-0 dim; on chip, ``partitions`` and
  ``partition_start + partitions`` within the memory's partitions and the bytes touched in each partition
  within ``[0, bytes_per_partition)``; in HBM, a declared tensor and bytes within it;
* for compute engines only (DMA and collective descriptors address any partition): the memory's
  ``partition_start_rules`` and ``max_free_elements``.

Left out here: anything that needs the instruction (slot spaces and dtypes, engine access, shapes).
"""

from __future__ import annotations

import numpy as np

from infsim.config.schema import ChipConfig, MemoryConfig

from .dtypes import DType
from .opcodes import MAX_FREE_DIMS, Engine, Space
from .program import Program

__all__ = ["ApTable"]

_N_DT = len(DType)
_ITEMSIZE = np.array([DType(i).itemsize for i in range(_N_DT)], np.int64)


class ApTable:
    """Per-AP properties of ``program.aps`` on ``chip`` (arrays indexed by AP index) and the problems of each
    bad AP (``problems`` for every engine, ``compute_problems`` for compute engines only)."""

    def __init__(self, program: Program, chip: ChipConfig):
        self.tensor_names = list(program.tensors)
        self.tensor_decls = list(program.tensors.values())
        mems: dict[int, MemoryConfig] = {int(Space.sbuf): chip.sbuf, int(Space.psum): chip.psum}
        aps = program.aps
        na = self.na = len(aps)
        space = aps["space"].astype(np.int64)
        dt = aps["dtype"].astype(np.int64)
        nd = aps["ndims"].astype(np.int64)
        pstart = aps["pstart"].astype(np.int64)
        pcount = aps["pcount"].astype(np.int64)
        tid = aps["tensor"].astype(np.int64)
        sizes = aps["sizes"].astype(np.int64)
        strides = aps["strides"].astype(np.float64)
        used = np.arange(MAX_FREE_DIMS)[None, :] < nd[:, None]
        sz = np.where(used, sizes, 1)
        freef = np.prod(sz.astype(np.float64), axis=1)
        free = np.where(freef < 2.0**62, np.prod(np.minimum(sz, 2**31), axis=1), 2**62)
        dt_ok = dt < _N_DT
        isz = _ITEMSIZE[np.where(dt_ok, dt, 0)].astype(np.float64)
        span = strides * (sz - 1).astype(np.float64)
        pspan = aps["pstride"].astype(np.float64) * (pcount - 1).astype(np.float64)
        pspan = np.where(space == int(Space.hbm), pspan, 0.0)
        lo_el = np.minimum(span, 0).sum(axis=1) + np.minimum(pspan, 0)
        hi_el = np.maximum(span, 0).sum(axis=1) + np.maximum(pspan, 0) + 1
        off = aps["offset"].astype(np.float64)
        lo = off + lo_el * isz
        hi = off + hi_el * isz
        onchip = (space == int(Space.sbuf)) | (space == int(Space.psum))
        hbm = space == int(Space.hbm)
        nt = len(self.tensor_decls)
        tid_ok = hbm & (tid >= 0) & (tid < nt)
        tbytes = np.array([t.num_bytes for t in self.tensor_decls] + [0], np.float64)
        tchip = np.array([t.chip for t in self.tensor_decls] + [-1], np.int64)
        self.space, self.dt, self.nd, self.pstart, self.pcount = space, dt, nd, pstart, pcount
        self.sizes, self.free, self.lo, self.hi, self.tid = np.where(used, sizes, 0), free, lo, hi, tid
        self.tid_ok = tid_ok
        self.tensor_chip = np.where(tid_ok, tchip[np.where(tid_ok, tid, nt)], -1)  # -1: not an HBM tensor
        #: ``tensor_chip`` indexed like the instruction rules' screening tables (1 + AP; -1 at both ends)
        self.tensor_chip_ext = np.concatenate([[-1], self.tensor_chip, [-1]])
        #: space and dtype of every AP as one code, ``space * (dtypes + 1) + dtype`` (unknown codes clipped to
        #: one past the last known)
        self.space_dtype = np.minimum(space, len(Space)) * (_N_DT + 1) + np.minimum(dt, _N_DT)
        #: per-AP tables of the instruction rules (``validate_instr``: per-slot screens, PSUM bank crossing),
        #: memoised across chunks
        self.screens: dict[tuple[int, int, int, int | None] | str, np.ndarray] = {}
        self.elements = pcount * free

        # engine-independent AP problems
        nparts = np.zeros(na, np.int64)
        bpp = np.zeros(na, np.float64)
        for sp, mem in mems.items():
            m = space == sp
            nparts[m] = mem.partitions
            bpp[m] = mem.bytes_per_partition
        bad_space = ~(onchip | hbm)
        bad_nd = nd > MAX_FREE_DIMS
        bad_size = (used & (sizes == 0)).any(axis=1)
        bad_pc = onchip & ((pcount > nparts) | (pcount < 1))
        bad_ps = onchip & ~bad_pc & (pstart + pcount > nparts)
        bad_ext_on = onchip & ((lo < 0) | (hi > bpp))
        bad_tid = hbm & ~tid_ok
        bad_ext_hbm = tid_ok & ((lo < 0) | (hi > tbytes[np.where(tid_ok, tid, nt)]))
        bad = bad_space | ~dt_ok | bad_nd | bad_size | bad_pc | bad_ps | bad_ext_on | bad_tid | bad_ext_hbm
        self.bad = bad
        self.problems: dict[int, list[tuple[str, str]]] = {}  # AP -> [(field suffix, message)]
        for a in np.flatnonzero(bad).tolist():
            pr: list[tuple[str, str]] = []
            if bad_space[a]:
                pr.append(("space", f"unknown memory space code {int(space[a])}"))
            if not dt_ok[a]:
                pr.append(("dtype", f"unknown dtype code {int(dt[a])}"))
            if bad_nd[a]:
                pr.append(("dims", f"{int(nd[a])} free dims exceed {MAX_FREE_DIMS}"))
            if bad_size[a]:
                pr.append(("dims", "a free dimension has size 0"))
            if bad_space[a]:
                self.problems[a] = pr
                continue
            sname = Space(int(space[a])).name
            if bad_pc[a]:
                pr.append(("partitions", f"{int(pcount[a])} exceeds {sname}.partitions {int(nparts[a])}"
                           if pcount[a] > nparts[a] else f"{int(pcount[a])} partitions (at least 1)"))
            if bad_ps[a]:
                pr.append(("partition_start",
                           f"partitions {int(pstart[a])}..{int(pstart[a] + pcount[a]) - 1} exceed "
                           f"{sname}.partitions {int(nparts[a])}"))
            if bad_ext_on[a]:
                pr.append(("extent", f"bytes [{int(lo[a])}, {int(hi[a])}) of each partition outside "
                                     f"[0, {int(bpp[a])}) ({sname}.bytes_per_partition)"))
            if bad_tid[a]:
                pr.append(("tensor", f"tensor index {int(tid[a])} not declared ({nt} tensors)"))
            if bad_ext_hbm[a]:
                t = self.tensor_decls[int(tid[a])]
                pr.append(("extent", f"bytes [{int(lo[a])}, {int(hi[a])}) outside tensor {t.name} "
                                     f"[0, {t.num_bytes})"))
            self.problems[a] = pr

        # compute-engine-only AP problems: partition-start rule and free-size limit
        cbad_rule = np.zeros(na, bool)
        align = np.ones(na, np.int64)
        maxfree = np.full(na, 2**62, np.int64)
        for sp, mem in mems.items():
            m = space == sp
            al = np.zeros(na, np.int64)
            for maxp, a_ in reversed(mem.partition_start_rules):
                al = np.where(pcount <= maxp, a_, al)
            has = m & (al > 0)
            align[has] = al[has]
            cbad_rule |= has & (pstart % np.maximum(al, 1) != 0)
            if mem.max_free_elements is not None:
                maxfree[m] = mem.max_free_elements
        cbad_free = onchip & (free > maxfree)
        self.compute_bad = cbad_rule | cbad_free
        self.compute_problems: dict[int, list[tuple[str, str]]] = {}
        for a in np.flatnonzero(self.compute_bad).tolist():
            pr = []
            sname = Space(int(space[a])).name
            if cbad_rule[a]:
                pr.append(("partition_start",
                           f"{int(pstart[a])} not a multiple of {int(align[a])} for {int(pcount[a])} partitions "
                           f"({sname}.partition_start_rules)"))
            if cbad_free[a]:
                pr.append(("free_size", f"{int(free[a])} elements per partition exceed "
                                        f"{sname}.max_free_elements {int(maxfree[a])}"))
            self.compute_problems[a] = pr
        # (engine, space) access denial
        self.deny = np.zeros((256, 4), bool)
        for sp, mem in mems.items():
            for e in mem.no_access_engines:
                self.deny[int(Engine[e]), sp] = True

    def desc(self, a: int) -> str:
        """The space of AP ``a`` as a message names it: ``sbuf``, ``psum`` or ``hbm.TENSOR``."""
        sp = int(self.space[a])
        name = Space(sp).name if sp < 3 else f"space{sp}"
        if sp == int(Space.hbm) and self.tid_ok[a]:
            name = f"hbm.{self.tensor_names[int(self.tid[a])]}"
        return name

    def shape(self, a: int) -> tuple[int, ...]:
        """``(partitions, *free sizes)`` of AP ``a``."""
        return (int(self.pcount[a]), *(int(s) for s in self.sizes[a][: min(int(self.nd[a]), MAX_FREE_DIMS)]))
