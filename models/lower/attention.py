"""Attention of one layer, from the normalised hidden state to the attention output tiles (``attn``).

* q/k/v projections (:func:`.linear.linear`, biases loaded once before them), evicted feature-major in
  the KV dtype.
* Rotary embedding: the signed permutation matrix on the tensor engine, two vector multiplies (by the
  cos/sin columns of the chunk's positions) and an add.
* Decoders write the new keys/values to the HBM cache (K transposed ``[B, kv_heads, hd, ctx]``, V
  partition-major ``[B, kv_heads, P, ctx/P, hd]``: both are long contiguous runs); V rows are transposed
  on the tensor engine first (decode: one transpose per kv head into the ``vstage`` role).
* Per (sequence, kv head): K^T and V loaded from the cache over several DMA queues (decode: the new
  token from SBUF), scores ``q^T K`` (rows = query tokens, or the heads of a GQA group in decode) with
  the causal mask generated on GpSimd (iota + compare), a row softmax (vector max, scalar exp with the
  max as per-partition bias and a fused sum, reciprocal, scale), then the probabilities transposed on
  the tensor engine and multiplied by V blocks, software-pipelined one block ahead.

Tags (:mod:`.tags`): ``qkv``, ``rope``, ``kv_write``, ``kv_load``, ``attn_scores``, ``softmax``,
``attn_pv``. The output projection, the residual and the TP all-reduce are the caller's
(:mod:`.transformer`).

Left out: flash-style blocking of very long contexts (an attention whose keys do not fit in SBUF is an
error), paged KV caches, position encodings other than rotary (learned positions are in the input).
"""

from __future__ import annotations

import math

import numpy as np

from infsim.isa import ActFunc, AluOp, DType, Engine, Op, ReduceOp

from .alloc import LoweringError
from .emit import Buf, Tile
from .linear import Evict, bias_tile, evict_copy, linear, scale_tile
from .plan import V_ROW_SLOTS, LoweringPlan, Segment, rank_tensor
from .rank import Rank
from .tags import OpClass


def attention(
    pl: LoweringPlan, rk: Rank, L: int, segs: list[Segment], ncol: int, xn: list[Buf], xdt: DType
) -> list[Buf]:
    """Layer ``L``'s attention of the chunk ``segs`` (``ncol`` columns of ``xn``, dtype ``xdt``); returns
    the attention output tiles (feature-major, matmul dtype), the input of the output projection."""
    spec, P, hd, kb, em = pl.spec, pl.P, pl.hd, pl.kdt, rk.em
    qt = math.ceil(pl.heads_r * hd / P)
    kt = math.ceil(pl.kvh_r * hd / P)
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
        rope(pl, rk, ncol, q, qt, pl.heads_r)
        rope(pl, rk, ncol, k, kt, pl.kvh_r)
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


def rope(pl: LoweringPlan, rk: Rank, ncol: int, tiles: list[Buf], nt: int, nheads: int) -> None:
    """Rotate the ``nheads`` heads held in the first ``nt`` of ``tiles`` in place."""
    P, kb = pl.P, pl.kdt
    cos = rk.buf_single("cos")
    sin = rk.buf_single("sin")
    rt = rk.buf_single("rt0")
    for t in range(nt):
        rows = min(P, nheads * pl.hd - t * P)
        x = tiles[t].tile(kb, ncol, pcount=rows)
        rot = rk.bank().tile(DType.fp32, ncol, pcount=rows)
        rk.mm(rot, rk.rot.buf.tile(kb, rows, pcount=rows), x, acc=False)
        tmp = rt.tile(DType.fp32, ncol, pcount=rows)
        rk.vec(Op.tensor_tensor, dst=tmp, in0=rot, in1=sin.tile(kb, ncol, pcount=rows), op=AluOp.mul)
        rk.vec(Op.tensor_tensor, dst=x, in0=x, in1=cos.tile(kb, ncol, pcount=rows), op=AluOp.mul)
        rk.vec(Op.tensor_tensor, dst=x, in0=x, in1=tmp, op=AluOp.add)


