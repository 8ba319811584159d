"""Programs: per-core, per-engine instruction streams plus named HBM tensors, semaphores and groups.

In-memory representation
------------------------
Real programs are large (a Llama-2-7B decode step is ~10^6 instructions), so a :class:`Program`
stores its instructions column-wise in two numpy structured arrays, which are also the binary
encoding (``isa/encoding.py`` writes them out as they are):

* ``instr`` (:data:`INSTR_DTYPE`, fixed width): opcode, engine, core, queue, immediates, operand
  indices, semaphore waits/signals;
* ``aps`` (:data:`AP_DTYPE`, fixed width): the distinct access patterns, deduplicated while the
  program is built (lowered programs cycle through a few SBUF buffers, so most operands repeat).

The record layouts, and where each immediate lives in a record, are in ``isa/records.py``.
:class:`Instruction` (``isa/instruction.py``) is the readable, typed view of one record, built on demand
(``program[i]``, iteration); builders append :class:`Instruction` objects with
:meth:`Program.append` or fill records in bulk with :meth:`Program.append_records`.

Streams
-------
Each instruction belongs to the stream ``(core, engine, queue)``; ``queue`` numbers the DMA and
collective queues of a core (0 for the compute engines). A stream executes its instructions in
program order (each sees the effects of the stream's earlier instructions); streams interact only
through semaphores (and collectives).

Semaphores
----------
1. A semaphore is a program-wide counter starting at 0. ``waits`` of an instruction are
   ``(sem, value)`` pairs: the instruction may not start before ``sem >= value``. Waits block the
   stream's in-order issue (its later instructions do not start either).
2. ``signals`` are ``(sem, increment)`` pairs, applied when the instruction completes, and **the
   signals of one stream are applied in program order**: instruction ``i``'s signals take effect at
   ``max(finish_i, the time the previous signalling instruction of the same stream applied its
   signals)``. A timed model whose instructions of one stream finish out of order (a zero-latency
   ``nop`` or a short matmul overtaking a long one) holds the later signals back until the earlier
   ones are applied. So when one stream is the only signaller of a semaphore, ``sem >= v`` means
   exactly "the signalling instruction of that stream whose increments bring the total to ``v`` has
   completed, and every earlier one too" (with one ``+1`` per instruction: the ``v``-th has
   completed). A ``barrier``'s arrival increment is the barrier's own mechanism, applied when it
   arrives, outside this order.
3. Counters only grow, so every run of a program has the same semantics whatever the timing. A
   consequence producers of programs may use: a wait ``(sem, v)`` is implied by an earlier wait
   ``(sem, v')`` of the same stream with ``v' >= v`` (the stream issues in order), and can be dropped
   together with ``nop`` instructions that exist only to carry such waits.

This is the model of NeuronCore hardware semaphores ([NKI-PERF] in ``docs/references.md``: counters
compared against a value, increments at instruction completion; that one engine's increments retire
in order is implied by the compiler's counting scheme, not documented). The reference interpreter
(:mod:`infsim.isa.interp`) completes one instruction at a time per stream, in program order, and so
applies signals in program order.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import repeat
from typing import cast

import numpy as np

from .dtypes import DType
from .errors import IsaError, OperandError
from .instruction import Instruction, make, normalize_imms
from .opcodes import MAX_FREE_DIMS, MAX_OPERANDS, MAX_SIGNALS, MAX_WAITS, OPSPECS, Engine, Op, Space
from .operand import U32_MAX, AccessPattern
from .records import (
    AP_DTYPE,
    ENUM_KINDS,
    IMM_FIELDS,
    IMM_PLAN,
    INSTR_DTYPE,
    INTS_ALL_UNUSED,
    INTS_UNUSED,
    REC_STRUCT,
    copy_records,
    decode_imms,
)

# Instruction, make and normalize_imms (isa/instruction.py) and the record layouts (isa/records.py) are also
# importable from here, where they were defined before those modules existed.
__all__ = ["Program", "TensorDecl", "TensorKind", "Instruction", "make", "normalize_imms", "AP_DTYPE",
           "INSTR_DTYPE", "INTS_UNUSED", "ENUM_KINDS", "IMM_FIELDS", "LIKE_TAIL", "NO_OPERANDS", "pack_like"]


class TensorKind(IntEnum):
    """The role of an HBM tensor: filled by the caller (input, weight), read back (output) or neither."""

    input = 0
    weight = 1
    output = 2
    scratch = 3


@dataclass(frozen=True)
class TensorDecl:
    """A named HBM tensor: dtype, shape, role and the chip whose HBM holds it."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    kind: TensorKind = TensorKind.scratch
    chip: int = 0

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def num_bytes(self) -> int:
        return self.num_elements * self.dtype.itemsize


