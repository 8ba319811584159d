"""Compact generation of repeated layers.

Transformer layers lower to the same instructions up to (a) the per-layer HBM tensors they name and
(b) the absolute semaphore counts their waits carry. After emitting a few layers explicitly, the
lowering asks :func:`try_replicate` to verify that layer ``l``'s block is *exactly* layer ``l-1``'s block
with tensors renamed ``L{i} -> L{i+1}`` and every wait on an instruction at or after the start of the
block before shifted by that stream's per-layer instruction count (the first layer or two differ: no
history yet means fewer dependencies, hence fewer ``nop`` carriers); if so, layers ``l+1 .. n-2`` are
stamped out with numpy (records copied, waits shifted, HBM access patterns re-pointed) instead of being
emitted one instruction at a time, and the emitter/buffer state is advanced as if they had been. If
the check fails the caller simply emits every layer (slower, same program). Layer ``n-1`` is always
emitted explicitly (its prefetch reaches into the LM head, so it is not periodic). The instruction tags
(:mod:`.tags`) are part of the check (same op classes, layers one apart) and are stamped out with the
instructions, the layers counted on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from infsim.isa import Program, Space

from .emit import Buf, Emitter

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


def _tensor_map(program: Program, k: int) -> np.ndarray:
    """tensor id -> id of the same tensor k layers later (identity for non-layer tensors)."""
    names = list(program.tensors)
    out = np.arange(len(names), dtype=np.int64)
    for i, n in enumerate(names):
        m = _LAYER.match(n)
        if m:
            j = program._tensor_index.get(f"L{int(m.group(1)) + k}.{m.group(2)}")
            out[i] = -1 if j is None else j
    return out


def _shift_waits(rec: np.ndarray, thr: np.ndarray, delta: np.ndarray, k: int) -> np.ndarray:
    ws = rec["wsem"].astype(np.int64)
    wv = rec["wval"].astype(np.int64)
    idx = np.where(ws >= 0, ws, len(thr) - 1)
    shift = np.where((ws >= 0) & (wv > thr[idx]), k * delta[idx], 0)
    return (wv + shift).astype(rec["wval"].dtype)


def _remap_aps(program: Program, opnd: np.ndarray, tmap: np.ndarray, append: bool) -> np.ndarray | None:
    """Operand indices with HBM access patterns re-pointed by ``tmap`` (new AP rows appended if
    ``append``; else matched against existing rows is not attempted: returns the remapped rows)."""
    aps = program.aps
    used = np.unique(opnd[opnd >= 0])
    rows = aps[used].copy()
    hb = rows["space"] == int(Space.hbm)
    newt = tmap[rows["tensor"][hb]]
    if (newt < 0).any():
        return None
    changed = hb.copy()
    changed[hb] = newt != rows["tensor"][hb]
    rows["tensor"][hb] = newt
    if not append:
        return rows
    new_idx = used.copy()
    if changed.any():
        start = program.append_aps(rows[changed])
        new_idx[changed] = start + np.arange(int(changed.sum()))
    lut = np.full(int(used.max()) + 1 if len(used) else 1, -1, np.int64)
    lut[used] = new_idx
    out = np.where(opnd >= 0, lut[np.maximum(opnd, 0)], -1)
    return out.astype(opnd.dtype)


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
    """Replicate block [s2, s3) (layer ``base_layer``) up to ``copies`` times after s3 if it is block
    [s1, s2) shifted by one layer (waits into [s0, ...) shifted, earlier ones kept). Copies stop where
    the block's weight prefetch would reach past ``last_layer``. Returns the number of copies made."""
    p = em.p
    if copies <= 0:
        return 0
    b1 = p.instr[s1.n_instr : s2.n_instr]
    b2 = p.instr[s2.n_instr : s3.n_instr]
    if len(b1) != len(b2) or not len(b2):
        return 0
    c1, c2, c3 = (_sem_vec(p, s.counts) for s in (s1, s2, s3))
    c0 = _sem_vec(p, s0.counts)
    delta = c3 - c2
    if not np.array_equal(c2 - c1, delta):
        return 0
    # same fields apart from waits and operands
    for f in b1.dtype.names or ():
        if f in ("wval", "opnd"):
            continue
        if not np.array_equal(b1[f], b2[f]):
            return 0
    if not np.array_equal(_shift_waits(b1, c0, delta, 1), b2["wval"]):
        return 0
    t1 = _tensor_map(p, 1)
    o1, o2 = b1["opnd"], b2["opnd"]
    if not np.array_equal(o1 < 0, o2 < 0):
        return 0
    rows1 = p.aps[np.maximum(o1, 0)].copy()
    hb = rows1["space"] == int(Space.hbm)
    nt = t1[rows1["tensor"][hb]]
    if (nt < 0).any():
        return 0
    rows1["tensor"][hb] = nt
    rows2 = p.aps[np.maximum(o2, 0)]
    if not np.array_equal(rows1[o1 >= 0], rows2[o2 >= 0]):
        return 0
    cls1, lay1 = em.tags.arrays(s1.n_instr, s2.n_instr)
    cls2, lay2 = em.tags.arrays(s2.n_instr, s3.n_instr)
    if not np.array_equal(cls1, cls2) or not np.array_equal(np.where(lay1 >= 0, lay1 + 1, lay1), lay2):
        return 0
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
    # verified: stamp out the copies
    for k in range(1, copies + 1):
        tk = _tensor_map(p, k)
        rec = b2.copy()
        rec["wval"] = _shift_waits(b2, c1, delta, k)
        opnd = _remap_aps(p, b2["opnd"], tk, append=True)
        assert opnd is not None  # guaranteed by the reach check
        rec["opnd"] = opnd
        p.append_records(rec)
        em.tags.extend(cls2, np.where(lay2 >= 0, lay2 + k, lay2))
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

    for b in bufs:
        b.last_write, b.reads, b.war_base = (
            shift(b.last_write, copies),
            shift(b.reads, copies),
            shift(b.war_base, copies),
        )
    # per-layer HBM buffers of the stamped layers inherit layer 2's history, shifted
    for name, b in list(hbm_bufs.items()):
        m = _LAYER.match(name)
        if not m or int(m.group(1)) != base_layer:
            continue
        for k in range(1, copies + 1):
            tgt = f"L{base_layer + k}.{m.group(2)}"
            if tgt in p.tensors:
                nb = hbm_bufs.get(tgt) or Buf(tgt, Space.hbm, 0, 0, 0, 0, b.nbytes, tensor=tgt)
                nb.last_write, nb.reads, nb.war_base = shift(b.last_write, k), shift(b.reads, k), shift(b.war_base, k)
                hbm_bufs[tgt] = nb
    return copies
