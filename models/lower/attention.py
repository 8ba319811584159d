"""Attention of one layer, from the normalised hidden state to the attention output tiles (``attn``).

* q/k/v projections (:func:`.linear.linear`, biases loaded once before them), evicted feature-major in
  the KV dtype. Heads lie in tiles as :meth:`.plan.LoweringPlan.head_loc` says: packed several to a
  tile when ``head_dim`` divides the partitions, else in tiles of their own (one partial tile, or
  ``head_dim / P`` full ones whose partial products the score matmuls accumulate).
* Rotary embedding: the signed permutation matrix on the tensor engine (heads of ``2P`` features: the
  two halves swap tiles, a signed identity each), two vector multiplies (by the cos/sin columns of the
  chunk's positions, the ``rope_scaling`` applied to the tables) and an add.
* Decoders write the new keys/values to the HBM cache (K transposed ``[B, kv_heads, hd, ctx]``, V
  partition-major ``[B, kv_heads, P, ctx/P, hd]``: both are long contiguous runs); V rows are transposed
  on the tensor engine first (decode: one transpose per kv head into the ``vstage`` role).
* Per (sequence, kv head): K^T and V loaded from the cache over several DMA queues (decode: the new
  token from SBUF), scores ``q^T K`` (rows = query tokens, or the heads of a GQA group in decode), a row
  softmax (vector max, scalar exp with the max as per-partition bias and a fused sum, reciprocal,
  scale), then the probabilities transposed on the tensor engine and multiplied by V blocks,
  software-pipelined one block ahead. The masks are generated on GpSimd (iota + compare) and added to
  the scores where a key block needs them: causal (keys after the query) and, in a layer with a sliding
  window, the keys ``window`` or more positions before the query. A decode step reads only the last
  ``window`` keys (its V rows moved to partition ``(t - start) % P`` by the DMAs, so that P x V blocks
  start at partition 0); a prefill query block the whole V blocks its window reaches. Soft-capping
  (Gemma-2) evicts
  the scores through ``tanh`` with the attention scale folded in, and the softmax exponent scales by the
  cap.

Tags (:mod:`.tags`): ``qkv``, ``rope``, ``kv_write``, ``kv_load``, ``attn_scores``, ``softmax``,
``attn_pv``. The output projection, the residual and the TP all-reduce are the caller's
(:mod:`.transformer`).

Long contexts: when the keys of a (sequence, kv head) do not fit in SBUF at once (the plan's choice,
:attr:`.plan.LoweringPlan.kv_block`), decoders attend over key blocks with a running max and sum
(:func:`_attend_tiled`); other steps keep the whole-row softmax above, so their programs are unchanged.

Left out: key-block tiling for prefill and encoders (such an attention whose keys do not fit in SBUF is an
error), paged KV caches, a ring-buffer cache for sliding-window layers (the cache holds every
position), position encodings other than rotary (learned positions are in the input).
"""

from __future__ import annotations

import math

import numpy as np

from infsim.isa import ActFunc, AluOp, DType, Engine, Op, ReduceOp

from ..reference import rope_inv_freq
from ..spec import ModelSpec
from .emit import Buf, Tile
from .linear import Evict, bias_tile, evict_copy, linear, scale_tile
from .plan import V_ROW_SLOTS, LoweringPlan, Segment, rank_tensor
from .rank import Rank
from .tags import OpClass

#: score added to masked positions (exp of it underflows to 0 after any scale the softmax applies)
MASKED = -30000.0


def attention(
    pl: LoweringPlan, rk: Rank, L: int, segs: list[Segment], ncol: int, xn: list[Buf], xdt: DType
) -> list[Buf]:
    """Layer ``L``'s attention of the chunk ``segs`` (``ncol`` columns of ``xn``, dtype ``xdt``); returns
    the attention output tiles (feature-major, matmul dtype), the input of the output projection."""
    spec, kb, em = pl.spec, pl.kdt, rk.em
    qt, kt = pl.qt, pl.kt
    q = rk.tiles("q", qt, pl.tc * kb.itemsize)
    k = rk.tiles("k", kt, pl.tc * kb.itemsize)
    v = rk.tiles("v", kt, pl.tc * kb.itemsize)
    bias = spec.qkv_bias

    def ev_to(dst: list[Buf], weight: str, which: int) -> Evict:
        def ev(j: int, pt: Tile, msz: int) -> None:
            scale = scale_tile(pl, rk, weight, j, msz)
            b = bias_tile(rk, f"L{L}.bqkv", which, j, msz) if bias else None
            evict_copy(rk, dst[j].tile(kb, ncol, pcount=msz), pt, scale, b)

        return ev

    em.op_class = OpClass.qkv
    if bias:  # the whole bias vectors, loaded once before the projections (off the eviction path)
        for which in range(3):
            rk.load_vec(rank_tensor(f"L{L}.bqkv", rk.r), which)
    for which, (name, dst) in enumerate((("wq", q), ("wk", k), ("wv", v))):
        linear(pl, rk, f"L{L}.{name}", xn, xdt, ncol, ev_to(dst, f"L{L}.{name}", which))
    if spec.rotary:
        em.op_class = OpClass.rope
        load_rope(pl, rk, segs)  # once for q and k (a reload would wait for q's rotation to finish)
        rope(pl, rk, ncol, q, pl.heads_r)
        rope(pl, rk, ncol, k, pl.kvh_r)
    attn = rk.tiles("attn", qt, pl.tc * pl.mdt.itemsize)
    if spec.kind == "decoder":
        em.op_class = OpClass.kv_write
        kv_write(pl, rk, L, segs, k, v)
    for seg in segs:
        for g in range(pl.kvh_r):
            attend(pl, rk, L, seg, g, q, k, v, attn)
    return attn


