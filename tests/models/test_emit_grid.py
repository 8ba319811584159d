"""``Emitter.matmul_grid`` (matmul grids packed in bulk, waits looked for only where an access is new or its
buffer changed since the stream's last grid) against emitting every matmul with ``Emitter.emit``, on random
sequences of grids interleaved with other streams' instructions touching the same buffers and their aliases,
groups of partial writes, many-waiter buffers (``nop`` carriers inside a grid) and foreign appends to the
program (as stamping makes): same records, access patterns, semaphores, tags, stream and buffer state."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from infsim.isa import DType, Engine, Op, Program, Space
from infsim.models.lower.emit import Buf, Emitter, Tile, link_aliases
from infsim.models.lower.tags import OpClass

# actions: ("grid", slot, dst banks, mov buffers, accs) | ("vec", dst, src) | ("dma", queue, buffer, read) |
# ("partial", buffer, queues) | ("foreign",) (DMAs reach PSUM banks too: many waiters on a grid's output tile)
_N_SB, _N_PS, _N_SLOT = 6, 4, 3

_grid = st.tuples(
    st.just("grid"),
    st.integers(0, _N_SLOT - 1),
    st.lists(st.integers(0, _N_PS - 1), min_size=1, max_size=3),
    st.lists(st.integers(0, _N_SB - 1), min_size=1, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
)
_vec = st.tuples(st.just("vec"), st.integers(0, _N_SB + _N_PS - 1), st.integers(0, _N_SB + _N_PS - 1))
_dma = st.tuples(st.just("dma"), st.integers(0, 5), st.integers(0, _N_SB + _N_SLOT + _N_PS - 1), st.booleans())
_partial = st.tuples(st.just("partial"), st.integers(0, _N_SB + _N_PS - 1), st.lists(st.integers(0, 5), max_size=6))
_actions = st.lists(st.one_of(_grid, _grid, _vec, _dma, _partial, st.tuples(st.just("foreign"))), max_size=30)


def _bufs() -> tuple[list[Buf], list[Buf], list[Buf]]:
    """SBUF tiles (0 and 1 alias a buffer spanning both; 4 overlaps 3), PSUM banks, weight slots."""
    reg: list[Buf] = []
    sb = [Buf(f"s{i}", Space.sbuf, 0, 0, 128, 512 * i, 512) for i in range(_N_SB)]
    sb[4].offset = sb[3].offset + 256
    for b in sb:
        link_aliases(reg, b)
    link_aliases(reg, Buf("s01", Space.sbuf, 0, 0, 128, 0, 1024))
    ps = [Buf(f"p{i}", Space.psum, 0, 0, 128, 2048 * i, 2048) for i in range(_N_PS)]
    slots = [Buf(f"w{i}", Space.sbuf, 0, 0, 128, 8192 + 4096 * i, 4096) for i in range(_N_SLOT)]
    for b in slots:
        link_aliases(reg, b)
    return sb, ps, slots


def _play(actions: list, bulk: bool) -> tuple[Emitter, list[Buf]]:
    em = Emitter(Program(1, 1))
    em.p.add_tensor("h", DType.bf16, (128, 4096))
    hb = Buf("h", Space.hbm, 0, 0, 0, 0, 128 * 4096 * 2, tensor="h")
    sb, ps, slots = _bufs()
    anyb = sb + ps
    grids: dict[tuple, tuple[tuple[Tile, ...], ...]] = {}
    em.op_class = OpClass.setup
    for a in actions:
        kind = a[0]
        if kind == "grid":
            _, s, dl, ml, accs = a
            dsts = [ps[d].tile(DType.fp32, 4) for d in dl]
            movs = [sb[m].tile(DType.bf16, 4) for m in ml]
            key = (s, len(ml), len(dl))
            stats = grids.setdefault(key, tuple(tuple(slots[s].tile(DType.bf16, 8, byte=16 * (i * len(dl) + j))
                                                      for j in range(len(dl))) for i in range(len(ml))))
            acc = accs[: len(ml)] + [True] * max(0, len(ml) - 3)
            if bulk:
                em.matmul_grid(0, dsts, stats, movs, acc)
            else:
                for i, mov in enumerate(movs):
                    for j, dst in enumerate(dsts):
                        em.emit(Op.matmul, 0, Engine.tensor, dst=dst, stationary=stats[i][j], moving=mov,
                                accumulate=acc[i])
        elif kind == "vec":
            d, s = anyb[a[1]], anyb[a[2]]
            em.emit(Op.tensor_copy, 0, Engine.vector, dst=d.tile(DType.fp32, 4), src=s.tile(DType.fp32, 4))
        elif kind == "dma":
            _, q, b, read = a
            t = (sb + slots + ps)[b].tile(DType.bf16, 16)
            h = hb.hbm(DType.bf16, 128, 4096, ((1, 16),))
            if read:
                em.emit(Op.dma_copy, 0, Engine.dma, q, dst=h, src=t)
            else:
                em.emit(Op.dma_copy, 0, Engine.dma, q, dst=t, src=h)
        elif kind == "partial":
            _, b, qs = a
            em.new_write_epoch((sb + ps)[b])
            for k, q in enumerate(qs):
                t = (sb + ps)[b].tile(DType.bf16, 4, byte=8 * k)
                em.emit(Op.dma_copy, 0, Engine.dma, q, dst=t, src=hb.hbm(DType.bf16, 128, 4096, ((1, 4),)),
                        partial=True)
        else:  # someone else appends (as stamping does) and moves a history on
            p = em.p
            p.append_records(p.instr[len(p) - 1 :] if len(p) else p.instr[:0])
            em.tags.extend(*em.tags.arrays(len(em.tags) - 1) if len(em.tags) else em.tags.arrays())
            for b in (sb[0], sb[2], ps[0]):
                b.last_write = {"c0_dma9": len(p)}
    return em, sb + ps + slots + [hb]


@given(_actions)
def test_matmul_grid_equals_emitting_each(actions: list) -> None:
    fast, fb = _play(actions, True)
    ref, rb = _play(actions, False)
    assert fast.p.semaphores == ref.p.semaphores
    assert fast.p.instr.tobytes() == ref.p.instr.tobytes()
    assert fast.p.aps.tobytes() == ref.p.aps.tobytes()
    assert fast.tags.arrays()[0].tobytes() == ref.tags.arrays()[0].tobytes()
    assert {k: (s.sem, s.count, s.known) for k, s in fast._streams.items()} == {
        k: (s.sem, s.count, s.known) for k, s in ref._streams.items()}
    assert [(b.last_write, b.reads, b.war_base) for b in fb] == [(b.last_write, b.reads, b.war_base) for b in rb]


def test_matmul_grid_waits_once_per_new_access() -> None:
    """A grid after another stream wrote one of its moving tiles waits for that write, at the first entry
    reading it, and for nothing else; a tile written by five DMA queues gets the entry ``nop`` carriers."""
    actions = [
        ("grid", 0, [0, 1], [0, 1], [False, True, True]),
        ("vec", 1, 0),  # the vector engine writes s1 (row 1 of the next grid reads it)
        ("grid", 0, [0, 1], [0, 1], [False, True, True]),
        ("partial", 5, [0, 1, 2, 3, 4]),  # s5 written in parts by five DMA queues
        ("grid", 1, [2], [0, 5], [False, True, True]),
    ]
    fast, _ = _play(actions, True)
    ref, _ = _play(actions, False)
    assert fast.p.instr.tobytes() == ref.p.instr.tobytes()
    ins = fast.p.instr
    nwaits = (ins["wsem"] >= 0).sum(axis=1).tolist()
    assert nwaits[5:9] == [0, 0, 1, 0]  # second grid: only entry (1, 0) waits (for the vector copy)
    assert [Op(o).name for o in ins["op"][-4:]] == ["matmul", "nop", "nop", "matmul"]
    assert nwaits[-4:] == [0, 2, 2, 1]
    # a foreign append that moves s0's history on: the next grid reading s0 consults it again
    more = [*actions, ("foreign",), ("grid", 1, [2], [0, 5], [False, True, True])]
    fast, _ = _play(more, True)
    ref, _ = _play(more, False)
    assert fast.p.instr.tobytes() == ref.p.instr.tobytes()
    assert (fast.p.instr["wsem"][-2] >= 0).sum() == 1
    # one row whose second output tile was written in parts by three DMA queues: nop carriers mid-row
    more = [*actions, ("partial", _N_SB + 3, [0, 1, 2]), ("grid", 1, [2, 3], [0], [True, True, True])]
    fast, fb = _play(more, True)
    ref, rb = _play(more, False)
    assert fast.p.instr.tobytes() == ref.p.instr.tobytes()
    assert [Op(o).name for o in fast.p.instr["op"][-3:]] == ["matmul", "nop", "matmul"]
    assert [b.last_write for b in fb] == [b.last_write for b in rb]


@given(st.lists(st.tuples(st.sampled_from([Space.sbuf, Space.psum, Space.hbm]), st.integers(0, 1), st.integers(0, 3),
                          st.integers(1, 3), st.integers(0, 6), st.integers(1, 4)), max_size=12))
def test_link_aliases_links_exactly_the_overlapping_buffers(specs: list) -> None:
    reg: list[Buf] = []
    bufs = [Buf(f"b{i}", sp, core, p0, pc, off, n, tensor=f"t{core}" if sp == Space.hbm else None)
            for i, (sp, core, p0, pc, off, n) in enumerate(specs)]
    for b in bufs:
        link_aliases(reg, b)
    for i, b in enumerate(bufs):
        assert b.aliases == [o for j, o in enumerate(bufs) if j != i and o.overlaps(b)]
