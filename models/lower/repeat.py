"""Compact generation of repeated layers.

Transformer layers lower to the same instructions up to (a) the per-layer HBM tensors they name and
(b) the absolute semaphore counts their waits carry. After emitting a few layers of a token chunk
explicitly, the lowering asks :func:`try_replicate` to verify that the blocks of layers ``l-2``, ``l-1`` and
``l`` are one block with tensors renamed ``L{i} -> L{i+1}`` and every wait's value moving by the same amount
from one layer to the next: the amount is derived per wait from layers ``l-1`` and ``l`` and verified on
``l-2``. A wait on an instruction of the same chunk's layer moves by that stream's per-layer instruction
count, one on an earlier token chunk's layer (prefill: K/V cache, buffer reuse) by that chunk's, one on
something outside the layers not at all (the first layer or two differ: no history yet means fewer
dependencies, hence fewer ``nop`` carriers). If so, layers ``l+1 .. n-2`` are stamped out with numpy (records
copied, waits moved, HBM access patterns re-pointed) instead of being emitted one instruction at a time,
and the emitter and buffer state is advanced as emitting them would (the per-layer HBM buffers' histories
are moved the same way, derived and verified on three layers too). If a check fails the caller emits the
layer and tries again on the next (slower, same program). Layer ``n-1`` is always emitted explicitly (its
prefetch reaches into the LM head or the next chunk, so it is not periodic). The instruction tags
(:mod:`.tags`) are part of the check (same op classes, layers one apart) and are stamped out with the
instructions, the layers counted on.

Ranks. Tensor-parallel ranks lower to the same instructions up to their core, their tensors' ``.r{r}``
suffix and their streams' semaphores ``c{core}_*`` (heads and features are split evenly, padded up), except
where ``transformer._Lowering.rank_variant`` says (rank 0 adds the output biases). The lowering emits one
rank of each variant and :func:`stamp_rank` appends it renamed for the others, with semaphores declared and
access patterns interned in the order emitting would give (tests compare both paths byte for byte).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import numpy as np

from infsim.isa import Program, Space
from infsim.isa.records import IMM_FIELDS, read_fields

from .emit import Buf, Emitter, _Stream

_LAYER = re.compile(r"^L(\d+)\.(.*)$")


@dataclass
class Snapshot:
    n_instr: int
    counts: dict[str, int]  # stream semaphore -> count
    n_aps: int


def snapshot(em: Emitter) -> Snapshot:
    return Snapshot(len(em.p), {s.sem: s.count for s in em._streams.values()}, len(em.p.aps))


def _sem_vec(program: Program, counts: dict[str, int]) -> np.ndarray:
    v = np.zeros(len(program.semaphores) + 1, np.int64)
    for s, c in counts.items():
        if s in program._sem_index:
            v[program.sem_id(s)] = c
    return v


class _LayerNames:
    """The program's tensor names parsed as ``L{layer}.{rest}`` (:data:`_LAYER`), kept up to date as tensors
    are added (tensor ids are insertion positions; names are parsed once, not once per :func:`_tensor_map`)."""

    def __init__(self, program: Program):
        self.ref = weakref.ref(program)
        self.n = 0
        self.lay: list[int] = []  # layer number (-1: not a layer tensor)
        self.rid: list[int] = []  # id of the ``rest`` string
        self.canon: list[bool] = []  # the name is exactly ``f"L{lay}.{rest}"`` (what a lookup by name finds)
        self.rests: dict[str, int] = {}

    def update(self, program: Program) -> None:
        names = list(program.tensors)
        for name in names[self.n:]:
            m = _LAYER.match(name)
            if m:
                self.lay.append(int(m.group(1)))
                self.rid.append(self.rests.setdefault(m.group(2), len(self.rests)))
                self.canon.append(name == f"L{int(m.group(1))}.{m.group(2)}")
            else:
                self.lay.append(-1)
                self.rid.append(-1)
                self.canon.append(False)
        self.n = len(names)


_LAYER_NAMES: dict[int, _LayerNames] = {}  # id(program) -> its parsed names (entries of dead programs pruned)


def _layer_names(program: Program) -> _LayerNames:
    ln = _LAYER_NAMES.get(id(program))
    if ln is None or ln.ref() is not program:
        for key in [k for k, v in _LAYER_NAMES.items() if v.ref() is None]:
            del _LAYER_NAMES[key]
        ln = _LAYER_NAMES[id(program)] = _LayerNames(program)
    ln.update(program)
    return ln


def _tensor_map(program: Program, k: int) -> np.ndarray:
    """tensor id -> id of the same tensor k layers later (identity for non-layer tensors; -1 where the
    tensor named ``L{layer + k}.{rest}`` does not exist)."""
    ln = _layer_names(program)
    lay = np.array(ln.lay, dtype=np.int64)
    rid = np.array(ln.rid, dtype=np.int64)
    out = np.arange(len(lay), dtype=np.int64)
    is_layer = lay >= 0
    if not is_layer.any():
        return out
    span = int(lay.max()) + abs(k) + 1
    key = rid * span + lay  # (rest, layer) as one integer
    tgt_ids = np.flatnonzero(is_layer & np.array(ln.canon, dtype=bool))  # tensors a lookup by name can find
    order = np.argsort(key[tgt_ids], kind="stable")
    keys = key[tgt_ids][order]
    src = np.flatnonzero(is_layer)
    want = rid[src] * span + lay[src] + k
    pos = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
    found = (lay[src] + k >= 0) & (len(keys) > 0) & (keys[pos] == want if len(keys) else False)
    out[src] = np.where(found, tgt_ids[order][pos] if len(keys) else -1, -1)
    return out


def _relayer(name: str, k: int) -> str:
    """``L{i}.rest`` -> ``L{i+k}.rest``."""
    m = _LAYER.match(name)
    assert m, name
    return f"L{int(m.group(1)) + k}.{m.group(2)}"


def _layer_buf(hbm_bufs: dict[str, Buf], name: str, like: Buf, k: int) -> Buf:
    """The tracked HBM buffer ``name`` (created if new: ``like``'s, ``k`` layers on)."""
    b = hbm_bufs.get(name)
    if b is None:
        tensor = like.tensor and _relayer(like.tensor, k)
        b = hbm_bufs[name] = Buf(name, Space.hbm, 0, 0, 0, 0, like.nbytes, tensor=tensor)
    return b


def _hbm_steps(hbm_bufs: dict[str, Buf], base: int) -> dict[str, tuple[Buf, list[dict[str, int]]]] | None:
    """Per HBM buffer of layer ``base`` (tracked per layer, ``L{base}.*``): how each entry of its history
    (last writes, reads, partial-write base) moves from one layer to the next, derived from layers
    ``base-1`` and ``base`` and verified on ``base-2`` (entries can point into this token chunk's layer or
    an earlier chunk's, which move by different amounts); ``None`` if a history does not move that way."""
    out: dict[str, tuple[Buf, list[dict[str, int]]]] = {}
    for name, b in hbm_bufs.items():
        m = _LAYER.match(name)
        if not m or int(m.group(1)) != base:
            continue
        b1, b0 = (hbm_bufs.get(f"L{base - d}.{m.group(2)}") for d in (1, 2))
        if b1 is None or b0 is None:
            return None
        steps = []
        for h2, h1, h0 in zip(*((x.last_write, x.reads, x.war_base) for x in (b, b1, b0))):
            if not (h2.keys() == h1.keys() == h0.keys()):
                return None
            st = {s: h2[s] - h1[s] for s in h2}
            if any(h1[s] - h0[s] != st[s] for s in h2):
                return None
            steps.append(st)
        out[name] = (b, steps)
    return out


def _stamp_operands(program: Program, opnd: np.ndarray, tmap: np.ndarray) -> np.ndarray | None:
    """Operand indices ``opnd`` with HBM access patterns re-pointed by ``tmap``, the re-pointed ones
    interned in order of first use (so the AP table is the one emitting them would give); ``None``
    if one names a tensor ``tmap`` has no image for."""
    aps = program.aps
    hb = aps["space"] == int(Space.hbm)  # per AP-table row
    newt = np.where(hb, tmap[np.where(hb, aps["tensor"], 0)], -1)
    flat = opnd.reshape(-1).astype(np.int64)
    valid = flat >= 0
    ids = np.where(valid, flat, 0)
    if (valid & hb[ids] & (newt[ids] < 0)).any():
        return None
    changed_row = hb & (newt != aps["tensor"])
    where = np.flatnonzero(valid & changed_row[ids])
    out = flat
    if len(where):
        ch = flat[where]
        uniq, first = np.unique(ch, return_index=True)
        order = np.argsort(first, kind="stable")  # first use: instruction order, then slot order
        new_rows = aps[uniq[order]].copy()
        new_rows["tensor"] = newt[uniq[order]]
        new_ids = np.empty(len(uniq), np.int64)
        new_ids[order] = program.intern_aps(new_rows)
        out = flat.copy()
        out[where] = new_ids[np.searchsorted(uniq, ch)]
    return out.reshape(opnd.shape).astype(opnd.dtype)


def try_replicate(
    em: Emitter,
    s0: Snapshot,
    s1: Snapshot,
    s2: Snapshot,
    s3: Snapshot,
    copies: int,
    bufs: list[Buf],
    hbm_bufs: dict[str, Buf],
    base_layer: int,
    last_layer: int,
) -> int:
    """Replicate block [s2, s3) (layer ``base_layer``) up to ``copies`` times after s3 if the three blocks
    [s0, s1), [s1, s2), [s2, s3) are one block shifted by one layer each: same records but for the waits
    and the HBM tensors (``L{i} -> L{i+1}``), and every wait's value moving by the same amount from one
    layer to the next (derived from the last two, verified on the first). Copies stop where the block's
    weight prefetch would reach past ``last_layer``. Returns the number of copies made."""
    p = em.p
    if copies <= 0:
        return 0
    b0 = p.instr[s0.n_instr : s1.n_instr]
    b1 = p.instr[s1.n_instr : s2.n_instr]
    b2 = p.instr[s2.n_instr : s3.n_instr]
    if not (len(b0) == len(b1) == len(b2)) or not len(b2):
        return 0
    c1, c2, c3 = (_sem_vec(p, s.counts) for s in (s1, s2, s3))
    delta = c3 - c2
    if not np.array_equal(c2 - c1, delta) or not np.array_equal(c1 - _sem_vec(p, s0.counts), delta):
        return 0
    # same fields apart from waits and operands
    for f in b1.dtype.names or ():
        if f in ("wval", "opnd"):
            continue
        if not (np.array_equal(b0[f], b1[f]) and np.array_equal(b1[f], b2[f])):
            return 0
    # each wait moves by the same amount per layer: its own stream's layer (the per-layer instruction count
    # of the stream it waits for), a layer of an earlier token chunk (that chunk's count), or not at all
    w0, w1, w2 = (b["wval"].astype(np.int64) for b in (b0, b1, b2))
    step = w2 - w1
    if not np.array_equal(w1 - w0, step):
        return 0
    # same operands but for HBM tensors one layer on: the AP table holds each record once (Program.ap_id and
    # intern_aps deduplicate), so on-chip operands must be the same AP index, and only the HBM ones are
    # compared record by record (with the tensor moved on)
    t1 = _tensor_map(p, 1)
    is_hbm = p.aps["space"] == int(Space.hbm)
    for bx, by in ((b0, b1), (b1, b2)):
        ox, oy = bx["opnd"], by["opnd"]
        if not np.array_equal(ox < 0, oy < 0):
            return 0
        vx, vy = ox[ox >= 0], oy[oy >= 0]
        hx = is_hbm[vx]
        if not (np.array_equal(hx, is_hbm[vy]) and np.array_equal(vx[~hx], vy[~hx])):
            return 0
        rows = p.aps[vx[hx]]  # (a copy: fancy indexing)
        nt = t1[rows["tensor"]]
        if (nt < 0).any():
            return 0
        rows["tensor"] = nt
        if not np.array_equal(rows, p.aps[vy[hx]]):
            return 0
    cls0, lay0 = em.tags.arrays(s0.n_instr, s1.n_instr)
    cls1, lay1 = em.tags.arrays(s1.n_instr, s2.n_instr)
    cls2, lay2 = em.tags.arrays(s2.n_instr, s3.n_instr)
    for ca, la, cb, lb in ((cls0, lay0, cls1, lay1), (cls1, lay1, cls2, lay2)):
        if not np.array_equal(ca, cb) or not np.array_equal(np.where(la >= 0, la + 1, la), lb):
            return 0
    o2 = b2["opnd"]
    # how far ahead (in layers) the block reaches: its copies must only name existing layers
    names = list(p.tensors)
    used = np.unique(o2[o2 >= 0])
    r = p.aps[used]
    layers_seen = [
        int(m.group(1))
        for t in np.unique(r["tensor"][r["space"] == int(Space.hbm)])
        if (m := _LAYER.match(names[int(t)]))
    ]
    reach = max(layers_seen, default=base_layer) - base_layer
    copies = min(copies, last_layer - base_layer - reach)
    if copies <= 0:
        return 0
    hbm_steps = _hbm_steps(hbm_bufs, base_layer)
    if hbm_steps is None:
        return 0
    # verified: stamp out the copies
    p.reserve(copies * len(b2))
    ws = b2["wsem"]
    for k in range(1, copies + 1):
        tk = _tensor_map(p, k)
        opnd = _stamp_operands(p, b2["opnd"], tk)
        assert opnd is not None  # guaranteed by the reach check
        n0 = len(p)
        p.append_records(b2)
        # moved on in place: the rows just appended to the program this lowering builds (no other holder)
        rec = p.instr[n0:]
        rec["wval"] = np.where(ws >= 0, w2 + k * step, 0)
        rec["opnd"] = opnd
        em.tags.extend(cls2, np.where(lay2 >= 0, lay2 + k, lay2))
    last = rec
    # advance the emitter and buffer state by `copies` layers
    for st in em._streams.values():
        if st.sem in p._sem_index:
            st.count += copies * int(delta[p.sem_id(st.sem)])

    def shift(d: dict[str, int], k: int) -> dict[str, int]:
        out = {}
        for s, v in d.items():
            i = p._sem_index.get(s)
            out[s] = v + k * int(delta[i]) if i is not None and v > c1[i] else v
        return out

    # what each stream has waited for so far (implied waits): the largest wait of the last copy per stream and
    # semaphore (a stream's waits on one semaphore grow along the program), else what it was
    key = (last["core"].astype(np.int64) << 16) | (last["engine"].astype(np.int64) << 8) | last["queue"]
    for (core, eng, q), st in em._streams.items():
        mine = last[key == ((core << 16) | (eng << 8) | q)]
        for slot in range(mine["wsem"].shape[1]):
            for s_id, v in zip(mine["wsem"][:, slot].tolist(), mine["wval"][:, slot].tolist()):
                if s_id >= 0:
                    name = p.semaphores[s_id]
                    if v > st.known.get(name, 0):
                        st.known[name] = v
    for b in bufs:
        b.last_write, b.reads, b.war_base = (
            shift(b.last_write, copies),
            shift(b.reads, copies),
            shift(b.war_base, copies),
        )
    # HBM buffers of the layers after the base one that the base layer's block touches (weights it prefetches):
    # those ``copies`` layers further on get the same touches from the last copy, on top of their own history
    # (read before the loop below overwrites layers base+1.. with the base layer's history)
    for name, b in list(hbm_bufs.items()):
        m = _LAYER.match(name)
        if not m or not base_layer < int(m.group(1)) <= base_layer + reach:
            continue
        tgt = f"L{int(m.group(1)) + copies}.{m.group(2)}"
        nb = _layer_buf(hbm_bufs, tgt, b, copies)
        for src, dst in ((b.last_write, nb.last_write), (b.reads, nb.reads), (b.war_base, nb.war_base)):
            for s, v in src.items():
                i = p._sem_index[s]
                if v > c2[i]:  # a touch by the base layer's block
                    dst[s] = v + copies * int(delta[i])
    # per-layer HBM buffers of the stamped layers: the base layer's history moved on by whole layers
    for name, (b, steps) in hbm_steps.items():
        rest = name[len(f"L{base_layer}.") :]
        for k in range(1, copies + 1):
            tgt = f"L{base_layer + k}.{rest}"
            nb = _layer_buf(hbm_bufs, tgt, b, k)
            nb.last_write, nb.reads, nb.war_base = (
                {s: v + k * steps[j][s] for s, v in d.items()}
                for j, d in enumerate((b.last_write, b.reads, b.war_base))
            )
    return copies


#: instructions stamped per step of :func:`stamp_rank` (bounds its temporaries)
_PIECE = 1 << 16

#: opcodes whose immediates name a semaphore or a core (a rank's block using them is not stamped: the
#: immediates would need renaming too)
_CORE_IMMS = frozenset(op for op, fields in IMM_FIELDS.items() if any(k == "sem" or n == "peer" for n, k, _ in fields))
_CORE_IMM_OPS = np.zeros(256, bool)  # by opcode: one of _CORE_IMMS
_CORE_IMM_OPS[[int(o) for o in _CORE_IMMS]] = True


def stamp_rank(em: Emitter, start: int, stop: int, src: int, dst: int, hbm_bufs: dict[str, Buf]) -> bool:
    """Append the instructions ``start..stop`` (all of rank/core ``src``'s block) again for rank ``dst``:
    core ``src -> dst``, HBM tensors ``*.r{src} -> *.r{dst}``, semaphores ``c{src}_* -> c{dst}_*`` (declared
    in the order the block first uses them, as emitting it would), re-pointed access patterns interned in
    order of first use, tags copied, the emitter's streams and the tracked HBM buffers (``hbm_bufs``) left
    as emitting would leave them. The caller guarantees that the lowering of ``dst`` is that of ``src``
    renamed (see ``transformer._Lowering.rank_template``). Returns ``False`` (and appends nothing) if the
    block is not a self-contained rank block: another core's instruction or semaphore, a tensor with no
    image, an immediate naming a semaphore or core, or semaphores of the block declared before it."""
    p = em.p
    blk = p.instr[start:stop]
    if not len(blk):
        return False
    ops, cores = read_fields(blk, "op", "core")
    if (cores != src).any() or _CORE_IMM_OPS[ops].any():
        return False
    sp, dp = f"c{src}_", f"c{dst}_"
    counts = np.zeros(len(p.semaphores) + 1, np.int64)  # per semaphore id + 1 (0: an unused slot)
    for col in read_fields(blk, "wsem", "ssem"):
        for k in range(col.shape[1]):
            counts += np.bincount(col[:, k] + 1, minlength=len(counts))[: len(counts)]
    used = np.flatnonzero(counts[1:])  # the block's semaphores, ascending (no sort of its slots)
    names = [p.semaphores[int(s)] for s in used]
    if any(not n.startswith(sp) or dp + n[len(sp):] in p._sem_index for n in names):
        return False
    if start > 0:  # the block's semaphores must be first used in it (their ids then follow its first-use order)
        mine = np.zeros(len(p.semaphores) + 1, bool)  # index -1 (unused slot) -> False
        mine[used] = True
        if any(mine[col].any() for col in read_fields(p.instr[:start], "wsem", "ssem")):
            return False
    rs, rd = f".r{src}", f".r{dst}"
    tnames = list(p.tensors)
    tmap = np.arange(len(tnames), dtype=np.int64)
    for i, n in enumerate(tnames):
        if n.endswith(rs):
            tmap[i] = p._tensor_index.get(n[: -len(rs)] + rd, -1)
    aps = p.aps
    hb = aps["space"] == int(Space.hbm)
    # per AP-table row, and False at index -1 (an absent operand)
    no_image = np.append(hb & (tmap[np.where(hb, aps["tensor"], 0)] < 0), False)
    for a in range(0, len(blk), _PIECE):
        if no_image[blk["opnd"][a : a + _PIECE]].any():
            return False
    smap = np.full(len(p.semaphores) + 1, -1, np.int64)  # index -1 -> -1
    for s in used:  # ids in declaration order = the block's first-use order
        smap[int(s)] = p.semaphore(dp + p.semaphores[int(s)][len(sp):])
    p.reserve(len(blk))
    for a in range(0, len(blk), _PIECE):  # in pieces: temporaries stay small whatever the block's size
        n0 = len(p)
        p.append_records(blk[a : a + _PIECE])
        # renamed in place: the rows just appended to the program this lowering builds (no other holder)
        rec = p.instr[n0:]
        opnd = _stamp_operands(p, rec["opnd"], tmap)
        assert opnd is not None  # checked above
        rec["core"] = dst
        rec["opnd"] = opnd
        rec["wsem"] = smap[rec["wsem"]]
        rec["ssem"] = smap[rec["ssem"]]
    em.tags.extend(*em.tags.arrays(start, stop))
    for (core, eng, q), st in list(em._streams.items()):  # the new streams, as emitting would leave them
        if core == src:
            em._streams[(dst, eng, q)] = _Stream(dp + st.sem[len(sp):], st.count,
                                                 {dp + s[len(sp):]: v for s, v in st.known.items()})

    def ren(d: dict[str, int]) -> dict[str, int]:
        return {dp + s[len(sp):]: v for s, v in d.items()}

    for key, b in list(hbm_bufs.items()):
        if b.tensor and b.tensor.endswith(rs):
            tensor = b.tensor[: -len(rs)] + rd
            nb = Buf(tensor + key[len(b.tensor):], Space.hbm, 0, 0, 0, 0, b.nbytes, tensor=tensor)
            nb.last_write, nb.reads, nb.war_base = ren(b.last_write), ren(b.reads), ren(b.war_base)
            hbm_bufs[nb.name] = nb
    return True