def load_rope(pl: LoweringPlan, rk: Rank, segs: list[Segment]) -> None:
    """The cos/sin columns of the chunk's token positions (``cos``/``sin`` roles)."""
    P, kb = pl.P, pl.kdt
    tab = rk.hbm(rank_tensor("rope", rk.r))
    for which, buf in ((0, rk.buf_single("cos")), (1, rk.buf_single("sin"))):
        rk.em.new_write_epoch(buf)
        for seg in segs:
            src = tab.hbm(kb, P, pl.max_ctx, ((1, seg.n),), byte=(which * P * pl.max_ctx + seg.t0) * kb.itemsize)
            rk.dma(buf.tile(kb, seg.n, byte=seg.c0 * kb.itemsize), src, partial=True)


def rope(pl: LoweringPlan, rk: Rank, ncol: int, tiles: list[Buf], nheads: int) -> None:
    """Rotate the ``nheads`` heads held in ``tiles`` in place."""
    P, kb = pl.P, pl.kdt
    cos = rk.buf_single("cos")
    sin = rk.buf_single("sin")
    rt = rk.buf_single("rt0")
    if pl.hd_t == 2:  # halves of P features each: rotate_half swaps the tiles (x0, x1) -> (-x1, x0)
        for h in range(nheads):
            ti, _ = pl.head_loc(h)
            x = [tiles[ti + s].tile(kb, ncol, pcount=P) for s in range(2)]
            rots = []
            for s in range(2):
                rot = rk.bank().tile(DType.fp32, ncol, pcount=P)
                rk.mm(rot, rk.rot.buf.tile(kb, P, pcount=P, byte=s * P * kb.itemsize), x[1 - s], acc=False)
                rots.append(rot)
            for s in range(2):
                _rotate(rk, x[s], rots[s], rt.tile(DType.fp32, ncol, pcount=P), cos, sin, kb, ncol, P)
        return
    for t in range(pl.tiles_for(nheads)):
        rows = min(P, nheads * pl.hd - t * P) if pl.packed else pl.hd
        xt = tiles[t].tile(kb, ncol, pcount=rows)
        rot = rk.bank().tile(DType.fp32, ncol, pcount=rows)
        rk.mm(rot, rk.rot.buf.tile(kb, rows, pcount=rows), xt, acc=False)
        _rotate(rk, xt, rot, rt.tile(DType.fp32, ncol, pcount=rows), cos, sin, kb, ncol, rows)


def _rotate(rk: Rank, x: Tile, rot: Tile, tmp: Tile, cos: Buf, sin: Buf, kb: DType, ncol: int, rows: int) -> None:
    """``x = x * cos + rot * sin`` (``rot``: the rotated ``x`` in PSUM)."""
    rk.vec(Op.tensor_tensor, dst=tmp, in0=rot, in1=sin.tile(kb, ncol, pcount=rows), op=AluOp.mul)
    rk.vec(Op.tensor_tensor, dst=x, in0=x, in1=cos.tile(kb, ncol, pcount=rows), op=AluOp.mul)
    rk.vec(Op.tensor_tensor, dst=x, in0=x, in1=tmp, op=AluOp.add)


def rope_tables(spec: ModelSpec, P: int, max_ctx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cos [P, max_ctx], sin [P, max_ctx], rot) of the lowering's head layout (see
    :meth:`.plan.LoweringPlan.head_loc`): ``rot [P, P]`` the signed permutation of rotate_half over the
    heads of a tile, or, for heads of ``2P`` features, ``[2, P, P]``: ``-I`` and ``I``, the first half's
    and the second half's rotations from the other half."""
    hd = spec.head_dim
    inv = rope_inv_freq(spec)
    ang = np.outer(np.concatenate([inv, inv]), np.arange(max_ctx, dtype=np.float64))  # [hd, ctx]
    rows = P if (P % hd == 0 or hd > P) else hd  # feature rows of a tile that hold a head
    idx = np.arange(rows) % hd
    cos = np.zeros((P, max_ctx))
    sin = np.zeros((P, max_ctx))
    cos[:rows], sin[:rows] = np.cos(ang[idx]), np.sin(ang[idx])
    if hd > P:
        eye = np.eye(P)
        return cos, sin, np.stack([-eye, eye])
    rot = np.zeros((P, P))
    half = hd // 2
    for base in range(0, rows - hd + 1, hd):
        for i in range(half):
            rot[base + i + half, base + i] = -1.0  # out[i] = -x[i + half]
            rot[base + i, base + i + half] = 1.0  # out[i + half] = x[i]
    return cos, sin, rot