class Program:
    """An ISA program (see the module docstring for the representation)."""

    _CHUNK = 1 << 14

    def __init__(self, num_cores: int = 1, cores_per_chip: int = 1):
        if num_cores < 1 or cores_per_chip < 1:
            raise IsaError("num_cores and cores_per_chip must be >= 1")
        self.num_cores = int(num_cores)
        self.cores_per_chip = int(cores_per_chip)
        self.tensors: dict[str, TensorDecl] = {}
        self._tensor_index: dict[str, int] = {}
        self.semaphores: list[str] = []
        self._sem_index: dict[str, int] = {}
        self.groups: dict[str, tuple[int, ...]] = {}
        self._group_index: dict[str, int] = {}
        self._instr = np.zeros(self._CHUNK, INSTR_DTYPE)
        self._n = 0
        self._instr_buf: tuple[np.ndarray, memoryview] | None = None  # (table, its bytes) for append
        self._aps = np.zeros(256, AP_DTYPE)
        self._naps = 0
        self._ap_index: dict[AccessPattern, int] = {}  # a cache of _ap_rows for AccessPattern objects
        self._aps_buf: tuple[np.ndarray, memoryview] | None = None  # (AP table, its bytes) for ap_id
        # record bytes -> first AP-table index (the deduplication); None: not built yet (see _rows)
        self._ap_rows: dict[bytes, int] | None = {}
        self._streams_cache: dict[tuple[int, int, int], np.ndarray] | None = None
        self._stream_order: np.ndarray | None = None

    # ---- declarations ---------------------------------------------------------------------------
    @property
    def num_chips(self) -> int:
        return (self.num_cores + self.cores_per_chip - 1) // self.cores_per_chip

    def chip_of_core(self, core: int) -> int:
        return core // self.cores_per_chip

    def add_tensor(self, name: str, dtype: DType | str, shape: Sequence[int],
                   kind: TensorKind | str = TensorKind.scratch, chip: int = 0) -> TensorDecl:
        if name in self.tensors:
            raise IsaError(f"tensor '{name}' declared twice")
        if not _is_ident(name):
            raise IsaError(f"tensor name '{name}' is not an identifier")
        dt = DType.parse(dtype) if isinstance(dtype, str) else DType(dtype)
        kd = TensorKind[kind] if isinstance(kind, str) else TensorKind(kind)
        shp = tuple(int(s) for s in shape)
        if not shp or any(s < 1 for s in shp):
            raise IsaError(f"tensor '{name}': shape {shp} must be non-empty with positive sizes")
        t = TensorDecl(name, dt, shp, kd, int(chip))
        self._tensor_index[name] = len(self.tensors)
        self.tensors[name] = t
        return t

    def add_semaphore(self, name: str) -> int:
        if name in self._sem_index:
            raise IsaError(f"semaphore '{name}' declared twice")
        if not _is_ident(name):
            raise IsaError(f"semaphore name '{name}' is not an identifier")
        self._sem_index[name] = len(self.semaphores)
        self.semaphores.append(name)
        return self._sem_index[name]

    def semaphore(self, name: str) -> int:
        """Index of semaphore ``name``, declaring it if new."""
        i = self._sem_index.get(name)
        return self.add_semaphore(name) if i is None else i

    def add_group(self, name: str, cores: Sequence[int]) -> None:
        if name in self.groups:
            raise IsaError(f"group '{name}' declared twice")
        if not _is_ident(name):
            raise IsaError(f"group name '{name}' is not an identifier")
        members = tuple(int(c) for c in cores)
        if len(members) < 1 or len(set(members)) != len(members):
            raise IsaError(f"group '{name}': members {members} must be distinct and non-empty")
        self._group_index[name] = len(self.groups)
        self.groups[name] = members

    def tensor_id(self, name: str) -> int:
        return self._tensor_index[name]

    def sem_id(self, name: str) -> int:
        return self._sem_index[name]

    def group_id(self, name: str) -> int:
        return self._group_index[name]

    def tensor_base(self) -> dict[str, int]:
        """Byte address of every HBM tensor in its chip's HBM (declaration order, 4 KiB aligned)."""
        nxt: dict[int, int] = {}
        out = {}
        for t in self.tensors.values():
            a = nxt.get(t.chip, 0)
            out[t.name] = a
            nxt[t.chip] = a + ((t.num_bytes + 4095) // 4096) * 4096
        return out

    # ---- instructions ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def instr(self) -> np.ndarray:
        """The instruction records (a view; do not modify)."""
        return self._instr[: self._n]

    @property
    def aps(self) -> np.ndarray:
        """The access-pattern table (a view; do not modify)."""
        return self._aps[: self._naps]

    def _grow_instr(self, extra: int) -> None:
        need = self._n + extra
        if need > len(self._instr):
            self._resize_instr(max(need, 2 * len(self._instr)))

    def _resize_instr(self, cap: int) -> None:
        new = np.zeros(cap, INSTR_DTYPE)  # (calloc: the unused tail's pages are not touched until written)
        copy_records(new[: self._n], self._instr[: self._n])
        self._instr = new

    def _grow_aps(self, extra: int) -> None:
        """Room for ``extra`` more AP-table rows (the table at least doubles when it grows)."""
        need = self._naps + extra
        if need > len(self._aps):
            new = np.zeros(max(need, 2 * len(self._aps)), AP_DTYPE)
            copy_records(new[: self._naps], self._aps[: self._naps])
            self._aps = new

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more instructions in one step (bulk builders that know how many they will
        append call this instead of letting the table double: no doubling peak, one copy)."""
        if extra > 0 and self._n + extra > len(self._instr):
            self._resize_instr(self._n + extra)

    def _rows(self) -> dict[bytes, int]:
        """The deduplication index of the AP table (built on first use after :meth:`install_tables`)."""
        if self._ap_rows is None:
            rows: dict[bytes, int] = {}
            deque(map(rows.setdefault, _row_keys(self.aps), range(self._naps)), maxlen=0)  # first index wins
            self._ap_rows = rows
        return self._ap_rows

    def install_tables(self, instr: np.ndarray, aps: np.ndarray, *, adopt: bool = False) -> None:
        """Replace the instruction and AP tables by copies of ``instr`` and ``aps`` (bulk path for decoders
        and caches: indices are not checked here; :func:`~infsim.isa.encoding.decode` checks them first),
        or by the arrays themselves with ``adopt`` (writable arrays of the record dtypes that the caller
        hands over). Appending afterwards deduplicates against the installed AP table."""
        naps, n = len(aps), len(instr)
        if adopt and instr.dtype == INSTR_DTYPE and aps.dtype == AP_DTYPE and instr.flags.writeable \
                and aps.flags.writeable and n and naps:
            self._aps, self._instr = aps, instr
        else:
            self._aps = np.zeros(max(naps, 256), AP_DTYPE)
            self._aps[:naps] = aps
            self._instr = np.zeros(max(n, 1), INSTR_DTYPE)
            copy_records(self._instr[:n], np.asarray(instr, INSTR_DTYPE))
        self._naps = naps
        self._n = n
        self._streams_cache = None
        self.drop_build_indexes()  # rebuilt from the installed tables on the next append

    def drop_build_indexes(self) -> None:
        """Free the indexes that only appending uses (the AP deduplication dictionaries, rebuilt on the next
        append): a lowered program about to be simulated holds ~100 MB of them on a 70B step."""
        self._instr_buf = None
        self._aps_buf = None
        self._ap_index = {}
        self._ap_rows = None

    def ap_id(self, ap: AccessPattern, remember: bool = True) -> int:
        """Index of ``ap`` in the AP table (added if new: the table holds each access pattern once, in
        order of first use, whether it was added here or by :meth:`intern_aps`). ``remember=False``: a caller
        that remembers the index itself (per view) skips the lookup by the access pattern's value (a hash of
        all its fields), going straight to the table's row deduplication."""
        if remember:
            i = self._ap_index.get(ap)
            if i is not None:
                return i
        if ap.space == Space.hbm:
            if ap.tensor not in self._tensor_index:
                raise OperandError(f"operand names undeclared HBM tensor '{ap.tensor}'")
            tid = self._tensor_index[ap.tensor]
        else:
            tid = -1
        dims = ap.dims
        pad = _NO_DIMS[len(dims):]
        key = _AP_STRUCT.pack(int(ap.space), int(ap.dtype), len(dims), ap.partition_start, ap.partitions, tid,
                              ap.partition_stride, ap.offset, *[st for st, _ in dims], *pad,
                              *[sz for _, sz in dims], *pad)
        known = self._rows()
        i = known.get(key)
        if i is None:  # new: the row goes at the table's end
            self._grow_aps(1)
            i = self._naps
            buf = self._aps_buf
            if buf is None or buf[0] is not self._aps:  # the table was replaced (growth, decoding)
                buf = self._aps_buf = (self._aps, self._aps.view(np.uint8).data)
            buf[1][i * _AP_STRUCT.size : (i + 1) * _AP_STRUCT.size] = key
            self._naps += 1
            known[key] = i
        if remember:
            self._ap_index[ap] = i
        return i

    def intern_aps(self, rows: np.ndarray) -> np.ndarray:
        """AP-table indices of access-pattern records ``rows`` (bulk path), each added if new, in order:
        the table is the same as if the access patterns had been used one by one through :meth:`ap_id`.
        The records must be canonical (unused ``strides``/``sizes`` entries 0, ``tensor`` -1 on chip)."""
        rows = np.ascontiguousarray(rows, AP_DTYPE)
        keys = _row_keys(rows)
        known = self._rows()
        # (the per-row work runs inside map and dict calls, not in a Python loop: ~2x faster)
        out = np.fromiter(map(known.get, keys, repeat(-1)), np.int64, len(keys))
        miss = np.flatnonzero(out < 0)
        if not len(miss):
            return out
        every = len(miss) == len(keys)
        miss_keys = keys if every else [keys[k] for k in miss.tolist()]
        first = dict.fromkeys(miss_keys)  # the distinct new rows, in order of first use
        start, nxt = self._naps, self._naps + len(first)
        new = dict(zip(first, range(start, nxt)))
        known.update(new)
        self._grow_aps(nxt - start)
        if len(first) == len(miss_keys):  # no row twice: they follow the table's end in order
            out[miss] = np.arange(start, nxt)
            copy_records(self._aps[start:nxt], rows if every else rows[miss])
        else:
            out[miss] = np.fromiter(map(new.__getitem__, miss_keys), np.int64, len(miss_keys))
            self._aps[start:nxt] = np.frombuffer(b"".join(new), AP_DTYPE)
        self._naps = nxt
        return out

    def append(self, ins: Instruction) -> int:
        """Append one instruction; returns its index."""
        self._streams_cache = None
        spec = OPSPECS[ins.op]
        eng = ins.engine if ins.engine is not None else spec.engine
        if eng not in spec.engines:
            raise OperandError(
                f"instruction {self._n}: {ins.op.name} cannot run on engine '{Engine(eng).name}' "
                f"(allowed: {', '.join(e.name for e in spec.engines)})"
            )
        if not (0 <= ins.core <= 0xFFFF):
            raise OperandError(f"instruction {self._n}: core {ins.core} not in [0, 65535]")
        if not (0 <= ins.queue <= 0xFF):
            raise OperandError(f"instruction {self._n}: queue {ins.queue} not in [0, 255]")
        if len(ins.operands) != len(spec.slots):
            raise OperandError(
                f"instruction {self._n}: {ins.op.name} takes {len(spec.slots)} operand slots, got {len(ins.operands)}"
            )
        if len(ins.waits) > MAX_WAITS or len(ins.signals) > MAX_SIGNALS:
            raise OperandError(f"instruction {self._n}: at most {MAX_WAITS} waits and {MAX_SIGNALS} signals")
        opnd = [-1] * MAX_OPERANDS
        ap_index = self._ap_index
        for k, (slot, ap) in enumerate(zip(spec.slots, ins.operands)):
            if ap is None:
                if not slot.optional:
                    raise OperandError(f"instruction {self._n}: {ins.op.name} operand '{slot.name}' is required")
                continue
            i = ap_index.get(ap)
            opnd[k] = self.ap_id(ap) if i is None else i
        imms = normalize_imms(spec, ins.imms) if spec.imms else ins.imms
        if not spec.imms and imms:
            normalize_imms(spec, imms)  # raises: unknown immediate
        # the record is packed from plain values in INSTR_DTYPE field order (see REC_STRUCT)
        fv = [0, 0, 0, 0, 0.0, 0.0]  # e0 e1 i0 i1 f0 f1
        ints: Sequence[int] = INTS_ALL_UNUSED
        flags = 0
        for name, kind, f, pos in IMM_PLAN[ins.op]:
            v = imms[name]
            if kind == "sem":
                fv[pos] = self.semaphore(str(v))
            elif kind == "group":
                if v not in self._group_index:
                    raise OperandError(f"instruction {self._n}: undeclared replica group '{v}'")
                fv[pos] = self._group_index[str(v)]
            elif kind == "bool":
                flags |= int(bool(v)) << int(f[4:])
            elif kind == "ints":
                iv = cast(tuple[int, ...], v)  # normalize_imms made kind "ints" a tuple of ints
                vals = list(iv) + [INTS_UNUSED] * (MAX_FREE_DIMS - len(iv))
                for x in iv:
                    if not (-(2**31) < x < 2**31):
                        raise OperandError(f"instruction {self._n}: immediate '{name}' value {x} out of int32 range")
                ints = vals
            elif kind == "int":
                n = cast(int, v)  # normalize_imms made kind "int" an int
                if not (-(2**63) <= n < 2**63):
                    raise OperandError(f"instruction {self._n}: immediate '{name}' out of int64 range")
                fv[pos] = n
            elif kind == "float":
                fv[pos] = cast(float, v)  # normalize_imms made kind "float" a float
            else:
                fv[pos] = int(cast(IntEnum, v))  # normalize_imms made the enum kinds members of their enum
        sem_index = self._sem_index
        ws, wv = [-1] * MAX_WAITS, [0] * MAX_WAITS
        for k, (s, v) in enumerate(ins.waits):
            if not (0 <= v <= U32_MAX):
                raise OperandError(f"instruction {self._n}: wait value {v} on '{s}' not in [0, 2^32-1]")
            i = sem_index.get(s)
            ws[k], wv[k] = self.semaphore(s) if i is None else i, v
        ss, sv = [-1] * MAX_SIGNALS, [0] * MAX_SIGNALS
        for k, (s, v) in enumerate(ins.signals):
            if not (0 <= v <= U32_MAX):
                raise OperandError(f"instruction {self._n}: signal increment {v} on '{s}' not in [0, 2^32-1]")
            i = sem_index.get(s)
            ss[k], sv[k] = self.semaphore(s) if i is None else i, v
        if self._n >= len(self._instr):
            self._grow_instr(1)
        buf = self._instr_buf
        if buf is None or buf[0] is not self._instr:  # the table was replaced (growth, decoding)
            buf = self._instr_buf = (self._instr, self._instr.view(np.uint8).data)
        REC_STRUCT.pack_into(buf[1], self._n * REC_STRUCT.size, ins.op, eng, ins.queue, flags, ins.core, *fv,
                              *ints, *opnd, *ws, *wv, *ss, *sv)
        self._n += 1
        return self._n - 1

    def append_like(self, i: int, opnd: Sequence[int], waits: Sequence[tuple[int, int]]) -> int:
        """Append a copy of instruction ``i`` with its operands' AP-table indices replaced by ``opnd`` (slot
        order, -1 for none) and its waits by ``waits`` ((semaphore index, value) pairs); returns its index.
        A bulk path for generators that emit many instructions alike: everything else (op, engine, core,
        queue, immediates, signals) is ``i``'s, checked when ``i`` was appended; the indices given must be
        valid (AP-table entries, declared semaphores). (:func:`pack_like` with :meth:`like_parts` makes the
        same record as bytes, for builders that append many at once.)"""
        return self.append_packed(pack_like(self.like_parts(i), opnd, waits, self._n))

    def like_parts(self, i: int) -> tuple[bytes, bytes]:
        """The bytes of instruction ``i``'s record before its operand indices and after its waits: a record
        like ``i`` (:meth:`append_like`) is ``head + LIKE_TAIL.pack(operands, wait semaphores, wait values) +
        rest``, for bulk builders that pack many (:meth:`append_packed`)."""
        size = REC_STRUCT.size
        rec = bytes(self._instr[i : i + 1].view(np.uint8)) if 0 <= i < self._n else b""
        if len(rec) != size:
            raise IndexError(f"instruction {i} not in [0, {self._n})")
        return rec[:_TAIL_OFF], rec[_TAIL_OFF + LIKE_TAIL.size :]

    def append_packed(self, records: bytes) -> int:
        """Append whole records packed as :data:`INSTR_DTYPE` bytes (bulk path for generators, e.g. records
        made from :meth:`like_parts`; AP and semaphore indices must be valid); returns the first one's index."""
        size = REC_STRUCT.size
        n, extra = divmod(len(records), size)
        if extra:
            raise IsaError(f"append_packed: {len(records)} bytes is not a whole number of {size}-byte records")
        self._streams_cache = None
        if self._n + n > len(self._instr):
            self._grow_instr(n)
        buf = self._instr_buf
        if buf is None or buf[0] is not self._instr:
            buf = self._instr_buf = (self._instr, self._instr.view(np.uint8).data)
        at = self._n * size
        buf[1][at : at + len(records)] = records
        self._n += n
        return self._n - n

    def extend(self, instructions: Sequence[Instruction]) -> None:
        for ins in instructions:
            self.append(ins)

    def append_aps(self, rows: np.ndarray) -> int:
        """Append access-pattern rows (bulk path, no deduplication: a row equal to an earlier one is kept
        as a second entry); returns the index of the first."""
        rows = np.ascontiguousarray(rows, AP_DTYPE)
        need = self._naps + len(rows)
        self._grow_aps(len(rows))
        start = self._naps
        self._aps[start:need] = rows
        self._naps = need
        deque(map(self._rows().setdefault, _row_keys(rows), range(start, need)), maxlen=0)  # first index wins
        return start

    def append_records(self, records: np.ndarray) -> None:
        """Append pre-built records (bulk path for generators). AP and semaphore indices must be valid."""
        records = np.asarray(records, INSTR_DTYPE)
        self._streams_cache = None
        self._grow_instr(len(records))
        copy_records(self._instr[self._n : self._n + len(records)], records)
        self._n += len(records)

    def __getitem__(self, i: int) -> Instruction:
        if not (-self._n <= i < self._n):
            raise IndexError(i)
        return self.decode_record(self._instr[i % self._n] if i < 0 else self._instr[i])

    def __iter__(self) -> Iterator[Instruction]:
        for i in range(self._n):
            yield self.decode_record(self._instr[i])

    def ap(self, idx: int) -> AccessPattern:
        """The AccessPattern of AP-table entry ``idx``."""
        r = self._aps[idx]
        nd = int(r["ndims"])
        dims = tuple((int(r["strides"][k]), int(r["sizes"][k])) for k in range(nd))
        sp = Space(int(r["space"]))
        tname = list(self.tensors)[int(r["tensor"])] if sp == Space.hbm else None
        return AccessPattern(sp, DType(int(r["dtype"])), int(r["pstart"]), int(r["pcount"]), int(r["offset"]),
                             dims, tname, int(r["pstride"]))

    def decode_record(self, r: np.void) -> Instruction:
        op = Op(int(r["op"]))
        spec = OPSPECS[op]
        operands = tuple(None if int(r["opnd"][k]) < 0 else self.ap(int(r["opnd"][k])) for k in range(len(spec.slots)))
        imms = decode_imms(op, r, self.semaphores.__getitem__, list(self.groups))
        waits = tuple((self.semaphores[int(s)], int(v)) for s, v in zip(r["wsem"], r["wval"]) if int(s) >= 0)
        signals = tuple((self.semaphores[int(s)], int(v)) for s, v in zip(r["ssem"], r["sval"]) if int(s) >= 0)
        return Instruction(op, operands, imms, Engine(int(r["engine"])), int(r["core"]), int(r["queue"]), waits,
                           signals)

    # ---- streams --------------------------------------------------------------------------------
    def streams(self) -> dict[tuple[int, int, int], np.ndarray]:
        """Instruction indices of every stream ``(core, engine, queue)``, keys sorted, program order within."""
        if self._streams_cache is None:
            ins = self.instr
            core = ins["core"].astype(np.int64)
            eq = (ins["engine"].astype(np.int64) << 8) | ins["queue"]  # (engine, queue) in 16 bits
            seen = np.zeros(1 << 16, bool)
            seen[eq] = True
            eq_vals = np.flatnonzero(seen)  # the (engine, queue) pairs used, ascending
            out = {}
            if self.num_cores * len(eq_vals) <= 1 << 16 and (len(core) == 0 or core.max() < self.num_cores):
                # dense stream ids in (core, engine, queue) order, in 16 bits: a stable sort of them is a radix
                # sort, a few times faster than one of wide keys
                key = (core * len(eq_vals) + (np.cumsum(seen) - 1)[eq]).astype(np.uint16)
                order = np.argsort(key, kind="stable")
                counts = np.bincount(key)
                used = np.flatnonzero(counts)
                for k, chunk in zip(used.tolist(), np.split(order, np.cumsum(counts[used])[:-1])):
                    e_q = int(eq_vals[k % len(eq_vals)])
                    out[(k // len(eq_vals), e_q >> 8, e_q & 0xFF)] = chunk
            else:
                wide = (core << 16) | eq
                order = np.argsort(wide, kind="stable")
                bounds = np.flatnonzero(np.diff(wide[order])) + 1
                for chunk in np.split(order, bounds) if len(order) else []:
                    k = int(wide[chunk[0]])
                    out[(k >> 16, (k >> 8) & 0xFF, k & 0xFF)] = chunk
            self._streams_cache = out
            self._stream_order = order
        return self._streams_cache

    def stream_order(self) -> np.ndarray:
        """Every stream's instructions, stream after stream in :meth:`streams` order: their concatenation, as
        one int64 array that the arrays of :meth:`streams` are views of (no copy)."""
        self.streams()  # (cached) sets the order with the streams
        order = self._stream_order
        assert order is not None
        return order

    # ---- comparison -----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Program):
            return NotImplemented
        if (self.num_cores, self.cores_per_chip, self.tensors, self.semaphores, self.groups) != (
            other.num_cores, other.cores_per_chip, other.tensors, other.semaphores, other.groups
        ):
            return False
        if len(self) != len(other):
            return False
        if len(self.aps) == len(other.aps) and self.aps.tobytes() == other.aps.tobytes():
            return self.instr.tobytes() == other.instr.tobytes()
        # AP tables may differ in order/dedup: compare instruction by instruction
        return all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return (f"Program({len(self)} instructions, {self.num_cores} cores, {len(self.tensors)} tensors, "
                f"{len(self.semaphores)} semaphores)")

    def nbytes(self) -> int:
        """Bytes held by the instruction and AP tables."""
        return self._n * INSTR_DTYPE.itemsize + self._naps * AP_DTYPE.itemsize


#: the record's operands, wait semaphores and wait values (contiguous in INSTR_DTYPE): what append_like replaces
LIKE_TAIL = struct.Struct(f"<{MAX_OPERANDS}i{MAX_WAITS}i{MAX_WAITS}I")
NO_OPERANDS = (-1,) * MAX_OPERANDS  # (a record's unused operand slots)
_NO_WAIT_SEMS, _NO_WAIT_VALUES = (-1,) * MAX_WAITS, (0,) * MAX_WAITS  # (a record's unused wait slots)
_NO_WAITS = (*_NO_WAIT_SEMS, *_NO_WAIT_VALUES)


def pack_like(parts: tuple[bytes, bytes], opnd: Sequence[int], waits: Sequence[tuple[int, int]], at: int) -> bytes:
    """The record ``parts`` (:meth:`Program.like_parts` of an earlier instruction) with operand AP-table indices
    ``opnd`` (slot order, -1 for none; unused slots -1) and ``waits`` ((semaphore index, value) pairs), as bytes
    of :data:`INSTR_DTYPE` (:meth:`Program.append_packed`); ``at``: the index it will have, for errors."""
    n = len(waits)
    if n > MAX_WAITS or len(opnd) > MAX_OPERANDS:
        raise OperandError(f"instruction {at}: at most {MAX_WAITS} waits and {MAX_OPERANDS} operands")
    pad = NO_OPERANDS[len(opnd):]
    try:
        if not n:
            return parts[0] + LIKE_TAIL.pack(*opnd, *pad, *_NO_WAITS) + parts[1]
        return parts[0] + LIKE_TAIL.pack(*opnd, *pad, *[s for s, _ in waits], *_NO_WAIT_SEMS[n:],
                                         *[v for _, v in waits], *_NO_WAIT_VALUES[n:]) + parts[1]
    except struct.error:  # a value outside its field
        bad = [v for _, v in waits if not 0 <= v <= U32_MAX]
        what = f"wait value {bad[0]} not in [0, 2^32-1]" if bad else f"operand or semaphore index not in int32: " \
            f"operands {list(opnd)}, waits {list(waits)}"
        raise OperandError(f"instruction {at}: {what}") from None
_FIELDS: Mapping[str, tuple] = INSTR_DTYPE.fields or {}
_TAIL_OFF = int(_FIELDS["opnd"][1])
assert _FIELDS["wsem"][1] == _TAIL_OFF + 4 * MAX_OPERANDS
assert _FIELDS["wval"][1] == _TAIL_OFF + 4 * (MAX_OPERANDS + MAX_WAITS)


#: AP_DTYPE as a flat struct layout (ap_id packs a row to look it up before writing it; checked at import)
_AP_STRUCT = struct.Struct(f"<BBBHHiiq{MAX_FREE_DIMS}i{MAX_FREE_DIMS}I")
assert _AP_STRUCT.size == AP_DTYPE.itemsize, "AP_DTYPE and _AP_STRUCT disagree"
_NO_DIMS = [0] * MAX_FREE_DIMS  # (ap_id: the unused (stride, size) entries)


def _row_keys(rows: np.ndarray) -> list[bytes]:
    """The bytes of each record of ``rows`` (a contiguous 1-D array of :data:`AP_DTYPE`): the keys of the AP
    table's deduplication index, made in one call (a void view's ``tolist``)."""
    return cast(list[bytes], rows.view(np.dtype((np.void, AP_DTYPE.itemsize))).tolist())


def _is_ident(name: str) -> bool:
    return name.replace(".", "_").isidentifier()
