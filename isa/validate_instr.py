"""Validation of instructions: stream fields, operand slots and the shape rules of each opcode.

Rules, checked column-wise with numpy over ``program.instr``, one opcode at a time:

* **Stream fields**: the opcode and engine are known and the engine may run the opcode (the opcode table,
  ``isa/opcodes.py``); ``core < num_cores``; compute and sync streams have queue 0, DMA and collective streams
  ``queue < dma.queues_per_core``.
* **Operand slots**: required slots present and every AP index in range; the space allowed by the slot; the
  dtype allowed by the slot and, for tensor-engine inputs, by ``tensor_engine.macs_per_pe_per_cycle``; the
  engine may access the memory (``no_access_engines``); the AP's own problems (``isa/validate_aps.py``); an HBM
  tensor on the issuing core's chip; no operand in a slot the opcode does not have.
* **Opcode rules** (``op_<name>`` methods, run on the instructions whose operands are all present and in
  range): shapes of element-wise and per-partition operands, the matmul and transpose limits and the PSUM bank,
  ``tensor_reduce`` axes, ``iota`` multipliers, ``dma_copy`` element counts, collective groups and sizes,
  send/recv peers.

The module docstring of ``isa/validate.py`` states every rule with its limits; this module implements the
per-instruction part. Left out: semaphores and program-level checks (``isa/validate.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from infsim.config.schema import ChipConfig

from .dtypes import DType
from .opcodes import MAX_OPERANDS, OPSPECS, Engine, Op, Slot, Space
from .program import Program
from .records import INTS_UNUSED, read_fields
from .validate_aps import ApTable
from .validate_report import QUEUED, Reporter

__all__ = ["InstructionRules"]

_N_DT = len(DType)
_N_OPS = len(Op)
_N_ENG = len(Engine)
_N_SPACES = len(Space)
_COMPUTE = np.zeros(256, bool)
for _e in (Engine.tensor, Engine.vector, Engine.scalar, Engine.gpsimd):
    _COMPUTE[int(_e)] = True

# element-count rule of each group collective: (src elements, dst elements, members) -> problem or None
_CollectiveRule = Callable[[int, int, int], "tuple[str, str] | None"]


def _same_count(es: int, ed: int, n: int) -> tuple[str, str] | None:
    return None if es == ed else ("dst.num_elements", f"{ed} != src elements {es}")


def _gathered(es: int, ed: int, n: int) -> tuple[str, str] | None:
    return None if ed == n * es else ("dst.num_elements", f"{ed} != {n} members x src elements {es}")


def _scattered(es: int, ed: int, n: int) -> tuple[str, str] | None:
    return None if es == n * ed else ("src.num_elements", f"{es} != {n} members x dst elements {ed}")


def _shape_str(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _dn(d: int | np.integer) -> str:
    code = int(d)
    return DType(code).name if code < _N_DT else f"dtype code {code}"


class InstructionRules:
    """The per-instruction rules of instructions ``lo..hi`` of ``program`` on ``chip`` (default: all);
    problems go to ``rep`` (call :meth:`run`). Inside, instruction positions are relative to ``lo`` (the
    rules index ``self.ins``, a view of the chunk); problems are reported at ``lo + position``.

    ``screen`` (default): the operand-slot rules run only on the rows a cheap screen cannot clear (one table
    lookup per slot, :meth:`_screen`); on a clean program that is none, and the problems found are the same
    as with ``screen=False`` (every rule on every row; tests compare the two)."""

    def __init__(self, rep: Reporter, program: Program, chip: ChipConfig, aps: ApTable, lo: int = 0,
                 hi: int | None = None, *, screen: bool = True):
        self.p = program
        self.screen = screen  # False: every slot rule on every row (the reference the screen is tested against)
        self.chip = chip
        self.aps = aps
        self.ins = program.instr[lo:hi]
        self.n = len(self.ins)
        self.lo = lo
        self._rep = rep
        self.group_names = list(program.groups)
        self.te_dtypes = np.zeros(_N_DT + 1, bool)
        for name in chip.tensor_engine.macs_per_pe_per_cycle:
            self.te_dtypes[int(DType[name])] = True

    def emit(self, idx: np.ndarray, mask: np.ndarray, field: str | Callable[[int], str],
             message: Callable[..., str]) -> None:
        """:meth:`Reporter.emit` at chunk positions ``idx``."""
        if mask.any():
            self._rep.emit(idx + self.lo, mask, field, message)

    def add(self, index: int, field: str, message: str) -> None:
        """:meth:`Reporter.add` at chunk position ``index``."""
        self._rep.add(index + self.lo, field, message)

    def run(self) -> None:
        """Check every instruction: stream fields, then per opcode the operand slots and the opcode's rules."""
        ins, p = self.ins, self.p
        if self.n == 0:
            return
        # (kept narrow: uint8/uint16 index the tables and compare with Python ints exactly, and stay small)
        op, eng, queue, core = read_fields(ins, "op", "engine", "queue", "core")
        # operand indices operand-major, so that each opcode's rows are gathered one operand at a time
        self.opnd_t = np.ascontiguousarray(read_fields(ins, "opnd")[0].T)  # (int32, as stored)
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
        queued = QUEUED[eng]
        self.emit(allidx, queued & (queue >= nq), "queue",
                  lambda k: f"{int(queue[k])} exceeds dma.queues_per_core {nq} (queues 0..{nq - 1})")
        self.emit(allidx, ~queued & (queue != 0), "queue",
                  lambda k: f"{int(queue[k])} but only dma and cc streams have queues (must be 0)")
        chip_of = core // np.int64(p.cores_per_chip)  # (int64: any cores_per_chip)
        # group instructions by opcode
        order = np.argsort(op, kind="stable")  # uint8: radix sort
        sop = op[order]
        bounds = np.flatnonzero(np.diff(sop)) + 1
        for chunk in np.split(order, bounds):
            code = int(op[chunk[0]])
            if code >= _N_OPS:
                continue
            self.check_op(Op(code), chunk, eng[chunk], chip_of[chunk], core[chunk])

    def check_op(self, op: Op, idx: np.ndarray, eng: np.ndarray, chip_of: np.ndarray, core: np.ndarray) -> None:
        """The operand-slot rules and the opcode's rules for the instructions ``idx`` of opcode ``op`` (streams
        ``eng``, chips ``chip_of``, cores ``core``). Rows the screen (:meth:`_screen`) passes cannot break a
        slot rule, so only the opcode's rules run on them; the others go through every slot rule."""
        spec = OPSPECS[op]
        opnd = np.take(self.opnd_t, idx, axis=1)  # [operand slot, row]
        if not self.screen:
            self._check_slots(op, idx, opnd, eng, chip_of, core)
            return
        clean = self._screen(op, opnd, eng, chip_of)
        if not clean.all():
            rest = np.flatnonzero(~clean)
            self._check_slots(op, idx[rest], opnd[:, rest], eng[rest], chip_of[rest], core[rest])
            sel = np.flatnonzero(clean)
            idx, opnd, core = idx[sel], opnd[:, sel], core[sel]
        fn = getattr(self, f"op_{op.name}", None)
        if fn is not None and len(idx):
            # screened rows: every operand present and in range, or absent from an optional slot
            cols = {s.name: np.maximum(opnd[k], 0) for k, s in enumerate(spec.slots)}
            pres = {s.name: opnd[k] >= 0 for k, s in enumerate(spec.slots)}
            fn(idx, cols, pres, core)

    def _screen(self, op: Op, opnd: np.ndarray, eng: np.ndarray, chip_of: np.ndarray) -> np.ndarray:
        """Rows (instructions of opcode ``op``, operand indices ``opnd[slot, row]``) for which :meth:`_check_slots`
        would report nothing and find every operand present and in range or absent from an optional slot:
        a per-slot table over the AP table (:meth:`_slot_table`) gathered once per slot, instead of every
        rule's own gathers. Conservative: a row it rejects may still be fine (the slot rules decide)."""
        spec = OPSPECS[op]
        n = opnd.shape[1]
        engines = sorted({int(e) for e in spec.engines})
        counts = np.bincount(eng, minlength=256)
        present = [e for e in engines if counts[e]]
        if not present:  # rows of engines that may not run the opcode: the slot rules decide
            return np.zeros(n, bool)
        pos = np.full(256, -1, np.int64)
        pos[present] = np.arange(len(present))
        epos = pos[eng]  # row -> position of its engine in ``present`` (-1: not one the opcode allows)
        c_lo, c_hi = int(chip_of.min()), int(chip_of.max())
        chip = c_lo if c_lo == c_hi else None  # one chip: folded into the tables
        na2 = self.aps.na + 2
        clean = epos >= 0
        for k in range(len(spec.slots)):
            a1 = np.clip(opnd[k], -1, na2 - 2) + 1  # table index: 0 absent, 1 + AP, na + 1 out of range
            tabs = [self._slot_table(op, k, e, chip) for e in present]
            if len(tabs) == 1:
                clean &= tabs[0][a1]
            else:
                clean &= np.concatenate(tabs)[np.maximum(epos, 0) * na2 + a1]
            if chip is None:  # HBM tensors on the issuing core's chip, row by row
                tch = self.aps.tensor_chip_ext[a1]
                clean &= (tch < 0) | (tch == chip_of)
        for k in range(len(spec.slots), MAX_OPERANDS):
            clean &= opnd[k] == -1
        return clean

    def _slot_table(self, op: Op, k: int, e: int, chip: int | None) -> np.ndarray:
        """Per table index (0: no operand, ``1 + a``: AP ``a``, ``na + 1``: out of range) whether slot ``k``
        of ``op`` on engine ``e`` passes every slot rule of :meth:`_check_slots` (HBM tensors on ``chip``,
        unless ``None``: checked per row); memoised on the :class:`ApTable`, shared by the chunks."""
        key = (int(op), k, e, chip)
        memo = self.aps.screens
        t = memo.get(key)
        if t is not None:
            return t
        aps = self.aps
        spec = OPSPECS[op]
        slot = spec.slots[k]
        # (space, dtype) pairs the slot accepts on this engine; unknown codes (last row/column) never pass
        ok = np.zeros((_N_SPACES + 1, _N_DT + 1), bool)
        dts = [int(d) for d in slot.dtypes
               if not (spec.engines == (Engine.tensor,) and not slot.output) or self.te_dtypes[int(d)]]
        for s in slot.spaces:
            if not aps.deny[e, int(s)]:
                ok[int(s), dts] = True
        fine = ok.ravel()[aps.space_dtype] & ~aps.bad
        if _COMPUTE[e]:
            fine &= ~aps.compute_bad
        if chip is not None:
            fine &= (aps.tensor_chip < 0) | (aps.tensor_chip == chip)
        t = memo[key] = np.concatenate([[slot.optional], fine, [False]])
        return t

    def _check_slots(self, op: Op, idx: np.ndarray, opnd: np.ndarray, eng: np.ndarray, chip_of: np.ndarray,
                     core: np.ndarray) -> None:
        """Every operand-slot rule of the instructions ``idx`` (operand indices ``opnd[slot, row]``), then the opcode's
        rules on those whose operands are all present and in range."""
        aps = self.aps
        spec = OPSPECS[op]
        na = aps.na
        ok = np.ones(len(idx), bool)  # all present operands valid (index in range)
        cols: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        comp = _COMPUTE[eng]
        tensor_in = spec.engines == (Engine.tensor,)
        for k, slot in enumerate(spec.slots):
            a = opnd[k]
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
            spc = aps.space[aa]
            bad_sp = valid & ~sp_ok[np.minimum(spc, 255)]
            self.emit(idx, bad_sp, f"{slot.name}.space", lambda j, aa=aa, slot=slot: (
                f"{aps.desc(int(aa[j]))} not allowed for {spec.name}.{slot.name} "
                f"(allowed: {', '.join(s.name for s in sorted(slot.spaces))})"))
            dt_ok = np.zeros(_N_DT + 1, bool)
            for d in slot.dtypes:
                dt_ok[int(d)] = True
            if tensor_in and not slot.output:
                dt_ok &= self.te_dtypes
            dtc = np.minimum(aps.dt[aa], _N_DT)

            def dt_msg(j: int, aa: np.ndarray = aa, slot: Slot = slot) -> str:
                d = int(aps.dt[int(aa[j])])
                dname = DType(d).name if d < _N_DT else f"code {d}"
                if d < _N_DT and DType(d) in slot.dtypes:
                    return (f"{dname} not supported by the tensor engine (tensor_engine.macs_per_pe_per_cycle: "
                            f"{', '.join(self.chip.tensor_engine.macs_per_pe_per_cycle)})")
                return (f"{dname} not allowed for {spec.name}.{slot.name} "
                        f"(allowed: {', '.join(x.name for x in sorted(slot.dtypes))})")

            self.emit(idx, valid & (aps.dt[aa] < _N_DT) & ~dt_ok[dtc], f"{slot.name}.dtype", dt_msg)
            # engine may not access the memory
            bad_acc = valid & aps.deny[eng, np.minimum(spc, 3)]
            self.emit(idx, bad_acc, f"{slot.name}.space", lambda j, aa=aa: (
                f"engine {Engine(int(eng[j])).name} cannot access {Space(int(aps.space[int(aa[j])])).name} "
                f"({Space(int(aps.space[int(aa[j])])).name}.no_access_engines)"))
            # AP-level problems
            for j in np.flatnonzero(valid & aps.bad[aa]):
                for suf, msg in aps.problems[int(aa[j])]:
                    self.add(int(idx[j]), f"{slot.name}.{suf}", msg)
            for j in np.flatnonzero(valid & comp & aps.compute_bad[aa]):
                for suf, msg in aps.compute_problems[int(aa[j])]:
                    self.add(int(idx[j]), f"{slot.name}.{suf}", msg)
            # HBM tensor on the issuing core's chip
            apc = aps.tensor_chip[aa]
            bad_chip = valid & aps.tid_ok[aa] & (apc != chip_of)
            self.emit(idx, bad_chip, f"{slot.name}.tensor", lambda j, aa=aa, apc=apc: (
                f"tensor {aps.tensor_names[int(aps.tid[int(aa[j])])]} is on chip {int(apc[j])}, "
                f"core {int(core[j])} is on chip {int(chip_of[j])}"))
        for k in range(len(spec.slots), MAX_OPERANDS):
            a = opnd[k]
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
        aps = self.aps
        a, b = cols[ref], cols[other]
        bad = (aps.pcount[a] != aps.pcount[b]) | (aps.nd[a] != aps.nd[b]) | (aps.sizes[a] != aps.sizes[b]).any(1)
        if mask is not None:
            bad &= mask
        self.emit(idx, bad, f"{other}.shape", lambda j: (
            f"{_shape_str(aps.shape(int(b[j])))} != {ref}.shape {_shape_str(aps.shape(int(a[j])))}"))

    def _per_partition(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                       slot: str, ref: str) -> None:
        aps = self.aps
        a, r = cols[slot], cols[ref]
        m = pres[slot]
        self.emit(idx, m & (aps.free[a] != 1), f"{slot}.free_size",
                  lambda j: f"{int(aps.free[int(a[j])])} elements per partition (a per-partition operand has 1)")
        self.emit(idx, m & (aps.pcount[a] != aps.pcount[r]), f"{slot}.partitions",
                  lambda j: f"{int(aps.pcount[int(a[j])])} != {ref}.partitions {int(aps.pcount[int(r[j])])}")

    def _one_bank(self, idx: np.ndarray, dst: np.ndarray) -> None:
        aps = self.aps
        psum = self.chip.psum
        bank = psum.bytes_per_partition // psum.banks
        crossing = aps.screens.get("psum_bank_crossing")  # per AP, once per check (memo shared by the chunks)
        if crossing is None:
            inb = (aps.space == int(Space.psum)) & (aps.lo >= 0) & (aps.hi <= psum.bytes_per_partition)
            crossing = aps.screens["psum_bank_crossing"] = inb & (
                np.floor_divide(aps.lo, bank) != np.floor_divide(aps.hi - 1, bank))
        lo, hi = aps.lo, aps.hi
        self.emit(idx, crossing[dst], "dst.extent", lambda j: (
            f"bytes [{int(lo[dst[j]])}, {int(hi[dst[j]])}) cross a PSUM bank boundary (bank = "
            f"psum.bytes_per_partition / psum.banks = {bank} bytes)"))

    def op_matmul(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                  core: np.ndarray) -> None:
        aps = self.aps
        te = self.chip.tensor_engine
        st, mv, dst = cols["stationary"], cols["moving"], cols["dst"]
        K, Km = aps.pcount[st], aps.pcount[mv]
        M, N = aps.free[st], aps.free[mv]
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
        self.emit(idx, aps.pcount[dst] != M, "dst.partitions",
                  lambda j: f"{int(aps.pcount[dst[j]])} != M={int(M[j])} (stationary free size)")
        self.emit(idx, aps.free[dst] != N, "dst.free_size",
                  lambda j: f"{int(aps.free[dst[j]])} != N={int(N[j])} (moving free size)")
        self.emit(idx, aps.dt[st] != aps.dt[mv], "moving.dtype",
                  lambda j: f"{_dn(aps.dt[mv[j]])} != stationary.dtype {_dn(aps.dt[st[j]])}")
        self._one_bank(idx, dst)

    def op_transpose(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                     core: np.ndarray) -> None:
        aps = self.aps
        te = self.chip.tensor_engine
        src, dst = cols["src"], cols["dst"]
        P, F = aps.pcount[src], aps.free[src]
        self.emit(idx, P > te.rows, "src.partitions", lambda j: f"P={int(P[j])} exceeds tensor_engine.rows {te.rows}")
        self.emit(idx, F > te.cols, "src.free_size", lambda j: f"F={int(F[j])} exceeds tensor_engine.cols {te.cols}")
        self.emit(idx, aps.pcount[dst] != F, "dst.partitions",
                  lambda j: f"{int(aps.pcount[dst[j]])} != F={int(F[j])} (src free size)")
        self.emit(idx, aps.free[dst] != P, "dst.free_size",
                  lambda j: f"{int(aps.free[dst[j]])} != P={int(P[j])} (src partitions)")
        self._one_bank(idx, dst)

    def op_tensor_tensor(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                         core: np.ndarray) -> None:
        aps = self.aps
        self._same_shape(idx, cols, "dst", "in0")
        self._same_shape(idx, cols, "dst", "in1")
        ps = int(Space.psum)
        both = (aps.space[cols["in0"]] == ps) & (aps.space[cols["in1"]] == ps)
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
        aps = self.aps
        src, dst = cols["src"], cols["dst"]
        ne_s, ne_d = aps.elements[src], aps.elements[dst]
        self.emit(idx, ne_s != ne_d, "src.num_elements", lambda j: f"{int(ne_s[j])} != dst elements {int(ne_d[j])}")

    def op_tensor_reduce(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                         core: np.ndarray) -> None:
        aps = self.aps
        axes = self.ins["i0"][idx]
        src, dst = cols["src"], cols["dst"]
        for j in range(len(idx)):
            i, s, d, ax = int(idx[j]), int(src[j]), int(dst[j]), int(axes[j])
            nd = int(aps.nd[s])
            if not (1 <= ax <= nd):
                self.add(i, "axes", f"{ax} not in [1, {nd}] (free dims of src)")
                continue
            sshape = aps.shape(s)
            want = sshape[: 1 + nd - ax]
            got = aps.shape(d)
            if len(want) == 1:
                fine = got[0] == want[0] and int(aps.free[d]) == 1
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
        nd = self.aps.nd[cols["dst"]]
        self.emit(idx, nm != nd, "multipliers", lambda j: f"{int(nm[j])} values != {int(nd[j])} free dims of dst")

    def _collective(self, idx: np.ndarray, cols: dict[str, np.ndarray], core: np.ndarray,
                    rule: _CollectiveRule) -> None:
        """The group exists and holds the issuing core; ``rule`` checks the element counts of src and dst."""
        g = self.ins["i0"][idx]
        elements = self.aps.elements
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
            r = rule(int(elements[cols["src"][j]]), int(elements[cols["dst"][j]]), len(members))
            if r is not None:
                self.add(i, *r)

    def op_all_reduce(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                      core: np.ndarray) -> None:
        self._collective(idx, cols, core, _same_count)

    def op_all_gather(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                      core: np.ndarray) -> None:
        self._collective(idx, cols, core, _gathered)

    def op_reduce_scatter(self, idx: np.ndarray, cols: dict[str, np.ndarray], pres: dict[str, np.ndarray],
                          core: np.ndarray) -> None:
        self._collective(idx, cols, core, _scattered)

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
