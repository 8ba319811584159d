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

Speed. An instruction like an earlier one (same op, stream, operand slots, immediates) is that record's
bytes with its operands and waits replaced, not a new record built from scratch; the matmul grids of linear
layers (about two thirds of the emitted instructions) go through :meth:`Emitter.matmul_grid`, which packs a
grid's records at once and consults buffer histories only where an access is new to the grid and its
buffer changed since the stream last looked (the same waits as emitting each matmul: tests compare both).

The emitter also records what every instruction is for (:mod:`.tags`): the current ``op_class`` and
``layer``, set by the block emitters (:meth:`Emitter.tagged`), go into :attr:`Emitter.tags` for each
instruction appended; ``nop`` carriers are tagged ``sync``.

Left out: dependency tracking at finer than buffer granularity (two writes to disjoint parts of one
``Buf`` are ordered); lowerings allocate separate ``Buf`` objects where parallelism matters, or mark a
group of writes as *partial* (``partial=True``: they do not order each other, e.g. K tiles of one
weight slab loaded by different DMA queues).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from infsim.isa import AccessPattern, DType, Engine, Op, Program, Space, make
from infsim.isa.opcodes import MAX_OPERANDS, MAX_WAITS, OPSPECS
from infsim.isa.operand import row_major_dims
from infsim.isa.program import NO_OPERANDS, pack_like

from .alloc import LoweringError
from .tags import UNTAGGED, OpClass, TagLog


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
    #: when the histories above last changed: index + 1 of the instruction that changed them, or more (see
    #: :meth:`Emitter.matmul_grid`'s clean pairs)
    ver: int = field(default=0, repr=False)

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
    #: (id(buffer), written) -> (buffer, tick): the histories this access of the buffer consults held nothing
    #: beyond ``known`` at program length ``tick`` (:meth:`Emitter.matmul_grid`)
    clean: dict[tuple[int, bool], tuple[Buf, int]] = field(default_factory=dict)


class _Tagged:
    """:meth:`Emitter.tagged`'s context (a small class: the lowering enters one per weight slab, where a
    generator-based context manager cost several microseconds each)."""

    __slots__ = ("em", "op_class", "layer", "saved")

    def __init__(self, em: Emitter, op_class: OpClass, layer: int | None) -> None:
        self.em, self.op_class, self.layer = em, op_class, layer

    def __enter__(self) -> None:
        em = self.em
        self.saved = em.op_class, em.layer
        em.op_class = self.op_class
        if self.layer is not None:
            em.layer = self.layer

    def __exit__(self, *exc: object) -> None:
        self.em.op_class, self.em.layer = self.saved