def rope_tables(hd: int, P: int, max_ctx: int, theta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cos [P, max_ctx], sin [P, max_ctx], rot [P, P]) for heads of ``hd`` packed P // hd per tile."""
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    pos = np.arange(max_ctx, dtype=np.float64)
    ang = np.outer(np.concatenate([inv, inv]), pos)  # [hd, ctx]
    cos = np.tile(np.cos(ang), (P // hd, 1))
    sin = np.tile(np.sin(ang), (P // hd, 1))
    rot = np.zeros((P, P))
    half = hd // 2
    for base in range(0, P, hd):
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
            ti, p0 = pl.head_loc(g)
            src = k[ti].tile(kb, seg.n, pcount=hd, pstart=p0, byte=seg.c0 * kb.itemsize)
            off = ((seg.b * pl.kvh_r + g) * hd * pl.max_ctx + seg.t0) * kb.itemsize
            rk.dma(kc.hbm(kb, hd, pl.max_ctx, ((1, seg.n),), byte=off), src, partial=True)
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
                rowt = vrows[nv % V_ROW_SLOTS].tile(kb, hd, pcount=n)
                nv += 1
                rk.transpose_into(rowt, v[ti].tile(kb, n, pcount=hd, pstart=p0, byte=col * kb.itemsize))
                rk.dma(vc.hbm(kb, n, nblk * hd, ((1, hd),), byte=_v_row_offset(pl, seg.b, g, t)), rowt, partial=True)
                t += n


def stage_new_v(pl: LoweringPlan, rk: Rank, segs: list[Segment], v: list[Buf]) -> None:
    """Decode: transpose each kv head's new V columns ``[hd, sequences]`` into rows ``[sequences, hd]``
    (one TensorE transpose per kv head) into the ``vstage`` role."""
    P, hd, kb = pl.P, pl.hd, pl.kdt
    stage = rk.buf_single("vstage")
    ncol = len(segs)
    if ncol > P:
        raise LoweringError(f"decode batch {ncol} > {P} sequences per chunk is not supported by V staging")
    for g in range(pl.kvh_r):
        ti, p0 = pl.head_loc(g)
        rk.transpose_into(
            stage.tile(kb, hd, pcount=ncol, byte=g * hd * kb.itemsize),
            v[ti].tile(kb, ncol, pcount=hd, pstart=p0, byte=segs[0].c0 * kb.itemsize),
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
) -> None:
    """Load ``rows`` x ``cols`` elements (HBM rows ``row_stride`` apart) into partitions ``p0..`` of
    ``dst``, as several DMAs over partition groups on different queues."""
    kb = pl.kdt
    parts = max(1, min(rows // 16, pl.other_queues // 2))
    per = math.ceil(rows / parts)
    if epoch:
        rk.em.new_write_epoch(dst)
    for r0 in range(0, rows, per):
        n = min(per, rows - r0)
        rk.dma(
            dst.tile(kb, cols, pcount=n, pstart=p0 + r0),
            src.hbm(kb, n, row_stride, ((1, cols),), byte=byte + r0 * row_stride * kb.itemsize),
            partial=True,
        )


def _load_kv(
    pl: LoweringPlan, rk: Rank, L: int, seg: Segment, g: int, lo: int, kv_len: int, kbuf: Buf, vbuf: Buf, k: list[Buf]
) -> None:
    """K^T and V of sequence ``seg.b``, kv head ``g``, keys ``lo..lo+kv_len`` into ``kbuf``/``vbuf``
    (decoders: from the HBM cache; decode: the new token from SBUF)."""
    P, hd, kb = pl.P, pl.hd, pl.kdt
    kv_len_all = seg.t1
    nblk = pl.max_ctx // P
    ti_k, p0_k = pl.head_loc(g)
    kname, vname = rank_tensor(f"L{L}.k_cache", rk.r), rank_tensor(f"L{L}.v_cache", rk.r)
    decode = pl.wl.phase == "decode" and seg.n == 1
    kc = rk.hbm.region(kname, "old") if decode else rk.hbm(kname)
    vc = rk.hbm.region(vname, "old") if decode else rk.hbm(vname)
    n_hbm = kv_len - 1 if decode else kv_len  # decode: the new token comes from SBUF
    old_all = kv_len_all - 1 if decode else kv_len_all
    off = ((seg.b * pl.kvh_r + g) * hd * pl.max_ctx + lo) * kb.itemsize
    if n_hbm > 0:  # split over partition groups on several queues (the DMA engines work in parallel)
        split_load(pl, rk, kbuf, p0_k, hd, n_hbm, kc, pl.max_ctx, off)
    # V rows: all blocks of this (b, g), partition-major
    voff = ((seg.b * pl.kvh_r + g) * P * nblk) * hd * kb.itemsize
    if decode:
        # cached rows of full blocks, then the partial last block: the new token's slot is left out
        # so that its row (from vstage) can be written in parallel in the same write epoch
        full, rem = divmod(old_all, P)
        rk.em.new_write_epoch(vbuf)
        if full:
            split_load(pl, rk, vbuf, 0, P, full * hd, vc, nblk * hd, voff, epoch=False)
        if rem:
            split_load(pl, rk, vbuf, 0, rem, hd, vc, nblk * hd, voff + full * hd * kb.itemsize, epoch=False)
    elif old_all > 0:
        vblk = math.ceil(old_all / P)
        vrows = min(P, old_all)
        split_load(pl, rk, vbuf, 0, vrows, vblk * hd, vc, nblk * hd, voff)
    if decode:
        t = seg.t1 - 1  # position of the new token
        rk.vec(
            Op.tensor_copy,
            dst=kbuf.tile(kb, 1, pcount=hd, pstart=p0_k, byte=(t - lo) * kb.itemsize),
            src=k[ti_k].tile(kb, 1, pcount=hd, pstart=p0_k, byte=seg.c0 * kb.itemsize),
        )
        rk.dma(
            vbuf.tile(kb, hd, pcount=1, pstart=t % P, byte=(t // P) * hd * kb.itemsize),
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
    kv_len_all = seg.t1  # keys 0 .. t1 (decoder: the cache up to this token; encoder: the sequence)
    lo = max(0, kv_len_all - int(spec.sliding_window)) if spec.sliding_window else 0
    kv_len = kv_len_all - lo
    heads = list(range(g * pl.group, min((g + 1) * pl.group, pl.heads_r)))
    stack = (not causal_prefill) and seg.n == 1 and hd == P
    em.op_class = OpClass.kv_load
    slot = rk.kv_slot
    rk.kv_slot ^= 1
    kbuf = rk.buf_single(f"kbuf{slot}")
    vbuf = rk.buf_single(f"vbuf{slot}")
    ti_k, p0_k = pl.head_loc(g)
    if spec.kind == "decoder":
        _load_kv(pl, rk, L, seg, g, lo, kv_len, kbuf, vbuf, k)
    # (encoder: keys/values of this sequence are the chunk's own k/v tiles, read in place below)
    sc = rk.buf_single("sc")
    pr = rk.buf_single("pr")
    st = rk.buf_single("stats")
    blk_n = min(pl.chip.tensor_engine.moving_free_max, pl.bank_bytes // 4)
    groups = [heads] if stack else [[h] for h in heads]
    for hs in groups:
        qblocks = [(0, 1)] if stack else [(t, min(P, seg.n - t)) for t in range(0, seg.n, P)]
        for tq0, nq in qblocks:
            rows = len(hs) if stack else nq
            ti, p0 = pl.head_loc(hs[0])
            col = seg.c0 + tq0
            if stack:
                qs = q[ti].tile(kb, dims=((pl.tc, len(hs)),), pstart=p0, pcount=hd, byte=col * kb.itemsize)
            else:
                qs = q[ti].tile(kb, nq, pstart=p0, pcount=hd, byte=col * kb.itemsize)
            # causal: query token positions seg.t0+tq0 .. ; keys lo .. lo+kv_len
            qpos0 = seg.t0 + tq0
            n_keys = min(kv_len, qpos0 + nq - lo) if causal_prefill else kv_len
            scores = sc.tile(DType.fp32, n_keys, pcount=rows)
            em.op_class = OpClass.attn_scores
            for k0 in range(0, n_keys, blk_n):
                nk = min(blk_n, n_keys - k0)
                ps = rk.bank().tile(DType.fp32, nk, pcount=rows)
                if spec.kind == "decoder":
                    mv = kbuf.tile(kb, nk, pcount=hd, pstart=p0_k, byte=k0 * kb.itemsize)
                else:
                    mv = k[ti_k].tile(kb, nk, pcount=hd, pstart=p0_k, byte=(seg.c0 - seg.t0 + k0) * kb.itemsize)
                rk.mm(ps, qs, mv, acc=False)
                dst = sc.tile(DType.fp32, nk, pcount=rows, byte=k0 * 4)
                if causal_prefill and lo + k0 + nk > qpos0:
                    mask = rk.buf_single("mask")
                    # value = key_pos - query_pos; masked where > 0
                    em.emit(
                        Op.iota,
                        rk.core,
                        Engine.gpsimd,
                        dst=mask.tile(DType.int32, nk, pcount=rows),
                        base=lo + k0 - qpos0,
                        channel_multiplier=-1,
                        multipliers=(1,),
                    )
                    mk = mask.tile(DType.fp32, nk, pcount=rows)
                    rk.vec(
                        Op.tensor_scalar,
                        dst=mk,
                        src=mask.tile(DType.int32, nk, pcount=rows),
                        op0=AluOp.gt,
                        imm0=0.0,
                        op1=AluOp.mul,
                        imm1=-30000.0,
                    )
                    rk.vec(Op.tensor_tensor, dst=dst, in0=ps, in1=mk, op=AluOp.add)
                else:
                    rk.vec(Op.tensor_copy, dst=dst, src=ps)
            m = st.tile(DType.fp32, 1, pcount=rows, byte=0)
            nb = st.tile(DType.fp32, 1, pcount=rows, byte=4)
            ssum = st.tile(DType.fp32, 1, pcount=rows, byte=8)
            scale = 1.0 / math.sqrt(hd)
            em.op_class = OpClass.softmax
            rk.vec(Op.tensor_reduce, dst=m, src=scores, op=ReduceOp.max, axes=1)
            rk.vec(Op.tensor_scalar, dst=nb, src=m, op0=AluOp.mul, imm0=-scale)
            probs = pr.tile(kb, n_keys, pcount=rows)
            rk.act(ActFunc.exp, probs, scores, bias=nb, scale_imm=scale, reduce_dst=ssum)
            rk.act(ActFunc.reciprocal, ssum, ssum)
            rk.vec(Op.tensor_scalar, dst=probs, src=probs, scalar0=ssum, op0=AluOp.mul)
            # out^T [hd, rows] = sum over key blocks V_blk^T . P^T
            em.op_class = OpClass.attn_pv
            po = rk.bank().tile(DType.fp32, rows, pcount=hd, pstart=p0)  # lane-aligned with the head
            pts = [rk.buf_single("pt0"), rk.buf_single("pt1")]
            nkb = math.ceil(n_keys / P)

            def stage(bi: int, n_keys: int = n_keys, rows: int = rows, pts: list[Buf] = pts) -> tuple[Tile, Tile]:
                """P^T (and, encoder, V) of key block ``bi``, ready for its P x V matmul."""
                k0 = bi * P
                nk = min(P, n_keys - k0)
                ptile = pts[bi % 2].tile(kb, rows, pcount=nk)
                rk.transpose_into(ptile, pr.tile(kb, nk, pcount=rows, byte=k0 * kb.itemsize))
                kpos = lo + k0  # absolute key position of this block's first key
                if spec.kind == "decoder":
                    # key kpos+i lives at partition (kpos+i) % P, block (kpos+i) // P; lowering keeps
                    # blocks aligned: lo and k0 are multiples of P except with a sliding window
                    if kpos % P:
                        raise LoweringError("sliding-window start not aligned to the partition count")
                    return ptile, vbuf.tile(kb, hd, pcount=nk, byte=(kpos // P) * hd * kb.itemsize)
                vti, vp0 = pl.head_loc(g)
                # encoder: V^T tile [hd, tokens] -> need [keys, hd]: transpose the block
                vs = vbuf.tile(kb, hd, pcount=nk, byte=(bi % 2) * hd * kb.itemsize)
                rk.transpose_into(
                    vs, v[vti].tile(kb, nk, pcount=hd, pstart=vp0, byte=(seg.c0 - seg.t0 + k0) * kb.itemsize)
                )
                return ptile, vs

            # software-pipelined: block bi+1's transposes are issued before block bi's matmul, so the
            # TensorE transposes the next block while the VectorE copies this one out of PSUM
            staged = stage(0)
            for bi in range(nkb):
                nxt = stage(bi + 1) if bi + 1 < nkb else None
                rk.mm(po, staged[1], staged[0], acc=bi > 0)
                if nxt is not None:
                    staged = nxt
            # evict into the attention output tiles
            if stack:
                dst = attn[ti].tile(pl.mdt, dims=((pl.tc, len(hs)),), pstart=p0, pcount=hd, byte=col * pl.mdt.itemsize)
            else:
                dst = attn[ti].tile(pl.mdt, nq, pstart=p0, pcount=hd, byte=col * pl.mdt.itemsize)
            rk.vec(Op.tensor_copy, dst=dst, src=po)
