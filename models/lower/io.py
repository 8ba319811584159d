"""Feeding a lowered program and reading it back: canonical parameters -> per-rank HBM tensors (sharded,
packed into slabs, quantised) and per-rank outputs -> logits / hidden states.

Used by the functional tests (interpreter) and by anyone who wants to run a lowered model on real
numbers; the simulator itself never needs the data.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from infsim.isa import DType, cast

from ..reference import split_params
from .attention import rope_tables
from .transformer import Lowered
from .weights import pack


def _shard_cols(w: np.ndarray, r: int, per: int, unit: int) -> np.ndarray:
    """Columns of units [r*per, (r+1)*per) (unit = columns per head/feature), zero-padded."""
    out = np.zeros((w.shape[0], per * unit))
    lo = r * per * unit
    hi = min(w.shape[1], lo + per * unit)
    if hi > lo:
        out[:, : hi - lo] = w[:, lo:hi]
    return out


def _kv_index(lw: Lowered, r: int) -> list[int]:
    spec, tp = lw.spec, lw.ranks
    kvh_r = math.ceil(spec.kv_heads / tp)
    if spec.kv_heads >= tp:
        return [r * kvh_r + i for i in range(kvh_r)]
    return [(r * spec.kv_heads) // tp]


def _feat(vec: np.ndarray, P: int, nt: int, m: int | None = None) -> np.ndarray:
    """[n] -> [P, nt] with element (p, t) = vec[t*m + p] (tiles of ``m <= P`` features, default ``P``; zero
    padded)."""
    m = P if m is None else m
    out = np.zeros((nt, P))
    for t in range(nt):
        part = vec[t * m : (t + 1) * m]
        out[t, : len(part)] = part
    return out.T


def make_inputs(
    lw: Lowered,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    k_cache: np.ndarray | None = None,
    v_cache: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """HBM inputs of every rank from canonical ``params`` (see models/reference.py), the embedded input
    ``x [B, S, h]`` and (decode) the caches ``[layers, B, kv_heads, ctx, hd]``. Weight preparation, as
    an offline step would do it: fused checkpoint matrices split per projection, weights sharded over
    the ranks and packed into slabs (int8: quantised per output channel), Gemma's ``1 + weight`` of the
    RMSNorms folded into the stored norm weights."""
    if (k_cache is None) != (v_cache is None):
        raise ValueError("make_inputs: give both k_cache and v_cache, or neither")
    spec, wl, chip, prog = lw.spec, lw.workload, lw.chip, lw.program
    P = chip.sbuf.partitions
    tp = lw.ranks
    hd = spec.head_dim
    heads_r = math.ceil(spec.heads / tp)
    kvh_r = math.ceil(spec.kv_heads / tp)
    inter_r = math.ceil(spec.intermediate / tp)
    vocab_r = math.ceil(spec.vocab / tp)
    ht = math.ceil(spec.hidden / P)
    wdt = DType.parse(wl.weight_dtype)
    int8 = wdt in (DType.int8, DType.uint8)
    qm = lw.plans["L0.wq"].m  # features per q/k/v tile (the head layout's)
    out: dict[str, np.ndarray] = {}

    def put(name: str, r: int, arr: np.ndarray) -> None:
        t = prog.tensors[f"{name}.r{r}"]
        out[t.name] = cast(np.asarray(arr, dtype=np.float64).reshape(t.shape), t.dtype)

    def put_w(name: str, r: int, w: np.ndarray) -> None:
        plan = lw.plans[name]
        if int8:
            scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
            q = np.clip(np.rint(w / scale), -127, 127)
            put(name, r, pack(plan, q))
            put(name + ".scale", r, _feat(scale, P, math.ceil(plan.n / plan.m), plan.m))
        else:
            put(name, r, pack(plan, w))

    def put_norm(name: str, r: int) -> None:
        vecs = [spec.norm_offset + params[name]] if spec.norm == "rms" else [params[name], params[name + "_b"]]
        put(name, r, np.stack([_feat(v, P, ht) for v in vecs]))

    norms = ("attn_norm", "mlp_norm") + (("post_attn_norm", "post_mlp_norm") if spec.post_norms else ())
    experts = [f"e{e}." for e in range(spec.num_experts)] if spec.is_moe else [""]
    for r in range(tp):
        kvi = _kv_index(lw, r)
        for L in range(spec.layers):
            pre = f"L{L}."
            w = split_params(spec, params, pre)
            put_w(pre + "wq", r, _shard_cols(w["wq"], r, heads_r, hd))
            put_w(pre + "wk", r, np.concatenate([w["wk"][:, g * hd : (g + 1) * hd] for g in kvi], axis=1))
            put_w(pre + "wv", r, np.concatenate([w["wv"][:, g * hd : (g + 1) * hd] for g in kvi], axis=1))
            put_w(pre + "wo", r, _shard_cols(params[pre + "wo"].T, r, heads_r, hd).T)
            if spec.is_moe:
                put_w(pre + "router", r, params[pre + "router"])  # every rank routes every token
            for ex in experts:
                name = pre + ex
                if name + "w_gate" not in lw.plans and name + "w_up" not in lw.plans:
                    continue  # an expert this step does not touch
                if spec.gated_mlp:
                    put_w(name + "w_gate", r, _shard_cols(w[ex + "w_gate"], r, inter_r, 1))
                put_w(name + "w_up", r, _shard_cols(w[ex + "w_up"], r, inter_r, 1))
                put_w(name + "w_down", r, _shard_cols(params[name + "w_down"].T, r, inter_r, 1).T)
            for n in norms:
                put_norm(pre + n, r)
            if spec.qkv_bias:
                nt = max(lw.program.tensors[f"{pre}bqkv.r{r}"].shape[-1], 1)
                bq = _shard_cols(params[pre + "bq"][None], r, heads_r, hd)[0]
                bk = np.concatenate([params[pre + "bk"][g * hd : (g + 1) * hd] for g in kvi])
                bv = np.concatenate([params[pre + "bv"][g * hd : (g + 1) * hd] for g in kvi])
                put(pre + "bqkv", r, np.stack([_feat(bq, P, nt, qm), _feat(bk, P, nt, qm), _feat(bv, P, nt, qm)]))
            if spec.o_bias or spec.mlp_bias:
                zero = np.zeros(spec.hidden)
                bo, bd = params.get(pre + "bo", zero), params.get(pre + "b_down", zero)
                put(pre + "bo_down", r, np.stack([_feat(bo, P, ht), _feat(bd, P, ht)]))
            if spec.mlp_bias:
                bu = _shard_cols(params[pre + "b_up"][None], r, inter_r, 1)[0]
                put(pre + "b_up", r, _feat(bu, P, math.ceil(inter_r / P)))
            if spec.kind == "decoder":
                kc = np.zeros((wl.batch, kvh_r, hd, lw.max_ctx))
                vc = np.zeros((wl.batch, kvh_r, P, lw.max_ctx // P, hd))
                if k_cache is not None and v_cache is not None and wl.context:
                    for i, g in enumerate(kvi):
                        kc[:, i, :, : wl.context] = k_cache[L, :, g, : wl.context].transpose(0, 2, 1)
                        vv = np.zeros((wl.batch, lw.max_ctx, hd))
                        vv[:, : wl.context] = v_cache[L, :, g, : wl.context]
                        vc[:, i] = vv.reshape(wl.batch, lw.max_ctx // P, P, hd).transpose(0, 2, 1, 3)
                put(pre + "k_cache", r, kc)
                put(pre + "v_cache", r, vc)
        put_norm("final_norm", r)
        if spec.kind == "decoder":
            put_w("lm_head", r, _shard_cols(params["lm_head"], r, vocab_r, 1))
        xt = np.zeros((ht * P, x.shape[0] * x.shape[1]))
        xt[: spec.hidden] = x.reshape(-1, spec.hidden).T
        put("x", r, xt)
        if spec.rotary:
            cos, sin, rot = rope_tables(spec, P, lw.max_ctx)
            put("rope", r, np.stack([cos, sin]))
            put("rot", r, rot)
    return out


class HbmResult(Protocol):
    """A run's result that can read an HBM tensor back (the reference interpreter's ``InterpResult``)."""

    def hbm(self, name: str) -> np.ndarray: ...


def read_logits(lw: Lowered, result: HbmResult) -> np.ndarray:
    """Logits ``[B, vocab]`` assembled from every rank's shard (``result.hbm(name)``)."""
    spec = lw.spec
    vocab_r = math.ceil(spec.vocab / lw.ranks)
    parts = [np.asarray(result.hbm(f"logits.r{r}"), dtype=np.float64)[:, :vocab_r] for r in range(lw.ranks)]
    return np.concatenate(parts, axis=1)[:, : spec.vocab]


def read_hidden(lw: Lowered, result: HbmResult) -> np.ndarray:
    """Encoder output hidden states ``[B, S, h]``."""
    spec, wl = lw.spec, lw.workload
    h = np.asarray(result.hbm("hidden_out.r0"), dtype=np.float64)[: spec.hidden]
    return h.T.reshape(wl.batch, wl.seq, spec.hidden)