def link_aliases(bufs: list[Buf], new: Buf) -> None:
    """Record ``new``'s overlaps with ``bufs`` (both directions, :meth:`Buf.overlaps`) and add it to ``bufs``."""
    if new.space == Space.hbm:
        hits = [b for b in bufs if b.overlaps(new)]
    else:  # Buf.overlaps for an on-chip buffer, unrolled (registries hold hundreds of buffers)
        sp, core = new.space, new.core
        p0, p1, o0, o1 = new.pstart, new.pstart + new.pcount, new.offset, new.offset + new.nbytes
        hits = [b for b in bufs if b.space == sp and b.core == core and b.pstart < p1 and p0 < b.pstart + b.pcount
                and b.offset < o1 and o0 < b.offset + b.nbytes]
    for b in hits:
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
        #: the program's length at the last check plus what this emitter appended since: a longer program
        #: means that someone else appended (layer or rank stamping, :mod:`.repeat`) and may have moved
        #: buffer histories (:meth:`_outside_changes`)
        self._n_at = len(program)
        self._parts: dict[int, tuple[bytes, bytes]] = {}  # template record -> Program.like_parts (matmul_grid)
        #: core -> its tensor stream's first matmul without and with accumulate (matmul_grid's templates)
        self._mm_tmpl: dict[int, tuple[int | None, int | None]] = {}
        #: id(stationary grid) -> (the grid, its AP-table indices) (matmul_grid; the grid is kept alive)
        self._grid_ids: dict[int, tuple[object, tuple[tuple[int, ...], ...]]] = {}

    def ap_id(self, t: Tile) -> int:
        """The AP-table index of ``t``'s access pattern (:meth:`Program.ap_id`, remembered per tile)."""
        e = self._ap_ids.get(id(t))
        if e is not None and e[0] is t:
            return e[1]
        i = self.p.ap_id(t.ap, remember=False)
        self._ap_ids[id(t)] = (t, i)
        return i

    def tagged(self, op_class: OpClass, layer: int | None = None) -> _Tagged:
        """Tag the instructions emitted in the ``with`` block ``op_class`` (and ``layer``, if given);
        the previous tag is restored afterwards."""
        return _Tagged(self, op_class, layer)

    def stream(self, core: int, engine: Engine, queue: int = 0) -> _Stream:
        key = (core, int(engine), queue)
        s = self._streams.get(key)
        if s is None:
            q = f"{queue}" if engine in (Engine.dma, Engine.cc) else ""
            s = _Stream(f"c{core}_{engine.name}{q}")
            self._streams[key] = s
        return s

    def _outside_changes(self) -> None:
        """Forget every stream's clean accesses if someone else appended to the program since the last check
        (stamping moves buffer histories without bumping :attr:`Buf.ver`)."""
        if len(self.p) != self._n_at:
            for st in self._streams.values():
                st.clean.clear()
            self._n_at = len(self.p)

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
        st = self._streams.get((core, eng, queue)) or self.stream(core, eng, queue)
        tiles: list[Tile | None] = []
        reads: list[Buf] = []
        writes: list[Buf] = []
        missing = 0  # bit k: operand slot k not given
        ids = self._ap_ids
        opnd = [-1] * MAX_OPERANDS  # the operands' AP-table indices (interned in slot order, as append would)
        for k, name, output in _SLOTS[op]:
            t = kw.pop(name, None)
            if t is None:
                tiles.append(None)
                missing |= 1 << k
                continue
            assert isinstance(t, Tile), f"{op.name}.{name} must be a Tile"
            tiles.append(t)
            e = ids.get(id(t))
            opnd[k] = e[1] if e is not None and e[0] is t else self.ap_id(t)
            (writes if output else reads).append(t.buf)
        waits = self._waits(st, self._hists(reads, writes, partial), extra_waits)
        if len(waits) > MAX_WAITS:
            waits = self._carry(st, eng, core, queue, waits)
        st.count += 1
        extra = tuple(sorted(extra_signals.items())) if extra_signals else ()
        # an instruction like one emitted before (same op, stream, operand slots, immediates, extra signals) is
        # that record with its operands and waits replaced; the first goes through make()
        imms = _imms_key(kw) if kw else ()
        key = None if imms is None else (op, eng, core, queue, missing, extra, imms)
        try:
            like = None if key is None else self._like.get(key)
        except TypeError:  # an unhashable immediate: no shortcut
            like, key = None, None
        p = self.p
        if like is None:
            idx = p.append(make(op, *[None if t is None else t.ap for t in tiles], engine=eng, core=core,
                                queue=queue, waits=waits, signals=[(st.sem, 1), *extra], **kw))
            if key is not None:
                self._like[key] = idx
        else:
            idx = p.append_packed(self._like_record(like, opnd, waits))
        self.tags.append(self.op_class, self.layer)
        self._n_at += 1
        tick = idx + 1
        done = st.count
        sem = st.sem
        for b in reads:
            r = b.reads
            if done > r.get(sem, 0):
                r[sem] = done
            b.ver = tick
        for b in writes:
            if partial:
                b.last_write[sem] = max(done, b.last_write.get(sem, 0))
            else:
                b.last_write = {sem: done}
                b.reads = {}
            b.ver = tick
        return idx

    def _like_record(self, like: int, opnd: Sequence[int], waits: list[tuple[str, int]]) -> bytes:
        """The record of instruction ``like`` with operand indices ``opnd`` (-1 for none) and ``waits`` (at most
        ``MAX_WAITS``; their semaphores declared here if new): :func:`~infsim.isa.program.pack_like` of the
        template's :meth:`Program.like_parts`, remembered per template."""
        parts = self._parts.get(like)
        if parts is None:
            parts = self._parts[like] = self.p.like_parts(like)
        sem = self.p.semaphore
        return pack_like(parts, opnd, [(sem(s), v) for s, v in waits] if waits else (), len(self.p))

    def _carry(self, st: _Stream, eng: Engine, core: int, queue: int, waits: list[tuple[str, int]]
               ) -> list[tuple[str, int]]:
        """Put all but the last ``MAX_WAITS`` of ``waits`` (sorted) on ``nop`` instructions of stream ``st``
        (tagged ``sync``), ``MAX_WAITS`` each in order; returns the waits left for the instruction itself.
        (A nop is like the stream's earlier nops, as :meth:`emit` keys it.)"""
        key = (Op.nop, eng, core, queue, 0, (), ())
        while len(waits) > MAX_WAITS:
            chunk, waits = waits[:MAX_WAITS], waits[MAX_WAITS:]
            like = self._like.get(key)
            if like is None:
                self._like[key] = self.p.append(make(Op.nop, engine=eng, core=core, queue=queue, waits=chunk,
                                                     signals=[(st.sem, 1)]))
            else:
                self.p.append_packed(self._like_record(like, NO_OPERANDS, chunk))
            self.tags.append(OpClass.sync, self.layer)
            st.count += 1
            self._n_at += 1
        return waits

    @staticmethod
    def _hists(reads: Sequence[Buf], writes: Sequence[Buf], partial: bool = False) -> list[dict[str, int]]:
        """The histories an instruction that reads ``reads`` and writes ``writes`` (a group of partial writes
        with ``partial``) must wait for (module docstring)."""
        hist: list[dict[str, int]] = []
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
        return hist

    @staticmethod
    def _waits(st: _Stream, hist: list[dict[str, int]], extra: dict[str, int] | None = None
               ) -> list[tuple[str, int]]:
        """The largest value per semaphore in ``hist`` and ``extra``, but for the stream's own semaphore and
        what it already waited for, sorted by semaphore; the stream's known waits are updated with them."""
        deps: dict[str, int] = dict(extra) if extra else {}
        own = st.sem
        get = deps.get
        for d in hist:
            for s, v in d.items():
                if v > get(s, 0) and s != own:
                    deps[s] = v
        if not deps:
            return []
        known = st.known
        kget = known.get
        out = sorted([(s, v) for s, v in deps.items() if v > kget(s, 0)])
        for s, v in out:
            known[s] = v
        return out

    @staticmethod
    def _dirty(st: _Stream, b: Buf, write: bool) -> bool:
        """Whether the histories that stream ``st`` consults for reading (writing) ``b`` may hold something
        beyond its known waits: not recorded clean, or changed since (``b`` or an alias: :attr:`Buf.ver`)."""
        r = st.clean.get((id(b), write))
        if r is None or r[0] is not b or b.ver > r[1]:
            return True
        t = r[1]
        for a in b.aliases:
            if a.ver > t:
                return True
        return False

    def matmul_grid(self, core: int, dsts: Sequence[Tile], stats: tuple[tuple[Tile, ...], ...],
                    movs: Sequence[Tile], accs: Sequence[bool]) -> None:
        """Emit ``matmul(dsts[j], stats[i][j], movs[i], accs[i])`` on the tensor stream of ``core`` for every
        row ``i`` and, within it, every column ``j``: the program :meth:`emit` called for each in that order
        gives (tests compare the two), built faster. ``stats`` (tiles of one buffer) is best the same tuple
        object whenever the same grid recurs (its AP-table indices are remembered by identity).

        Waits. An entry waits only for what the histories of its (buffer, read-or-write) accesses hold beyond
        the stream's known waits (as :meth:`emit` derives them, consulting only these accesses: an access already made
        earlier in the grid contributes nothing new, as the buffers' histories have changed since only by this
        stream's own entries, which a stream never waits for, and what the earlier consultation found is in
        the known waits). Only the first entry of each access can wait: the first row, and the first column.
        The same holds across grids: after a grid every access of it is recorded *clean* in the stream
        (:attr:`_Stream.clean`, at the program's length), and a later grid consults it again only if the
        buffer or one of its aliases changed since (:attr:`Buf.ver`, set by every instruction that touches the
        buffer, and by :meth:`new_write_epoch`; appends by others, i.e. stamping, forget all clean records).

        Records. An entry is a copy of the stream's earlier matmul record with the same accumulate flag, its
        operands and waits replaced (as :meth:`emit`'s shortcut), packed in one piece per grid
        (:meth:`Program.append_packed`); an entry with more than ``MAX_WAITS`` waits gets ``nop`` carriers
        before it (:meth:`_carry`). The stream's first matmuls (no record to copy yet), and a grid that reads
        a buffer it writes or whose stationary tiles lie in several buffers, go through :meth:`emit`."""
        nk, nout = len(movs), len(dsts)
        if not nk or not nout:
            return
        p = self.p
        if len(p) != self._n_at:
            self._outside_changes()
        st = self._streams.get((core, Engine.tensor, 0)) or self.stream(core, Engine.tensor)
        tmpl = self._mm_tmpl.get(core)
        if tmpl is None:  # (remembered once both exist)
            tmpl = (self._like.get(_mm_key(core, False)), self._like.get(_mm_key(core, True)))
            if None not in tmpl:
                self._mm_tmpl[core] = tmpl
        dbufs = [t.buf for t in dsts]
        mbufs = [t.buf for t in movs]
        sbuf = stats[0][0].buf
        g = self._grid_ids.get(id(stats))
        known_grid = g is not None and g[0] is stats
        fast = (
            (known_grid or (len(stats) == nk and all(len(row) == nout and all(t.buf is sbuf for t in row)
                                                      for row in stats)))
            and (tmpl[0] is not None or all(accs))
            and (tmpl[1] is not None or not any(accs))
            and sbuf not in dbufs
            and set(dbufs).isdisjoint(mbufs)
        )
        if not fast:
            for i in range(nk):
                for j in range(nout):
                    self.emit(Op.matmul, core, Engine.tensor, dst=dsts[j], stationary=stats[i][j], moving=movs[i],
                              accumulate=accs[i])
            return
        # AP-table indices: all known already (no new rows), else interned in the order emitting gives
        ap_ids = self._ap_ids
        ids: list[int] = []
        if g is not None and known_grid:
            for t in (*dsts, *movs):
                e = ap_ids.get(id(t))
                if e is None or e[0] is not t:
                    break
                ids.append(e[1])
        if len(ids) == nout + nk and g is not None:
            sids = g[1]
            dids, mids = ids[:nout], ids[nout:]
        else:
            ap_id = self.ap_id
            rows = []
            for i in range(nk):
                row = []
                for j in range(nout):
                    ap_id(dsts[j])
                    row.append(ap_id(stats[i][j]))
                    ap_id(movs[i])
                rows.append(tuple(row))
            sids = tuple(rows)
            self._grid_ids[id(stats)] = (stats, sids)
            dids = [ap_id(t) for t in dsts]
            mids = [ap_id(t) for t in movs]
        # waits of the first entry of each access, in grid order (row 0, then column 0 of the later rows)
        dirty, need, hists = self._dirty, self._waits, self._hists
        waits_at: dict[int, list[tuple[str, int]]] = {}
        seen_d: set[int] = set()
        for j in range(nout):
            db = dbufs[j]
            acc_r: list[Buf] = []
            if j == 0:
                if dirty(st, sbuf, False):
                    acc_r.append(sbuf)
                if dirty(st, mbufs[0], False):
                    acc_r.append(mbufs[0])
            acc_w: tuple[Buf, ...] = ()
            if id(db) not in seen_d:
                seen_d.add(id(db))
                if dirty(st, db, True):
                    acc_w = (db,)
            if acc_r or acc_w:
                w = need(st, hists(acc_r, acc_w))
                if w:
                    waits_at[j] = w
        seen_m = {id(mbufs[0])}
        for i in range(1, nk):
            mb = mbufs[i]
            if id(mb) not in seen_m:
                seen_m.add(id(mb))
                if dirty(st, mb, False):
                    w = need(st, hists((mb,), ()))
                    if w:
                        waits_at[i * nout] = w
        # the records: row by row; only row 0 and column 0 can carry waits (and nop carriers before them)
        parts = self._parts
        pp = []
        for ti in tmpl:
            if ti is None:
                pp.append((b"", b"", b""))
                continue
            pr = parts.get(ti)
            if pr is None:
                pr = parts[ti] = p.like_parts(ti)
            pp.append((pr[0], _NO_WAIT_TAIL3 + pr[1], pr[1]))
        pack3 = _OPND3.pack
        out: list[bytes] = []
        tags, cls, layer = self.tags, self.op_class, self.layer
        count = st.count
        first_row: list[int] = []  # the count after each entry of row 0
        row_end: list[int] = []
        for i in range(nk):
            pre, rest, post = pp[accs[i]]
            m, srow = mids[i], sids[i]
            lead = nout if i == 0 else 1  # the row's entries that can wait
            for j in range(lead):
                ew = waits_at.get(i * nout + j)
                if ew:
                    if len(ew) > MAX_WAITS:  # nop carriers first (after the records so far)
                        if out:
                            p.append_packed(b"".join(out))
                            tags.fill(cls, layer, len(out))
                            self._n_at += len(out)
                            out = []
                        st.count = count
                        ew = self._carry(st, Engine.tensor, core, 0, ew)
                        count = st.count
                    out.append(pack_like((pre, post), (dids[j], srow[j], m), [(p.semaphore(s), v) for s, v in ew],
                                         len(p) + len(out)))
                else:
                    out.append(pre + pack3(dids[j], srow[j], m) + rest)
                count += 1
                if i == 0:
                    first_row.append(count)
            out += [pre + pack3(d, sid, m) + rest for d, sid in zip(dids[lead:], srow[lead:])]  # no waits
            count += nout - lead
            row_end.append(count)
        p.append_packed(b"".join(out))
        tags.fill(cls, layer, len(out))
        st.count = count
        self._n_at += len(out)
        tick = len(p)
        # the buffers' histories as emitting each entry leaves them, and the grid's accesses recorded clean
        last_row = first_row if nk == 1 else range(count - nout + 1, count + 1)  # (later rows: no nops inside)
        sem, clean = st.sem, st.clean
        sbuf.reads[sem] = count
        sbuf.ver = tick
        clean[(id(sbuf), False)] = (sbuf, tick)
        for i, mb in enumerate(mbufs):
            mb.reads[sem] = row_end[i]  # (a later row of the same buffer overwrites)
            mb.ver = tick
            clean[(id(mb), False)] = (mb, tick)
        for j, db in enumerate(dbufs):
            db.last_write = {sem: last_row[j]}
            db.reads = {}
            db.ver = tick
            clean[(id(db), True)] = (db, tick)

    def new_write_epoch(self, buf: Buf) -> None:
        """Start a new group of partial writes to ``buf``: later partial writes wait for earlier readers
        and writers of the previous contents (call before the first write of a group)."""
        base = dict(buf.reads)
        for s, v in buf.last_write.items():
            base[s] = max(v, base.get(s, 0))
        buf.war_base = base
        buf.last_write = {}
        buf.reads = {}
        buf.ver = len(self.p) + 1


def _mm_key(core: int, acc: bool) -> tuple:
    """:meth:`Emitter.emit`'s shortcut key of a matmul with all operands on the tensor stream of ``core``."""
    return _MM_KEYS.get((core, acc)) or _MM_KEYS.setdefault(
        (core, acc), (Op.matmul, Engine.tensor, core, 0, 0, (), _imms_key({"accumulate": acc})))


_MM_KEYS: dict[tuple[int, bool], tuple] = {}
#: (slot index, name, written) of every opcode's operand slots (emit())
_SLOTS = {op: tuple((k, sl.name, sl.output) for k, sl in enumerate(spec.slots)) for op, spec in OPSPECS.items()}
#: packs a matmul's three operand indices (the first of the record's MAX_OPERANDS)
_OPND3 = struct.Struct("<3i")
#: the rest of a matmul record's operands and waits (none)
_NO_WAIT_TAIL3 = pack_like((b"", b""), (0, 0, 0), (), 0)[_OPND3.size :]
