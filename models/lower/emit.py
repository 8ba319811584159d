"""Instruction emission with automatic, minimal synchronisation.

The lowering describes *what* each instruction reads and writes (:class:`Tile` views of :class:`Buf`
regions); the :class:`Emitter` derives the semaphores. Every stream ``(core, engine, queue)`` owns one
semaphore that each of its instructions increments on completion, so "instruction ``i`` of stream ``s``
has finished" is ``sem_s >= count_i``. Each :class:`Buf` remembers the completion counts of its last
writes and of its reads since; an instruction then waits for

* read-after-write: the last writers of every buffer it reads;
* write-after-write and write-after-read: the last writers and the readers of every buffer it writes;

collapsed per semaphore to the largest value, dropping waits on its own stream (streams run in
order) and waits implied by an earlier wait of the same stream: a stream issues in order and counters
only grow, so once one of its instructions has waited for ``sem >= v'`` every later one sees it too, and
by the ISA's rule that a stream's signals are applied in program order (:mod:`infsim.isa.program`),
``sem_s >= v'`` means instructions ``1..v'`` of stream ``s`` have all finished. That is exactly the set of
dependencies the data requires, each waited for once per stream — no global barriers. An instruction
carries at most two waits (ISA limit); extra waits go on ``nop`` instructions placed just before it on
the same stream.

The emitter also records what every instruction is for (:mod:`.tags`): the current ``op_class`` and
``layer``, set by the block emitters (:meth:`Emitter.tagged`), go into :attr:`Emitter.tags` for each
instruction appended; ``nop`` carriers are tagged ``sync``.

Left out: dependency tracking at finer than buffer granularity (two writes to disjoint parts of one
``Buf`` are ordered); lowerings allocate separate ``Buf`` objects where parallelism matters, or mark a
group of writes as *partial* (``partial=True``: they do not order each other, e.g. K tiles of one
weight slab loaded by different DMA queues).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from infsim.isa import AccessPattern, DType, Engine, Op, Program, Space, make
from infsim.isa.opcodes import MAX_WAITS, OPSPECS
from infsim.isa.operand import row_major_dims

from .alloc import LoweringError
from .tags import UNTAGGED, OpClass, TagLog

#: which of a matmul's operand slots (dst, stationary, moving) are missing, as :meth:`Emitter.emit` keys it: none
_NO_OPERAND_MISSING3 = (False, False, False)


@dataclass(eq=False)
class Buf:
    """A region with a dependency history: on-chip (core, partitions, byte range) or an HBM tensor."""

    name: str
    space: Space
    core: int = 0
    pstart: int = 0
    pcount: int = 0
    offset: int = 0  # bytes within each partition (on-chip)
    nbytes: int = 0  # bytes per partition (on-chip) or of the tensor (HBM)
    tensor: str | None = None
    last_write: dict[str, int] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    war_base: dict[str, int] = field(default_factory=dict)  # what a group of partial writes must wait for
    aliases: list[Buf] = field(default_factory=list)  # other buffers sharing some of these bytes
    #: views already made (:meth:`tile`, :meth:`hbm`: a buffer's place never changes, a Tile is immutable)
    views: dict[tuple, Tile] = field(default_factory=dict, repr=False)

    def overlaps(self, other: Buf) -> bool:
        if self.space != other.space or self.core != other.core or self.space == Space.hbm:
            return self.space == Space.hbm and other.space == Space.hbm and self.tensor == other.tensor
        return (
            self.pstart < other.pstart + other.pcount
            and other.pstart < self.pstart + self.pcount
            and self.offset < other.offset + other.nbytes
            and other.offset < self.offset + self.nbytes
        )

    def tile(
        self,
        dtype: DType | str,
        free: int | tuple[int, ...] | None = None,
        *,
        pstart: int = 0,
        pcount: int | None = None,
        byte: int = 0,
        dims: tuple[tuple[int, int], ...] | None = None,
    ) -> Tile:
        """A view of this buffer: partitions ``pstart..pstart+pcount`` (relative), byte offset ``byte``,
        and either a contiguous row-major ``free`` shape or explicit ``dims``."""
        key = (dtype, free, pstart, pcount, byte, dims)
        t = self.views.get(key)
        if t is not None:
            return t
        dt = DType.parse(dtype) if isinstance(dtype, str) else dtype
        if dims is None:
            dims = row_major_dims(free if free is not None else 1)
        pc = self.pcount - pstart if pcount is None else pcount
        ap = AccessPattern(self.space, dt, self.pstart + pstart, pc, self.offset + byte, dims)
        if self.space == Space.psum:  # a PSUM tile lies within its bank (SBUF views may span a role's tiles)
            lo, hi = ap.byte_extent()
            if lo < self.offset or hi > self.offset + self.nbytes or pstart < 0 or pstart + pc > self.pcount:
                raise LoweringError(
                    f"the step does not fit PSUM bank '{self.name}' ({self.nbytes} bytes per partition = "
                    f"psum.bytes_per_partition / psum.banks): a {dt.name} tile needs bytes [{lo - self.offset}, "
                    f"{hi - self.offset}) of partitions [{pstart}, {pstart + pc}) of its {self.pcount}")
        t = self.views[key] = Tile(self, ap)
        return t

    def hbm(
        self, dtype: DType | str, rows: int, row_stride: int, dims: tuple[tuple[int, int], ...], byte: int = 0
    ) -> Tile:
        """A view of an HBM tensor buffer."""
        key = ("hbm", dtype, rows, row_stride, dims, byte)
        t = self.views.get(key)
        if t is None:
            dt = DType.parse(dtype) if isinstance(dtype, str) else dtype
            t = self.views[key] = Tile(self, AccessPattern(Space.hbm, dt, 0, rows, byte, dims, self.tensor, row_stride))
        return t


@dataclass(frozen=True)
class Tile:
    buf: Buf
    ap: AccessPattern


@dataclass
class _Stream:
    sem: str
    count: int = 0
    #: largest value this stream has already waited for, per semaphore: a later wait up to it is implied
    known: dict[str, int] = field(default_factory=dict)


def link_aliases(bufs: list[Buf], new: Buf) -> None:
    """Record ``new``'s overlaps with ``bufs`` (both directions) and add it to ``bufs``."""
    for b in bufs:
        if b.overlaps(new):
            b.aliases.append(new)
            new.aliases.append(b)
    bufs.append(new)


