"""Static validation of a :class:`~infsim.isa.program.Program` against a chip configuration.

:func:`check` returns every :class:`Problem` found (deterministic order: program-level problems first,
then by instruction index, then in the order the rules below are checked); :func:`validate` raises
:class:`~infsim.isa.errors.ValidationError` listing them. Each problem names the instruction index, the
stream, the field (``slot.property``, ``engine``, ``queue``, ``wait[k]`` ...), the offending value and the
limit, so the assembler can map it to a source line as it is.

Rules (NeuronCore-v2 access rules of [NKI-ARCH2] and [NKI-ISA], ``docs/references.md``; every number comes
from the :class:`~infsim.config.schema.ChipConfig`):

* **Program**: ``cores_per_chip`` equals the chip's (``num_cores`` may exceed one chip: multi-chip
  programs), unless every core of the program sits on chip 0 either way (``num_cores <= min`` of the two,
  e.g. a one-core program with the default ``cores_per_chip=1``); every tensor lives on a chip of the
  program; the tensors of each chip (4 KiB aligned, as :meth:`Program.tensor_base` places them) fit
  ``hbm.capacity_gib``; group members are cores of the program.
* **Instruction**: opcode and engine are known and the engine may run the opcode; ``core < num_cores``;
  compute and sync streams have queue 0, DMA and collective streams ``queue < dma.queues_per_core``
  (collectives run on the DMA rings, as on Neuron).
* **Operands** (every slot): required slots present; space allowed by the slot; dtype allowed by the slot
  and, for tensor-engine inputs, supported by ``tensor_engine.macs_per_pe_per_cycle``; the memory is not in
  its ``no_access_engines`` (GpSimd cannot access PSUM). On-chip: ``partitions`` within the memory's
  partitions, ``partition_start + partitions`` within them too, the bytes touched in each partition
  (:meth:`AccessPattern.byte_extent`) within ``[0, bytes_per_partition)``. Compute-engine operands
  (tensor, vector, scalar, gpsimd; not DMA or collectives, whose descriptors address any partition)
  also obey the memory's ``partition_start_rules`` (NC-v2: 65-128 partitions start at 0, 33-64 at 0 or 64,
  1-32 at a multiple of 32) and ``max_free_elements`` (64K SBUF / 4K PSUM). HBM: the tensor exists, lives
  on the chip of the issuing core, and the bytes touched lie within the tensor.
* **Shapes**: element-wise operands (``tensor_tensor``, ``tensor_copy``, ``select``, the data operands of
  ``tensor_scalar`` and ``activate``) must have *exactly the same shape* ``(partitions, *free sizes)``, as the
  opcode table says (no implicit reshaping; broadcast with zero strides instead). Per-partition operands
  (``scalar0``/``scalar1``, ``bias``/``scale``, ``reduce_dst``) have one element per partition and the
  same partition count as ``src``. ``tensor_tensor`` inputs are not both in PSUM.
* **matmul**: K = stationary partitions = moving partitions <= ``tensor_engine.rows``; M = stationary free
  size <= ``cols``; N = moving free size <= ``moving_free_max``; dst partitions = M, dst free size = N;
  stationary and moving share a dtype; dst lies within one PSUM bank (``bytes_per_partition / banks``).
  **transpose**: P = src partitions <= rows, F = src free size <= cols, dst is [F, P] in one PSUM bank.
* **tensor_reduce**: 1 <= axes <= free dims of src; dst shape = src shape without the reduced dims (one
  element per partition when all are reduced). **iota**: one multiplier per free dim of dst.
  **dma_copy**: same element count.
* **Collectives**: the group exists and the issuing core is a member; all_reduce dst = src elements,
  all_gather dst = members * src, reduce_scatter src = members * dst; send/recv peer is a core of the
  program. (Matching ops across members is the interpreter's job.)
* **Semaphores** (a static deadlock check; counters only grow): every wait value is at most the total of
  all increments to that semaphore (signals plus barrier arrivals), else it can never be satisfied;
  barriers on one semaphore share one ``count`` >= 1, and the k-th barrier of a stream on it needs
  ``k * count`` arrivals, which must not exceed the total.

Performance: rules run column-wise with numpy over ``program.instr`` and the deduplicated AP table
(per-AP properties are computed once and indexed); only the rare opcodes (collectives, barriers, iota,
tensor_reduce) and the problems themselves are handled in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infsim.config.schema import ChipConfig, MemoryConfig

from .dtypes import DType
from .errors import ValidationError
from .opcodes import MAX_FREE_DIMS, MAX_OPERANDS, OPSPECS, Engine, Op, Slot, Space
from .program import INTS_UNUSED, Program

__all__ = ["Problem", "check", "validate"]

_N_DT = len(DType)
_N_OPS = len(Op)
_N_ENG = len(Engine)
_ITEMSIZE = np.array([DType(i).itemsize for i in range(_N_DT)], np.int64)
_COMPUTE = np.zeros(256, bool)
for _e in (Engine.tensor, Engine.vector, Engine.scalar, Engine.gpsimd):
    _COMPUTE[int(_e)] = True
_QUEUED = np.zeros(256, bool)
_QUEUED[int(Engine.dma)] = _QUEUED[int(Engine.cc)] = True


@dataclass(frozen=True)
class Problem:
    """One violation. ``index`` is the instruction index (``None`` for program-level problems)."""

    index: int | None
    field: str
    message: str
    where: str = ""  # "opcode, stream" of the instruction, e.g. "matmul, c0.tensor"

    def __str__(self) -> str:
        if self.index is None:
            return f"{self.field}: {self.message}"
        where = f" ({self.where})" if self.where else ""
        return f"instruction {self.index}{where}: {self.field}: {self.message}"


def validate(program: Program, chip: ChipConfig) -> None:
    """Raise :class:`ValidationError` listing every problem of ``program`` on ``chip`` (if any).

    The error's ``items`` attribute holds the :class:`Problem` list.
    """
    problems = check(program, chip)
    if problems:
        err = ValidationError([str(p) for p in problems])
        err.items = problems  # type: ignore[attr-defined]
        raise err


def check(program: Program, chip: ChipConfig) -> list[Problem]:
    """Every problem of ``program`` on ``chip``, program-level first, then by instruction index."""
    return _Checker(program, chip).run()


# ---- implementation ---------------------------------------------------------------------------------


def _shape_str(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


class _Checker:
    def __init__(self, program: Program, chip: ChipConfig):
        self.p = program
        self.chip = chip
        self.ins = program.instr
        self.n = len(self.ins)
        self.out: list[tuple[int, int, Problem]] = []  # (sort index, sequence, problem)
        self.tensor_names = list(program.tensors)
        self.tensor_decls = list(program.tensors.values())
        self.group_names = list(program.groups)
        self.mems: dict[int, MemoryConfig] = {int(Space.sbuf): chip.sbuf, int(Space.psum): chip.psum}
        self.te_dtypes = np.zeros(_N_DT + 1, bool)
        for name in chip.tensor_engine.macs_per_pe_per_cycle:
            self.te_dtypes[int(DType[name])] = True

    # ---- reporting ----------------------------------------------------------------------------------
    def where(self, i: int) -> str:
        r = self.ins[i]
        op, eng = int(r["op"]), int(r["engine"])
        opname = Op(op).name if op < _N_OPS else f"op{op}"
        ename = Engine(eng).name if eng < _N_ENG else f"engine{eng}"
        q = str(int(r["queue"])) if eng < 256 and _QUEUED[eng] else ""
        return f"{opname}, c{int(r['core'])}.{ename}{q}"

    def add(self, index: int | None, field: str, message: str) -> None:
        where = self.where(index) if index is not None else ""
        self.out.append((-1 if index is None else index, len(self.out), Problem(index, field, message, where)))

    def emit(self, idx: np.ndarray, mask: np.ndarray, field: str | Callable[[int], str],
             message: Callable[[int], str]) -> None:
        """Report ``field``/``message(k)`` for every position ``k`` where ``mask`` holds (``idx[k]`` = index)."""
        for k in np.flatnonzero(mask):
            f = field(int(k)) if callable(field) else field
            self.add(int(idx[k]), f, message(int(k)))

    # ---- driver -------------------------------------------------------------------------------------
    def run(self) -> list[Problem]:
        self.program_level()
        self.ap_properties()
        self.instruction_level()
        self.semaphores()
        self.out.sort(key=lambda t: (t[0], t[1]))
        return [t[2] for t in self.out]

    # ---- program-level ------------------------------------------------------------------------------
    def program_level(self) -> None:
        p, chip = self.p, self.chip
        if p.cores_per_chip != chip.cores_per_chip and p.num_cores > min(p.cores_per_chip, chip.cores_per_chip):
            self.add(None, "cores_per_chip",
                     f"program has {p.cores_per_chip} cores per chip, chip {chip.name} has {chip.cores_per_chip} "
                     f"(its {p.num_cores} cores would map to chips differently)")
        nchips = p.num_chips
        used: dict[int, int] = {}
        for t in self.tensor_decls:
            if not (0 <= t.chip < nchips):
                self.add(None, f"tensor {t.name}", f"chip {t.chip} not in [0, {nchips}) (the program's chips)")
            used[t.chip] = used.get(t.chip, 0) + ((t.num_bytes + 4095) // 4096) * 4096
        cap = chip.hbm_bytes
        for c in sorted(used):
            if used[c] > cap:
                self.add(None, f"chip {c} hbm",
                         f"tensors need {used[c]} bytes, exceeds hbm.capacity_gib {chip.hbm.capacity_gib:g} "
                         f"({cap} bytes)")
        for g, members in p.groups.items():
            for m in members:
                if not (0 <= m < p.num_cores):
                    self.add(None, f"group {g}", f"member core {m} not in [0, {p.num_cores}) (num_cores)")

    # ---- per-AP properties (computed once over the deduplicated AP table) ---------------------------
    def ap_properties(self) -> None:
        aps = self.p.aps
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
        self.onchip, self.hbm_ap, self.tid_ok = onchip, hbm, tid_ok
        self.ap_chip = np.where(tid_ok, tchip[np.where(tid_ok, tid, nt)], -1)
        self.elements = pcount * free

        # engine-independent AP problems
        nparts = np.zeros(na, np.int64)
        bpp = np.zeros(na, np.float64)
        for sp, mem in self.mems.items():
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
        self.ap_bad = bad
        self.ap_probs: dict[int, list[tuple[str, str]]] = {}
        for a in np.flatnonzero(bad):
            a = int(a)
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
                self.ap_probs[a] = pr
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
            self.ap_probs[a] = pr

        # compute-engine-only AP problems: partition-start rule and free-size limit
        cbad_rule = np.zeros(na, bool)
        align = np.ones(na, np.int64)
        maxfree = np.full(na, 2**62, np.int64)
        for sp, mem in self.mems.items():
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
        self.cap_bad = cbad_rule | cbad_free
        self.cap_probs: dict[int, list[tuple[str, str]]] = {}
        for a in np.flatnonzero(self.cap_bad):
            a = int(a)
            pr = []
            sname = Space(int(space[a])).name
            if cbad_rule[a]:
                pr.append(("partition_start",
                           f"{int(pstart[a])} not a multiple of {int(align[a])} for {int(pcount[a])} partitions "
                           f"({sname}.partition_start_rules)"))
            if cbad_free[a]:
                pr.append(("free_size", f"{int(free[a])} elements per partition exceed "
                                        f"{sname}.max_free_elements {int(maxfree[a])}"))
            self.cap_probs[a] = pr
        # (engine, space) access denial
        self.deny = np.zeros((256, 4), bool)
        for sp, mem in self.mems.items():
            for e in mem.no_access_engines:
                self.deny[int(Engine[e]), sp] = True

    def ap_desc(self, a: int) -> str:
        sp = int(self.space[a])
        name = Space(sp).name if sp < 3 else f"space{sp}"
        if sp == int(Space.hbm) and self.tid_ok[a]:
            name = f"hbm.{self.tensor_names[int(self.tid[a])]}"
        return name

    def shape(self, a: int) -> tuple[int, ...]:
        return (int(self.pcount[a]), *(int(s) for s in self.sizes[a][: min(int(self.nd[a]), MAX_FREE_DIMS)]))

    # ---- instructions -------------------------------------------------------------------------------
    def instruction_level(self) -> None:
        ins, p = self.ins, self.p
        if self.n == 0:
            return
        op = ins["op"].astype(np.int64)
        eng = ins["engine"].astype(np.int64)
        core = ins["core"].astype(np.int64)
        queue = ins["queue"].astype(np.int64)
        allidx = np.arange(self.n)
        # opcode / engine
        bad_op = op >= _N_OPS
        self.emit(allidx, bad_op, "op", lambda k: f"unknown opcode {int(op[k])}")
        allowed = np.zeros((_N_OPS + 1, 256), bool)
        for o, spec in OPSPECS.items():
            for e in spec.engines:
                allowed[int(o), int(e)] = True
        bad_eng = ~bad_op & ~allowed[np.where(bad_op, _N_OPS, op), eng]

        def eng_msg(k: int) -> str:
            e = int(eng[k])
            ename = Engine(e).name if e < _N_ENG else f"engine code {e}"
            spec = OPSPECS[Op(int(op[k]))]
            return f"{ename} cannot run {spec.name} (allowed: {', '.join(x.name for x in spec.engines)})"

        self.emit(allidx, bad_eng, "engine", eng_msg)
        self.emit(allidx, core >= p.num_cores, "core",
                  lambda k: f"{int(core[k])} not in [0, {p.num_cores}) (num_cores)")
        nq = self.chip.dma.queues_per_core
        queued = _QUEUED[eng]
        self.emit(allidx, queued & (queue >= nq), "queue",
                  lambda k: f"{int(queue[k])} exceeds dma.queues_per_core {nq} (queues 0..{nq - 1})")
        self.emit(allidx, ~queued & (queue != 0), "queue",
                  lambda k: f"{int(queue[k])} but only dma and cc streams have queues (must be 0)")
        chip_of = core // p.cores_per_chip
        # group instructions by opcode
        order = np.argsort(ins["op"], kind="stable")  # uint8: radix sort
        sop = op[order]
        bounds = np.flatnonzero(np.diff(sop)) + 1
        for chunk in np.split(order, bounds):
            o = int(op[chunk[0]])
            if o >= _N_OPS:
                continue
            self.check_op(Op(o), chunk, eng[chunk], chip_of[chunk], core[chunk])

    def check_op(self, op: Op, idx: np.ndarray, eng: np.ndarray, chip_of: np.ndarray, core: np.ndarray) -> None:
        spec = OPSPECS[op]
        opnd = self.ins["opnd"][idx].astype(np.int64)
        na = self.na
        ok = np.ones(len(idx), bool)  # all present operands valid (index in range)
        cols: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        comp = _COMPUTE[eng]
        tensor_in = spec.engines == (Engine.tensor,)
        for k, slot in enumerate(spec.slots):
            a = opnd[:, k]
            pres = a >= 0
            oob = a >= na
            if not slot.optional:
                self.emit(idx, ~pres, slot.name, lambda _k, s=slot.name: f"required operand {s} is missing")
                ok &= pres
            self.emit(idx, oob, slot.name, lambda j, a=a: f"access-pattern index {int(a[j])} not in [0, {na})")
            ok &= ~oob
            valid = pres & ~oob
            aa = np.where(valid, a, 0)
            cols[slot.name] = aa
            present[slot.name] = valid
            if not valid.any():
                continue
            sp_ok = np.zeros(256, bool)
            for s in slot.spaces:
                sp_ok[int(s)] = True
            spc = self.space[aa]
            bad_sp = valid & ~sp_ok[np.minimum(spc, 255)]
            self.emit(idx, bad_sp, f"{slot.name}.space", lambda j, aa=aa, slot=slot: (
                f"{self.ap_desc(int(aa[j]))} not allowed for {spec.name}.{slot.name} "
                f"(allowed: {', '.join(s.name for s in sorted(slot.spaces))})"))
            dt_ok = np.zeros(_N_DT + 1, bool)
            for d in slot.dtypes:
                dt_ok[int(d)] = True
            if tensor_in and not slot.output:
                dt_ok &= self.te_dtypes
            dtc = np.minimum(self.dt[aa], _N_DT)

            def dt_msg(j: int, aa: np.ndarray = aa, slot: Slot = slot) -> str:
                d = int(self.dt[int(aa[j])])
                dname = DType(d).name if d < _N_DT else f"code {d}"
                if d < _N_DT and DType(d) in slot.dtypes:
                    return (f"{dname} not supported by the tensor engine (tensor_engine.macs_per_pe_per_cycle: "
                            f"{', '.join(self.chip.tensor_engine.macs_per_pe_per_cycle)})")
                return (f"{dname} not allowed for {spec.name}.{slot.name} "
                        f"(allowed: {', '.join(x.name for x in sorted(slot.dtypes))})")

            self.emit(idx, valid & (self.dt[aa] < _N_DT) & ~dt_ok[dtc], f"{slot.name}.dtype", dt_msg)
            # engine may not access the memory
            bad_acc = valid & self.deny[eng, np.minimum(spc, 3)]
            self.emit(idx, bad_acc, f"{slot.name}.space", lambda j, aa=aa: (
                f"engine {Engine(int(eng[j])).name} cannot access {Space(int(self.space[int(aa[j])])).name} "
                f"({Space(int(self.space[int(aa[j])])).name}.no_access_engines)"))
            # AP-level problems
            for j in np.flatnonzero(valid & self.ap_bad[aa]):
                for suf, msg in self.ap_probs[int(aa[j])]:
                    self.add(int(idx[j]), f"{slot.name}.{suf}", msg)
            for j in np.flatnonzero(valid & comp & self.cap_bad[aa]):
                for suf, msg in self.cap_probs[int(aa[j])]:
                    self.add(int(idx[j]), f"{slot.name}.{suf}", msg)
            # HBM tensor on the issuing core's chip
            apc = self.ap_chip[aa]
            bad_chip = valid & self.tid_ok[aa] & (apc != chip_of)
            self.emit(idx, bad_chip, f"{slot.name}.tensor", lambda j, aa=aa, apc=apc: (
                f"tensor {self.tensor_names[int(self.tid[int(aa[j])])]} is on chip {int(apc[j])}, "
                f"core {int(core[j])} is on chip {int(chip_of[j])}"))
        for k in range(len(spec.slots), MAX_OPERANDS):
            a = self.ins["opnd"][idx, k]
            self.emit(idx, a != -1, f"operand[{k}]", lambda j, a=a, k=k: (
                f"{spec.name} has {len(spec.slots)} operand slots; slot {k} holds {int(a[j])}"))
        fn = getattr(self, f"op_{op.name}", None)
        if fn is not None and ok.any():
            sel = np.flatnonzero(ok)
            fn(idx[sel], {s: c[sel] for s, c in cols.items()}, {s: c[sel] for s, c in present.items()},
               core[sel])

    # ---- opcode-specific rules (operands present and in range) -------------------------------------
    def _same_shape(self, idx: np.ndarray, cols: dict[str, np.ndarray], ref: str, other: str,
                    mask: np.ndarray | None = None) -> None:
        a, b = cols[ref], cols[other]
        bad = (self.pcount[a] != self.pcount[b]) | (self.nd[a] != self.nd[b]) | (self.sizes[a] != self.sizes[b]).any(1)
        if mask is not None:
            bad &= mask
        self.emit(idx, bad, f"{other}.shape", lambda j: (
            f"{_shape_str(self.shape(int(b[j])))} != {ref}.shape {_shape_str(self.shape(int(a[j])))}"))

    def _per_partition(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                       slot: str, ref: str) -> None:
        a, r = cols[slot], cols[ref]
        m = pres[slot]
        self.emit(idx, m & (self.free[a] != 1), f"{slot}.free_size",
                  lambda j: f"{int(self.free[int(a[j])])} elements per partition (a per-partition operand has 1)")
        self.emit(idx, m & (self.pcount[a] != self.pcount[r]), f"{slot}.partitions",
                  lambda j: f"{int(self.pcount[int(a[j])])} != {ref}.partitions {int(self.pcount[int(r[j])])}")

    def _one_bank(self, idx: np.ndarray, dst: np.ndarray) -> None:
        psum = self.chip.psum
        bank = psum.bytes_per_partition // psum.banks
        lo, hi = self.lo[dst], self.hi[dst]
        inb = (self.space[dst] == int(Space.psum)) & (lo >= 0) & (hi <= psum.bytes_per_partition)
        bad = inb & (np.floor_divide(lo, bank) != np.floor_divide(hi - 1, bank))
        self.emit(idx, bad, "dst.extent", lambda j: (
            f"bytes [{int(lo[j])}, {int(hi[j])}) cross a PSUM bank boundary (bank = psum.bytes_per_partition / "
            f"psum.banks = {bank} bytes)"))

    def op_matmul(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                  core: np.ndarray) -> None:
        te = self.chip.tensor_engine
        st, mv, dst = cols["stationary"], cols["moving"], cols["dst"]
        K, Km = self.pcount[st], self.pcount[mv]
        M, N = self.free[st], self.free[mv]
        self.emit(idx, K > te.rows, "stationary.partitions",
                  lambda j: f"K={int(K[j])} exceeds tensor_engine.rows {te.rows}")
        self.emit(idx, Km > te.rows, "moving.partitions",
                  lambda j: f"K={int(Km[j])} exceeds tensor_engine.rows {te.rows}")
        self.emit(idx, Km != K, "moving.partitions",
                  lambda j: f"{int(Km[j])} != stationary.partitions {int(K[j])} (contraction dim K)")
        self.emit(idx, M > te.cols, "stationary.free_size",
                  lambda j: f"M={int(M[j])} exceeds tensor_engine.cols {te.cols}")
        self.emit(idx, N > te.moving_free_max, "moving.free_size",
                  lambda j: f"N={int(N[j])} exceeds tensor_engine.moving_free_max {te.moving_free_max}")
        self.emit(idx, self.pcount[dst] != M, "dst.partitions",
                  lambda j: f"{int(self.pcount[dst[j]])} != M={int(M[j])} (stationary free size)")
        self.emit(idx, self.free[dst] != N, "dst.free_size",
                  lambda j: f"{int(self.free[dst[j]])} != N={int(N[j])} (moving free size)")
        self.emit(idx, self.dt[st] != self.dt[mv], "moving.dtype",
                  lambda j: f"{_dn(self.dt[mv[j]])} != stationary.dtype {_dn(self.dt[st[j]])}")
        self._one_bank(idx, dst)

    def op_transpose(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                     core: np.ndarray) -> None:
        te = self.chip.tensor_engine
        src, dst = cols["src"], cols["dst"]
        P, F = self.pcount[src], self.free[src]
        self.emit(idx, P > te.rows, "src.partitions", lambda j: f"P={int(P[j])} exceeds tensor_engine.rows {te.rows}")
        self.emit(idx, F > te.cols, "src.free_size", lambda j: f"F={int(F[j])} exceeds tensor_engine.cols {te.cols}")
        self.emit(idx, self.pcount[dst] != F, "dst.partitions",
                  lambda j: f"{int(self.pcount[dst[j]])} != F={int(F[j])} (src free size)")
        self.emit(idx, self.free[dst] != P, "dst.free_size",
                  lambda j: f"{int(self.free[dst[j]])} != P={int(P[j])} (src partitions)")
        self._one_bank(idx, dst)

    def op_tensor_tensor(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                         core: np.ndarray) -> None:
        self._same_shape(idx, cols, "dst", "in0")
        self._same_shape(idx, cols, "dst", "in1")
        ps = int(Space.psum)
        both = (self.space[cols["in0"]] == ps) & (self.space[cols["in1"]] == ps)
        self.emit(idx, both, "in1.space", lambda j: "in0 and in1 are both in psum (at most one PSUM input)")

    def op_tensor_scalar(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                         core: np.ndarray) -> None:
        self._same_shape(idx, cols, "dst", "src")
        self._per_partition(idx, cols, pres, "scalar0", "src")
        self._per_partition(idx, cols, pres, "scalar1", "src")

    def op_tensor_copy(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                       core: np.ndarray) -> None:
        self._same_shape(idx, cols, "dst", "src")

    def op_select(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                  core: np.ndarray) -> None:
        for s in ("pred", "on_true", "on_false"):
            self._same_shape(idx, cols, "dst", s)

    def op_activate(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                    core: np.ndarray) -> None:
        self._same_shape(idx, cols, "dst", "src")
        for s in ("bias", "scale", "reduce_dst"):
            self._per_partition(idx, cols, pres, s, "src")

    def op_dma_copy(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                    core: np.ndarray) -> None:
        src, dst = cols["src"], cols["dst"]
        ne_s, ne_d = self.elements[src], self.elements[dst]
        self.emit(idx, ne_s != ne_d, "src.num_elements", lambda j: f"{int(ne_s[j])} != dst elements {int(ne_d[j])}")

    def op_tensor_reduce(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                         core: np.ndarray) -> None:
        axes = self.ins["i0"][idx]
        src, dst = cols["src"], cols["dst"]
        for j in range(len(idx)):
            i, s, d, ax = int(idx[j]), int(src[j]), int(dst[j]), int(axes[j])
            nd = int(self.nd[s])
            if not (1 <= ax <= nd):
                self.add(i, "axes", f"{ax} not in [1, {nd}] (free dims of src)")
                continue
            sshape = self.shape(s)
            want = sshape[: 1 + nd - ax]
            got = self.shape(d)
            if len(want) == 1:
                fine = got[0] == want[0] and int(self.free[d]) == 1
                want_s = f"[{want[0]}, 1]"
            else:
                fine = got == want
                want_s = _shape_str(want)
            if not fine:
                self.add(i, "dst.shape", f"{_shape_str(got)} != {want_s} (src {_shape_str(sshape)} reduced over "
                                         f"its {ax} innermost free dims)")

    def op_iota(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                core: np.ndarray) -> None:
        nm = (self.ins["ints"][idx] != INTS_UNUSED).sum(axis=1)
        nd = self.nd[cols["dst"]]
        self.emit(idx, nm != nd, "multipliers", lambda j: f"{int(nm[j])} values != {int(nd[j])} free dims of dst")

    def _collective(self, idx: np.ndarray, cols: dict[str, np.ndarray], core: np.ndarray,
                    rule: Callable[[int, int, int], tuple[str, str] | None] | None) -> None:
        g = self.ins["i0"][idx]
        ng = len(self.group_names)
        for j in range(len(idx)):
            i, gi = int(idx[j]), int(g[j])
            if not (0 <= gi < ng):
                self.add(i, "group", f"group index {gi} not declared ({ng} groups)")
                continue
            name = self.group_names[gi]
            members = self.p.groups[name]
            if int(core[j]) not in members:
                self.add(i, "group", f"core {int(core[j])} is not a member of group {name} {list(members)}")
            if rule is not None:
                r = rule(int(cols["src"][j]), int(cols["dst"][j]), len(members))
                if r is not None:
                    self.add(i, *r)

    def op_all_reduce(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                      core: np.ndarray) -> None:
        def rule(s: int, d: int, n: int) -> tuple[str, str] | None:
            es, ed = int(self.elements[s]), int(self.elements[d])
            return None if es == ed else ("dst.num_elements", f"{ed} != src elements {es}")
        self._collective(idx, cols, core, rule)

    def op_all_gather(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                      core: np.ndarray) -> None:
        def rule(s: int, d: int, n: int) -> tuple[str, str] | None:
            es, ed = int(self.elements[s]), int(self.elements[d])
            return None if ed == n * es else ("dst.num_elements", f"{ed} != {n} members x src elements {es}")
        self._collective(idx, cols, core, rule)

    def op_reduce_scatter(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                          core: np.ndarray) -> None:
        def rule(s: int, d: int, n: int) -> tuple[str, str] | None:
            es, ed = int(self.elements[s]), int(self.elements[d])
            return None if es == n * ed else ("src.num_elements", f"{es} != {n} members x dst elements {ed}")
        self._collective(idx, cols, core, rule)

    def _peer(self, idx: np.ndarray) -> None:
        peer = self.ins["i0"][idx].astype(np.int64)
        nc = self.p.num_cores
        self.emit(idx, (peer < 0) | (peer >= nc), "peer", lambda j: f"{int(peer[j])} not in [0, {nc}) (num_cores)")

    def op_send(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                core: np.ndarray) -> None:
        self._peer(idx)

    def op_recv(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                core: np.ndarray) -> None:
        self._peer(idx)

    # ---- semaphores (static deadlock check) ---------------------------------------------------------
    def semaphores(self) -> None:
        ins, n = self.ins, self.n
        if n == 0:
            return
        ns = len(self.p.semaphores)
        names = self.p.semaphores
        allidx = np.arange(n)
        total = np.zeros(ns, np.float64)
        ssem = ins["ssem"].astype(np.int64)
        sval = ins["sval"].astype(np.float64)
        for k in range(ssem.shape[1]):
            s = ssem[:, k]
            self.emit(allidx, s >= ns, f"signal[{k}]", lambda j, s=s: f"semaphore index {int(s[j])} not declared "
                                                                       f"({ns} semaphores)")
            v = (s >= 0) & (s < ns)
            total += np.bincount(s[v], weights=sval[v, k], minlength=ns)[:ns]
        bar = np.flatnonzero(ins["op"] == int(Op.barrier))
        bsem = ins["i0"][bar].astype(np.int64)
        bcount = ins["i1"][bar].astype(np.int64)
        bvalid = (bsem >= 0) & (bsem < ns)
        total += np.bincount(bsem[bvalid], minlength=ns)[:ns]
        wsem = ins["wsem"].astype(np.int64)
        wval = ins["wval"].astype(np.float64)
        for k in range(wsem.shape[1]):
            s = wsem[:, k]
            self.emit(allidx, s >= ns, f"wait[{k}]", lambda j, s=s: f"semaphore index {int(s[j])} not declared "
                                                                     f"({ns} semaphores)")
            v = (s >= 0) & (s < ns)
            tot = np.where(v, total[np.where(v, s, 0)] if ns else 0.0, np.inf)
            self.emit(allidx, wval[:, k] > tot, f"wait[{k}]", lambda j, s=s, k=k: (
                f"waits for {names[int(s[j])]} >= {int(wval[j, k])} but all signals to {names[int(s[j])]} total "
                f"{int(total[int(s[j])])}: can never be satisfied (deadlock)"))
        # barriers
        first_count: dict[int, int] = {}
        seen: dict[tuple[int, int, int, int], int] = {}
        for j in range(len(bar)):
            i, s, c = int(bar[j]), int(bsem[j]), int(bcount[j])
            if not bvalid[j]:
                self.add(i, "sem", f"semaphore index {s} not declared ({ns} semaphores)")
                continue
            if c < 1:
                self.add(i, "count", f"{c} (a barrier counts at least 1 arrival)")
                continue
            fc = first_count.setdefault(s, c)
            if c != fc:
                self.add(i, "count", f"{c} != {fc}, the count of the first barrier on {names[s]}")
            r = ins[i]
            key = (int(r["core"]), int(r["engine"]), int(r["queue"]), s)
            kth = seen[key] = seen.get(key, 0) + 1
            if kth * c > total[s]:
                self.add(i, "count", f"barrier #{kth} of this stream on {names[s]} needs {names[s]} >= {kth * c} "
                                     f"but all arrivals and signals total {int(total[s])} (deadlock)")


def _dn(d: object) -> str:
    d = int(d)  # type: ignore[call-overload]
    return DType(d).name if d < _N_DT else f"dtype code {d}"