def _v_row_offset(pl: LoweringPlan, b: int, g: int, t: int) -> int:
    """Byte offset of token ``t``'s V row of sequence ``b``, kv head ``g`` in the partition-major cache."""
    P = pl.P
    return ((((b * pl.kvh_r + g) * P + t % P) * (pl.max_ctx // P)) + t // P) * pl.hd * pl.kdt.itemsize


def kv_write(pl: LoweringPlan, rk: Rank, L: int, segs: list[Segment], k: list[Buf], v: list[Buf]) -> None:
    """The chunk's keys and values into layer ``L``'s HBM caches."""
    P, hd, kb = pl.P, pl.hd, pl.kdt
    decode = pl.wl.phase == "decode"
    kname, vname = rank_tensor(f"L{L}.k_cache", rk.r), rank_tensor(f"L{L}.v_cache", rk.r)
    kc = rk.hbm.region(kname, "new") if decode else rk.hbm(kname)
    vc = rk.hbm.region(vname, "new") if decode else rk.hbm(vname)
    nblk = pl.max_ctx // P
    rk.em.new_write_epoch(kc)
    rk.em.new_write_epoch(vc)
    vrows = [rk.buf_single(f"vrow{i}") for i in range(V_ROW_SLOTS)]  # one buffer each: tracked apart
    nv = 0
    if decode and all(sg.n == 1 for sg in segs):
        stage_new_v(pl, rk, segs, v)
    for seg in segs:
        for g in range(pl.kvh_r):
            for sub in range(pl.hd_t):
                ti, p0 = pl.head_loc(g, sub)
                rows = pl.sub_rows(sub)
                src = k[ti].tile(kb, seg.n, pcount=rows, pstart=p0, byte=seg.c0 * kb.itemsize)
                off = (((seg.b * pl.kvh_r + g) * hd + sub * P) * pl.max_ctx + seg.t0) * kb.itemsize
                rk.dma(kc.hbm(kb, rows, pl.max_ctx, ((1, seg.n),), byte=off), src, partial=True)
            if decode and seg.n == 1:
                # one token: its staged V row (partition = chunk column) is one contiguous cache row
                row = rk.buf_single("vstage").tile(kb, hd, pcount=1, pstart=seg.c0 % P, byte=g * hd * kb.itemsize)
                dst = vc.hbm(kb, 1, nblk * hd, ((1, hd),), byte=_v_row_offset(pl, seg.b, g, seg.t0))
                rk.dma(dst, row, partial=True)
                continue
            # V: transpose [hd, n] -> [n, hd] rows, then store token rows partition-major
            t = seg.t0
            while t < seg.t1:
                n = min(seg.t1 - t, P - t % P)
                col = seg.c0 + (t - seg.t0)
                slot = vrows[nv % V_ROW_SLOTS]
                nv += 1
                for sub in range(pl.hd_t):
                    ti, p0 = pl.head_loc(g, sub)
                    rows = pl.sub_rows(sub)
                    rk.transpose_into(slot.tile(kb, rows, pcount=n, byte=sub * P * kb.itemsize),
                                      v[ti].tile(kb, n, pcount=rows, pstart=p0, byte=col * kb.itemsize))
                rowt = slot.tile(kb, hd, pcount=n)
                rk.dma(vc.hbm(kb, n, nblk * hd, ((1, hd),), byte=_v_row_offset(pl, seg.b, g, t)), rowt, partial=True)
                t += n


def stage_new_v(pl: LoweringPlan, rk: Rank, segs: list[Segment], v: list[Buf]) -> None:
    """Decode: transpose each kv head's new V columns ``[hd, sequences]`` into rows ``[sequences, hd]``
    (one TensorE transpose per kv head and head tile) into the ``vstage`` role."""
    P, hd, kb = pl.P, pl.hd, pl.kdt
    stage = rk.buf_single("vstage")
    ncol = len(segs)  # <= the batch <= P (LoweringPlan refuses larger batches)
    for g in range(pl.kvh_r):
        for sub in range(pl.hd_t):
            ti, p0 = pl.head_loc(g, sub)
            rows = pl.sub_rows(sub)
            rk.transpose_into(
                stage.tile(kb, rows, pcount=ncol, byte=(g * hd + sub * P) * kb.itemsize),
                v[ti].tile(kb, ncol, pcount=rows, pstart=p0, byte=segs[0].c0 * kb.itemsize),
            )


def split_load(
    pl: LoweringPlan,
    rk: Rank,
    dst: Buf,
    p0: int,
    rows: int,
    cols: int,
    src: Buf,
    row_stride: int,
    byte: int,
    epoch: bool = True,
    dst_byte: int = 0,
) -> None:
    """Load ``rows`` x ``cols`` elements (HBM rows ``row_stride`` apart) into partitions ``p0..`` of
    ``dst`` (from byte ``dst_byte``), as several DMAs over partition groups on different queues."""
    kb = pl.kdt
    parts = max(1, min(rows // 16, pl.other_queues // 2))
    per = math.ceil(rows / parts)
    if epoch:
        rk.em.new_write_epoch(dst)
    for r0 in range(0, rows, per):
        n = min(per, rows - r0)
        rk.dma(
            dst.tile(kb, cols, pcount=n, pstart=p0 + r0, byte=dst_byte),
            src.hbm(kb, n, row_stride, ((1, cols),), byte=byte + r0 * row_stride * kb.itemsize),
            partial=True,
        )


def _load_kv(
    pl: LoweringPlan, rk: Rank, L: int, seg: Segment, g: int, lo: int, kbuf: Buf, vbuf: Buf, k: list[Buf],
    hi: int | None = None,
) -> None:
    """K^T and V of sequence ``seg.b``, kv head ``g``, keys ``lo .. hi`` (default ``seg.t1``) into
    ``kbuf`` (key ``j`` at column ``j - lo`` of every head tile, tile ``s`` from column ``s * kcols``) and
    ``vbuf`` (key ``j`` at partition ``(j - lo) % P`` of block ``(j - lo) // P``); decoders: from the HBM
    cache, decode: the new token from SBUF (when ``hi`` is the segment's end)."""
    P, hd, kb = pl.P, pl.hd, pl.kdt
    nblk = pl.max_ctx // P
    kname, vname = rank_tensor(f"L{L}.k_cache", rk.r), rank_tensor(f"L{L}.v_cache", rk.r)
    decode = pl.wl.phase == "decode" and seg.n == 1
    hi = seg.t1 if hi is None else hi
    new = decode and hi == seg.t1  # the keys include the new token's
    kc = rk.hbm.region(kname, "old") if decode else rk.hbm(kname)
    vc = rk.hbm.region(vname, "old") if decode else rk.hbm(vname)
    end = hi - 1 if new else hi  # keys lo .. end from HBM (decode: the new token from SBUF)
    if end > lo:  # split over partition groups on several queues (the DMA engines work in parallel)
        if pl.hd_t > 1:
            rk.em.new_write_epoch(kbuf)
        for sub in range(pl.hd_t):
            _, p0_k = pl.head_loc(g, sub)
            off = (((seg.b * pl.kvh_r + g) * hd + sub * P) * pl.max_ctx + lo) * kb.itemsize
            split_load(pl, rk, kbuf, p0_k, pl.sub_rows(sub), end - lo, kc, pl.max_ctx, off, epoch=pl.hd_t == 1,
                       dst_byte=sub * pl.kcols * kb.itemsize)
    # V rows: the cache is partition-major (position t at partition t % P of block t // P); vbuf holds
    # key lo + i * P + p at partition p of block i, the DMAs shifting partitions by lo % P where needed
    voff = ((seg.b * pl.kvh_r + g) * P * nblk) * hd * kb.itemsize
    off, b0 = lo % P, lo // P

    def v_rows(p0: int, p1: int, blk: int, nb: int, dblk: int, epoch: bool = False) -> None:
        """vbuf partitions p0..p1 of blocks dblk.. <- cache partitions (p0 + off) % P.. of blocks blk.."""
        if p1 <= p0 or nb <= 0:
            return
        row = (p0 + off) % P
        split_load(pl, rk, vbuf, p0, p1 - p0, nb * hd, vc, nblk * hd, voff + (row * nblk + blk) * hd * kb.itemsize,
                   epoch=epoch, dst_byte=dblk * hd * kb.itemsize)

    n = end - lo  # keys from HBM
    full, rem = divmod(max(n, 0), P)
    if decode or lo:
        # whole blocks, then the partial last one; in decode the new token's slot is left out so that its
        # row (from vstage) can be written in the same write epoch
        rk.em.new_write_epoch(vbuf)
        split = P - off  # vbuf partitions below it come from cache block b0 + i, the others from b0 + i + 1
        v_rows(0, split, b0, full, 0)
        v_rows(split, P, b0 + 1, full, 0)
        v_rows(0, min(rem, split), b0 + full, 1, full)
        v_rows(split, rem, b0 + full + 1, 1, full)
    elif n > 0:
        v_rows(0, min(P, n), 0, math.ceil(n / P), 0, epoch=True)
    if new:
        t = seg.t1 - 1  # position of the new token
        for sub in range(pl.hd_t):
            ti_k, p0_k = pl.head_loc(g, sub)
            rows = pl.sub_rows(sub)
            rk.vec(
                Op.tensor_copy,
                dst=kbuf.tile(kb, 1, pcount=rows, pstart=p0_k, byte=(sub * pl.kcols + t - lo) * kb.itemsize),
                src=k[ti_k].tile(kb, 1, pcount=rows, pstart=p0_k, byte=seg.c0 * kb.itemsize),
            )
        rk.dma(
            vbuf.tile(kb, hd, pcount=1, pstart=(t - lo) % P, byte=((t - lo) // P) * hd * kb.itemsize),
            rk.buf_single("vstage").tile(kb, hd, pcount=1, pstart=seg.c0 % P, byte=g * hd * kb.itemsize),
            partial=True,
        )


def attend(
    pl: LoweringPlan,
    rk: Rank,
    L: int,
    seg: Segment,
    g: int,
    q: list[Buf],
    k: list[Buf],
    v: list[Buf],
    attn: list[Buf],
) -> None:
    """Attention of the query tokens of ``seg`` for the q heads of kv head ``g``."""
    spec, P, hd, kb, em = pl.spec, pl.P, pl.hd, pl.kdt, rk.em
    causal_prefill = spec.causal and pl.wl.phase == "prefill"
    window = spec.window(L)
    # keys the segment's queries reach: from the first query's window start to the segment's end
    lo = max(0, seg.t0 - window + 1) if window else 0
    heads = list(range(g * pl.group, min((g + 1) * pl.group, pl.heads_r)))
    stack = (not causal_prefill) and seg.n == 1 and hd % P == 0
    subs = range(pl.hd_t)
    em.op_class = OpClass.kv_load
    slot = rk.kv_slot
    rk.kv_slot ^= 1
    kbuf = rk.buf_single(f"kbuf{slot}")
    vbuf = rk.buf_single(f"vbuf{slot}")
    if pl.kv_block:
        _attend_tiled(pl, rk, L, seg, g, lo, stack, heads, q, k, attn)
        return
    if spec.kind == "decoder":
        _load_kv(pl, rk, L, seg, g, lo, kbuf, vbuf, k)
    # (encoder: keys/values of this sequence are the chunk's own k/v tiles, read in place below)
    sc = rk.buf_single("sc")
    pr = rk.buf_single("pr")
    st = rk.buf_single("stats")
    cap = spec.attn_softcap
    groups = [heads] if stack else [[h] for h in heads]
    for hs in groups:
        qblocks = [(0, 1)] if stack else [(t, min(P, seg.n - t)) for t in range(0, seg.n, P)]
        for tq0, nq in qblocks:
            rows, col, qloc, qs = _queries(pl, q, hs, stack, seg, tq0, nq)
            # queries at positions qpos0 .. qlast see keys klo .. khi
            # (a prefill query block starts a whole number of V blocks after lo: the keys before its
            # window the band mask removes)
            qpos0 = seg.t0 + tq0
            qlast = qpos0 + nq - 1
            klo = lo + (max(0, qpos0 - window + 1) - lo) // P * P if window else 0
            khi = qlast + 1 if causal_prefill else seg.t1
            n_keys = khi - klo
            scores = sc.tile(DType.fp32, n_keys, pcount=rows)
            em.op_class = OpClass.attn_scores
            _scores(pl, rk, L, seg, g, qs, rows, k, kbuf, lo, klo, n_keys, qpos0, qlast,
                    _stacked_q_waits(pl, q, hs, stack))
            m = st.tile(DType.fp32, 1, pcount=rows, byte=0)
            nb = st.tile(DType.fp32, 1, pcount=rows, byte=4)
            ssum = st.tile(DType.fp32, 1, pcount=rows, byte=8)
            scale = cap or spec.attn_scale
            em.op_class = OpClass.softmax
            rk.vec(Op.tensor_reduce, dst=m, src=scores, op=ReduceOp.max, axes=1)
            rk.vec(Op.tensor_scalar, dst=nb, src=m, op0=AluOp.mul, imm0=-scale)
            probs = pr.tile(kb, n_keys, pcount=rows)
            rk.act(ActFunc.exp, probs, scores, bias=nb, scale_imm=scale, reduce_dst=ssum)
            rk.act(ActFunc.reciprocal, ssum, ssum)
            rk.vec(Op.tensor_scalar, dst=probs, src=probs, scalar0=ssum, op0=AluOp.mul)
            # out^T [hd, rows] = sum over key blocks V_blk^T . P^T, one PSUM tile per head tile
            em.op_class = OpClass.attn_pv
            po = [rk.bank().tile(DType.fp32, rows, pcount=pl.sub_rows(sub), pstart=p0)  # lane-aligned with the head
                  for sub, (_, p0) in zip(subs, qloc)]
            # the transposes below skip po's banks: with more key blocks than free banks the ring wraps
            keep = tuple(t.buf for t in po)
            pts = [rk.buf_single("pt0"), rk.buf_single("pt1")]
            # key blocks of P, aligned with vbuf's blocks
            edges = [*range(klo, khi, P), khi]
            blocks = list(zip(edges[:-1], edges[1:]))

            def stage(bi: int, rows: int = rows, klo: int = klo, blocks: list = blocks,
                      pts: list[Buf] = pts, keep: tuple[Buf, ...] = keep) -> tuple[Tile, list[Tile]]:
                """P^T (and V: the decoder's cache block, the encoder's V^T transposed) of key block ``bi``."""
                a, b = blocks[bi]
                nk = b - a
                ptile = pts[bi % 2].tile(kb, rows, pcount=nk)
                rk.transpose_into(ptile, pr.tile(kb, nk, pcount=rows, byte=(a - klo) * kb.itemsize), keep)
                if spec.kind == "decoder":  # key a + i at partition i of vbuf block (a - lo) // P
                    return ptile, [vbuf.tile(kb, pl.sub_rows(sub), pcount=nk,
                                             byte=((a - lo) // P * hd + sub * P) * kb.itemsize) for sub in subs]
                vs = []
                for sub in subs:  # encoder: V^T tile [hd, tokens] -> need [keys, hd]: transpose the block
                    vti, vp0 = pl.head_loc(g, sub)
                    rsub = pl.sub_rows(sub)
                    t = vbuf.tile(kb, rsub, pcount=nk, byte=((bi % 2) * hd + sub * P) * kb.itemsize)
                    rk.transpose_into(t, v[vti].tile(kb, nk, pcount=rsub, pstart=vp0,
                                                     byte=(seg.c0 - seg.t0 + a) * kb.itemsize), keep)
                    vs.append(t)
                return ptile, vs

            # software-pipelined: block bi+1's transposes are issued before block bi's matmul, so the
            # TensorE transposes the next block while the VectorE copies this one out of PSUM
            staged = stage(0)
            for bi in range(len(blocks)):
                nxt = stage(bi + 1) if bi + 1 < len(blocks) else None
                for sub in subs:
                    rk.mm(po[sub], staged[1][sub], staged[0], acc=bi > 0)
                if nxt is not None:
                    staged = nxt
            # evict into the attention output tiles
            for sub, (ti, p0) in zip(subs, qloc):
                rk.vec(Op.tensor_copy, dst=_out_tile(pl, attn, ti, p0, sub, stack, len(hs), nq, col), src=po[sub])


def _scores(pl: LoweringPlan, rk: Rank, L: int, seg: Segment, g: int, qs: list[Tile], rows: int, k: list[Buf],
            kbuf: Buf, kbase: int, klo: int, n_keys: int, qpos0: int, qlast: int,
            q_waits: dict[str, int] | None = None) -> None:
    """Masked scores of the query rows ``qs`` (positions ``qpos0 .. qlast``) against keys ``klo ..
    klo + n_keys`` into the ``sc`` role (key ``klo + i`` at column ``i``), a PSUM bank of keys at a time
    (matmul, eviction: a copy, or ``tanh`` when soft-capping, plus the causal/window masks where a block
    needs them); decoders read K^T from ``kbuf`` (key ``j`` at column ``j - kbase``), encoders the
    chunk's ``k`` tiles. ``q_waits`` (writes to ``qs`` the emitter does not see) go on the first matmul."""
    spec, kb, em = pl.spec, pl.kdt, rk.em
    causal_prefill = spec.causal and pl.wl.phase == "prefill"
    window = spec.window(L)
    cap = spec.attn_softcap
    sc = rk.buf_single("sc")
    subs = range(pl.hd_t)
    blk_n = min(pl.chip.tensor_engine.moving_free_max, pl.bank_bytes // 4)
    for k0 in range(0, n_keys, blk_n):
        nk = min(blk_n, n_keys - k0)
        kpos = klo + k0  # position of the block's first key
        ps = rk.bank().tile(DType.fp32, nk, pcount=rows)
        for sub in subs:
            ti_k, p0_k = pl.head_loc(g, sub)
            if spec.kind == "decoder":
                mv = kbuf.tile(kb, nk, pcount=pl.sub_rows(sub), pstart=p0_k,
                               byte=(sub * pl.kcols + kpos - kbase) * kb.itemsize)
            else:
                mv = k[ti_k].tile(kb, nk, pcount=pl.sub_rows(sub), pstart=p0_k,
                                  byte=(seg.c0 - seg.t0 + kpos) * kb.itemsize)
            rk.mm(ps, qs[sub], mv, acc=sub > 0, extra_waits=q_waits if k0 == 0 and sub == 0 else None)
        dst = sc.tile(DType.fp32, nk, pcount=rows, byte=k0 * 4)
        # value = key_pos - query_pos: causal masks > 0, a window masks <= -window
        masks = [(AluOp.gt, 0.0)] if causal_prefill and kpos + nk > qpos0 else []
        if window and kpos <= qlast - window:
            masks.append((AluOp.le, float(-window)))
        src = ps
        if cap:  # soft-capping: tanh(scale * s / cap); the softmax multiplies by cap
            rk.act(ActFunc.tanh, dst, ps, scale_imm=spec.attn_scale / cap)
            src = dst
        elif not masks:
            rk.vec(Op.tensor_copy, dst=dst, src=ps)
        for cmp, edge in masks:
            mask = rk.buf_single("mask")
            em.emit(
                Op.iota,
                rk.core,
                Engine.gpsimd,
                dst=mask.tile(DType.int32, nk, pcount=rows),
                base=kpos - qpos0,
                channel_multiplier=-1,
                multipliers=(1,),
            )
            mk = mask.tile(DType.fp32, nk, pcount=rows)
            rk.vec(
                Op.tensor_scalar,
                dst=mk,
                src=mask.tile(DType.int32, nk, pcount=rows),
                op0=cmp,
                imm0=edge,
                op1=AluOp.mul,
                imm1=MASKED,
            )
            rk.vec(Op.tensor_tensor, dst=dst, in0=src, in1=mk, op=AluOp.add)
            src = dst


def _queries(pl: LoweringPlan, q: list[Buf], hs: list[int], stack: bool, seg: Segment, tq0: int,
             nq: int) -> tuple[int, int, list[tuple[int, int]], list[Tile]]:
    """(rows, chunk column, head locations, q tiles per head tile) of the query block ``tq0 .. tq0 + nq`` of
    ``seg`` for heads ``hs``: ``stack`` puts the heads of a GQA group as the rows (one decode token)."""
    kb, subs = pl.kdt, range(pl.hd_t)
    rows = len(hs) if stack else nq
    col = seg.c0 + tq0
    qloc = [pl.head_loc(hs[0], sub) for sub in subs]
    if stack:  # the group's heads as columns: head tiles hd_t tiles apart
        qs = [q[ti].tile(kb, dims=((pl.hd_t * pl.tc, len(hs)),), pstart=p0, pcount=pl.sub_rows(sub),
                         byte=col * kb.itemsize) for sub, (ti, p0) in zip(subs, qloc)]
    else:
        qs = [q[ti].tile(kb, nq, pstart=p0, pcount=pl.sub_rows(sub), byte=col * kb.itemsize)
              for sub, (ti, p0) in zip(subs, qloc)]
    return rows, col, qloc, qs


def _stacked_q_waits(pl: LoweringPlan, q: list[Buf], hs: list[int], stack: bool) -> dict[str, int]:
    """The waits for the last writes (rotary, eviction) of the head tiles a stacked q view (:func:`_queries`)
    reaches beyond its first head's: the emitter tracks the view through that head's tile only."""
    waits: dict[str, int] = {}
    if stack:
        for ti, _ in (pl.head_loc(h, sub) for h in hs[1:] for sub in range(pl.hd_t)):
            for sem, n in q[ti].last_write.items():
                waits[sem] = max(waits.get(sem, 0), n)
    return waits


def _out_tile(pl: LoweringPlan, attn: list[Buf], ti: int, p0: int, sub: int, stack: bool, nheads: int, nq: int,
              col: int) -> Tile:
    """The attention output tile of head tile ``sub`` (at tile ``ti``, partition ``p0``) of a query block."""
    if stack:
        return attn[ti].tile(pl.mdt, dims=((pl.hd_t * pl.tc, nheads),), pstart=p0, pcount=pl.sub_rows(sub),
                             byte=col * pl.mdt.itemsize)
    return attn[ti].tile(pl.mdt, nq, pstart=p0, pcount=pl.sub_rows(sub), byte=col * pl.mdt.itemsize)


def _attend_tiled(pl: LoweringPlan, rk: Rank, L: int, seg: Segment, g: int, lo: int, stack: bool,
                  heads: list[int], q: list[Buf], k: list[Buf], attn: list[Buf]) -> None:
    """:func:`attend` over key blocks of ``pl.kv_block`` keys (decode steps; the plan's choice when the keys of a
    head do not fit in SBUF at once), flash-style: per query block and key block, K^T and V of the block
    (double-buffered, reloaded for every head group and query block), its scores, the running row max
    ``m`` and the block's exponentials ``exp(scale * (s - m))`` with their sum; the earlier blocks' sum
    and output are rescaled by ``alpha = exp(scale * (m_old - m))`` (one exp, two vector ops for the sum,
    two for the output). The output accumulates as ``[query rows, hd]`` (P^T stationary, the V block
    moving) so that ``alpha`` and the final ``1 / sum`` are per-partition scalars; it is transposed into
    the feature-major ``attn`` tiles at the end."""
    spec, P, hd, kb, em = pl.spec, pl.P, pl.hd, pl.kdt, rk.em
    causal_prefill = spec.causal and pl.wl.phase == "prefill"
    window = spec.window(L)
    subs = range(pl.hd_t)
    sc, pr, st = rk.buf_single("sc"), rk.buf_single("pr"), rk.buf_single("stats")
    oacc, onorm = rk.buf_single("oacc"), rk.buf_single("onorm")
    pts = [rk.buf_single("pt0"), rk.buf_single("pt1")]
    scale = spec.attn_softcap or spec.attn_scale
    groups = [heads] if stack else [[h] for h in heads]
    for hs in groups:
        qblocks = [(0, 1)] if stack else [(t, min(P, seg.n - t)) for t in range(0, seg.n, P)]
        for tq0, nq in qblocks:
            rows, col, qloc, qs = _queries(pl, q, hs, stack, seg, tq0, nq)
            waits = _stacked_q_waits(pl, q, hs, stack)
            if waits:
                em.emit(Op.nop, rk.core, Engine.tensor, extra_waits=waits)
            qpos0 = seg.t0 + tq0
            qlast = qpos0 + nq - 1
            klo = lo + (max(0, qpos0 - window + 1) - lo) // P * P if window else 0
            khi = qlast + 1 if causal_prefill else seg.t1
            m = [st.tile(DType.fp32, 1, pcount=rows, byte=b) for b in (0, 12)]  # running max, two slots
            nb = st.tile(DType.fp32, 1, pcount=rows, byte=4)
            ssum = st.tile(DType.fp32, 1, pcount=rows, byte=8)
            bsum = st.tile(DType.fp32, 1, pcount=rows, byte=16)
            alpha = st.tile(DType.fp32, 1, pcount=rows, byte=20)
            o = oacc.tile(DType.fp32, hd, pcount=rows)
            for j, a in enumerate(range(klo, khi, pl.kv_block)):
                b = min(khi, a + pl.kv_block)
                em.op_class = OpClass.kv_load
                slot = rk.kv_slot
                rk.kv_slot ^= 1
                kbuf, vbuf = rk.buf_single(f"kbuf{slot}"), rk.buf_single(f"vbuf{slot}")
                _load_kv(pl, rk, L, seg, g, a, kbuf, vbuf, k, hi=b)
                em.op_class = OpClass.attn_scores
                _scores(pl, rk, L, seg, g, qs, rows, k, kbuf, a, a, b - a, qpos0, qlast)
                scores = sc.tile(DType.fp32, b - a, pcount=rows)
                em.op_class = OpClass.softmax
                mj, mprev = m[j % 2], m[(j - 1) % 2]
                rk.vec(Op.tensor_reduce, dst=mj, src=scores, op=ReduceOp.max, axes=1)
                if j:
                    rk.vec(Op.tensor_tensor, dst=mj, in0=mj, in1=mprev, op=AluOp.max)
                rk.vec(Op.tensor_scalar, dst=nb, src=mj, op0=AluOp.mul, imm0=-scale)
                probs = pr.tile(kb, b - a, pcount=rows)
                rk.act(ActFunc.exp, probs, scores, bias=nb, scale_imm=scale, reduce_dst=bsum if j else ssum)
                if j:  # rescale the running sum: ssum = ssum * alpha + bsum
                    rk.act(ActFunc.exp, alpha, mprev, bias=nb, scale_imm=scale)
                    rk.vec(Op.tensor_tensor, dst=ssum, in0=ssum, in1=alpha, op=AluOp.mul)
                    rk.vec(Op.tensor_tensor, dst=ssum, in0=ssum, in1=bsum, op=AluOp.add)
                # the block's P x V [rows, hd], accumulated over its 128-key sub-blocks in one PSUM bank
                em.op_class = OpClass.attn_pv
                pv = rk.bank().tile(DType.fp32, hd, pcount=rows)
                for i, c0 in enumerate(range(a, b, P)):
                    nk = min(P, b - c0)
                    ptile = pts[i % 2].tile(kb, rows, pcount=nk)
                    rk.transpose_into(ptile, pr.tile(kb, nk, pcount=rows, byte=(c0 - a) * kb.itemsize))
                    rk.mm(pv, ptile, vbuf.tile(kb, hd, pcount=nk, byte=(c0 - a) // P * hd * kb.itemsize), acc=i > 0)
                if j:
                    rk.vec(Op.tensor_scalar, dst=o, src=o, scalar0=alpha, op0=AluOp.mul)
                    rk.vec(Op.tensor_tensor, dst=o, in0=o, in1=pv, op=AluOp.add)
                else:
                    rk.vec(Op.tensor_copy, dst=o, src=pv)
            # normalise, then transpose [rows, hd] into the feature-major output (lane-aligned with the head)
            rk.act(ActFunc.reciprocal, ssum, ssum)
            rk.vec(Op.tensor_scalar, dst=onorm.tile(pl.mdt, hd, pcount=rows), src=o, scalar0=ssum, op0=AluOp.mul)
            for sub, (ti, p0) in zip(subs, qloc):
                rsub = pl.sub_rows(sub)
                pt = rk.bank().tile(DType.fp32, rows, pcount=rsub, pstart=p0)
                em.emit(Op.transpose, rk.core, Engine.tensor, dst=pt,
                        src=onorm.tile(pl.mdt, rsub, pcount=rows, byte=sub * P * pl.mdt.itemsize))
                rk.vec(Op.tensor_copy, dst=_out_tile(pl, attn, ti, p0, sub, stack, len(hs), nq, col), src=pt)