def _imms_key(kw: dict[str, object]) -> tuple | None:
    """How :meth:`Emitter.emit` tells immediates apart: name, type and value of each (floats by their exact
    value, so that -0.0 and 0.0 differ; tuples element by element), so that equal keys normalise to the same
    record fields and raise the same errors; ``None`` (no shortcut) for a NaN or a nested container."""
    out: list[tuple[str, type, object]] = []
    for k, v in kw.items():
        if isinstance(v, float):
            if v != v:
                return None
            out.append((k, type(v), v.hex()))
        elif isinstance(v, tuple):
            if any(isinstance(x, (tuple, list, float)) for x in v):
                return None
            out.append((k, tuple, tuple((type(x), x) for x in v)))
        else:
            out.append((k, type(v), v))
    return tuple(out)


class Emitter:
    """Appends instructions to a Program, inserting the semaphores the data dependencies require."""

    def __init__(self, program: Program):
        self.p = program
        self._streams: dict[tuple[int, int, int], _Stream] = {}
        self.tags = TagLog()  # op class and layer of every instruction, aligned with the program
        self.op_class: int = UNTAGGED  # tag of the instructions emitted next
        self.layer = -1
        self._like: dict[tuple, int] = {}  # what an instruction is like -> the first such instruction (emit())
        #: id(tile) -> (tile, its AP-table index): a Tile is immutable and the table only grows, so its index
        #: never changes; looked up by identity instead of hashing the access pattern (the tile is kept alive)
        self._ap_ids: dict[int, tuple[Tile, int]] = {}

    def ap_id(self, t: Tile) -> int:
        """The AP-table index of ``t``'s access pattern (:meth:`Program.ap_id`, remembered per tile)."""
        e = self._ap_ids.get(id(t))
        if e is not None and e[0] is t:
            return e[1]
        i = self.p.ap_id(t.ap)
        self._ap_ids[id(t)] = (t, i)
        return i

    @contextmanager
    def tagged(self, op_class: OpClass, layer: int | None = None) -> Iterator[None]:
        """Tag the instructions emitted in the ``with`` block ``op_class`` (and ``layer``, if given);
        the previous tag is restored afterwards."""
        saved = self.op_class, self.layer
        self.op_class = op_class
        if layer is not None:
            self.layer = layer
        try:
            yield
        finally:
            self.op_class, self.layer = saved

    def stream(self, core: int, engine: Engine, queue: int = 0) -> _Stream:
        key = (core, int(engine), queue)
        s = self._streams.get(key)
        if s is None:
            q = f"{queue}" if engine in (Engine.dma, Engine.cc) else ""
            s = _Stream(f"c{core}_{engine.name}{q}")
            self._streams[key] = s
        return s

    def emit(
        self,
        opcode: Op | str,
        core: int,
        engine: Engine | str,
        queue: int = 0,
        /,
        *,
        partial: bool = False,
        extra_waits: dict[str, int] | None = None,
        extra_signals: dict[str, int] | None = None,
        **kw: object,
    ) -> int:
        """Emit ``op`` on stream (core, engine, queue). Operands are passed by slot name as :class:`Tile`;
        other keywords are immediates. Returns the instruction index."""
        op = Op[opcode] if isinstance(opcode, str) else opcode
        eng = Engine[engine] if isinstance(engine, str) else engine
        spec = OPSPECS[op]
        st = self.stream(core, eng, queue)
        operands: list[AccessPattern | None] = []
        tiles: list[Tile | None] = []
        reads: list[Buf] = []
        writes: list[Buf] = []
        for slot in spec.slots:
            t = kw.pop(slot.name, None)
            if t is None:
                operands.append(None)
                tiles.append(None)
                continue
            assert isinstance(t, Tile), f"{op.name}.{slot.name} must be a Tile"
            operands.append(t.ap)
            tiles.append(t)
            (writes if slot.output else reads).append(t.buf)
        known = st.known
        waits = self._need(st, reads, writes, partial, extra_waits)
        for s, v in waits:
            known[s] = v
        while len(waits) > MAX_WAITS:
            chunk, waits = waits[:MAX_WAITS], waits[MAX_WAITS:]
            self.p.append(make(Op.nop, engine=eng, core=core, queue=queue, waits=chunk, signals=[(st.sem, 1)]))
            self.tags.append(OpClass.sync, self.layer)
            st.count += 1
        st.count += 1
        extra = tuple(sorted(extra_signals.items())) if extra_signals else ()
        # an instruction like one emitted before (same op, stream, operand slots, immediates, extra signals) is
        # that record with its operands and waits replaced (Program.append_like); the first goes through make()
        imms = _imms_key(kw)
        key = None if imms is None else (op, eng, core, queue, tuple(o is None for o in operands), extra, imms)
        try:
            like = None if key is None else self._like.get(key)
        except TypeError:  # an unhashable immediate: no shortcut
            like, key = None, None
        p = self.p
        if like is None:
            idx = p.append(make(op, *operands, engine=eng, core=core, queue=queue, waits=waits,
                                signals=[(st.sem, 1), *extra], **kw))
            if key is not None:
                self._like[key] = idx
        else:
            opnd = [-1 if t is None else self.ap_id(t) for t in tiles]
            idx = p.append_like(like, opnd, [(p.semaphore(s), v) for s, v in waits])
        self.tags.append(self.op_class, self.layer)
        done = st.count
        for b in reads:
            if done > b.reads.get(st.sem, 0):
                b.reads[st.sem] = done
        for b in writes:
            if partial:
                b.last_write[st.sem] = max(done, b.last_write.get(st.sem, 0))
            else:
                b.last_write = {st.sem: done}
                b.reads = {}
        return idx

    def _need(self, st: _Stream, reads: list[Buf] | tuple[Buf, ...], writes: list[Buf] | tuple[Buf, ...],
              partial: bool = False, extra: dict[str, int] | None = None) -> list[tuple[str, int]]:
        """The waits of an instruction of stream ``st`` that reads ``reads`` and writes ``writes`` (a group of
        partial writes with ``partial``), plus ``extra``: the data dependencies (module docstring) not yet known
        to the stream, sorted by semaphore; the stream's known waits are not updated."""
        deps: dict[str, int] = dict(extra) if extra else {}
        own = st.sem
        hist: list[dict[str, int]] = []  # the histories to wait for (one loop below, no call per history)
        for b in reads:
            hist.append(b.last_write)
            for a in b.aliases:  # bytes last written through an aliasing buffer
                hist.append(a.last_write)
        for b in writes:
            if partial:
                hist.append(b.war_base)
            else:
                hist.append(b.last_write)
                hist.append(b.reads)
            for a in b.aliases:  # memory shared by liveness: wait for the other role's accesses
                hist.append(a.last_write)
                hist.append(a.reads)
                hist.append(a.war_base)
        get = deps.get
        for d in hist:
            for s, v in d.items():
                if v > get(s, 0) and s != own:
                    deps[s] = v
        if not deps:
            return []
        known = st.known
        return sorted([(s, v) for s, v in deps.items() if v > known.get(s, 0)])

    def matmuls(self, core: int, grid: list[tuple[Tile, Tile, Tile, bool]]) -> None:
        """Emit ``matmul(dst, stationary, moving, accumulate)`` for every entry of ``grid`` on the tensor
        stream of ``core``, in order: the program is the one :meth:`emit` called for each gives, built faster.

        An entry whose every (buffer, read-or-write) pair already occurred earlier in the grid needs no wait:
        the histories it would consult (the buffers', their aliases') have changed since only by this stream's
        own instructions, whose entries a stream never waits for, and what the earlier entry needed is in the
        stream's known waits. The other entries get their waits as :meth:`emit` derives them (:meth:`_need`).
        An entry with at most ``MAX_WAITS`` waits is appended as a copy of the stream's earlier matmul with the
        same accumulate flag (:meth:`Program.append_like`, as :meth:`emit` would); the first of each flag and
        an entry that needs ``nop`` carriers go through :meth:`emit`."""
        st = self.stream(core, Engine.tensor)
        p, sem = self.p, st.sem
        known = st.known
        seen: set[tuple[int, bool]] = set()
        like = self._like
        tags, cls, layer = self.tags, self.op_class, self.layer

        def kind(acc: object) -> tuple:  # emit()'s key of a matmul of this stream
            return (Op.matmul, Engine.tensor, core, 0, _NO_OPERAND_MISSING3, (), _imms_key({"accumulate": acc}))

        kinds = {a: kind(a) for a in (False, True)}
        ap_id, sem_id, append_like = self.ap_id, p.semaphore, p.append_like

        for dst, stat, mov, acc in grid:
            db, sb, mb = dst.buf, stat.buf, mov.buf
            kd, ks, km = (id(db), True), (id(sb), False), (id(mb), False)
            fresh = not (kd in seen and ks in seen and km in seen)
            waits = self._need(st, (sb, mb), (db,)) if fresh else []
            i = like.get(kinds[acc] if type(acc) is bool else kind(acc))
            if i is None or len(waits) > MAX_WAITS:
                self.emit(Op.matmul, core, Engine.tensor, dst=dst, stationary=stat, moving=mov, accumulate=acc)
                seen.update((kd, ks, km))
                continue
            if fresh:
                for s, v in waits:
                    known[s] = v
                seen.update((kd, ks, km))
            st.count += 1
            append_like(i, (ap_id(dst), ap_id(stat), ap_id(mov)),
                        [(sem_id(s), v) for s, v in waits] if waits else ())
            tags.append(cls, layer)
            done = st.count
            r = sb.reads
            if done > r.get(sem, 0):
                r[sem] = done
            r = mb.reads
            if done > r.get(sem, 0):
                r[sem] = done
            db.last_write = {sem: done}
            db.reads = {}

    def new_write_epoch(self, buf: Buf) -> None:
        """Start a new group of partial writes to ``buf``: later partial writes wait for earlier readers
        and writers of the previous contents (call before the first write of a group)."""
        base = dict(buf.reads)
        for s, v in buf.last_write.items():
            base[s] = max(v, base.get(s, 0))
        buf.war_base = base
        buf.last_write = {}
        buf.reads = {}
