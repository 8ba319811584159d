"""A plain numpy forward pass of the supported transformers (float64 math): the functional reference the
lowered programs are checked against.

Parameters use one canonical layout (in x out matrices): ``L{l}.wq [h, heads*hd]``, ``wk``/``wv
[h, kv_heads*hd]`` (fused checkpoints, Phi-3: ``wqkv [h, (heads + 2 kv_heads)*hd]`` in HF's ``[q | k |
v]`` column order), ``wo [heads*hd, h]``, ``w_gate``/``w_up [h, f]`` (fused: ``w_gate_up [h, 2f]``,
``[gate | up]``), ``w_down [f, h]``, norms ``L{l}.attn_norm``/``mlp_norm``/``final_norm [h]``
(LayerNorm adds ``*_b``; Gemma-2 adds ``post_attn_norm``/``post_mlp_norm``; Gemma's RMSNorm scales by
``norm_offset + weight``, as the checkpoint stores it), biases ``bq bk bv`` (q/k/v), ``bo``, ``b_up
b_down`` (non-gated MLP), ``lm_head [h, vocab]``; mixture of experts: ``router [h, E]`` and
``e{x}.w_gate/w_up/w_down`` per expert. The input is the embedded tokens ``x [B, S, h]`` (positions
``pos0 .. pos0+S-1``; Gemma scales them by ``sqrt(h)`` here); the KV cache is ``k, v [layers, B,
kv_heads, ctx, hd]``.

Mixture of experts follows :mod:`.moe` (static balanced assignment, router-softmax combine weights), with
the tokens (sequences one after another) taken in chunks of ``token_chunk`` as the lowering does.
"""

from __future__ import annotations

import math

import numpy as np

from . import moe
from .spec import ModelSpec


def random_params(spec: ModelSpec, seed: int = 0, scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, hd, f = spec.hidden, spec.head_dim, spec.intermediate
    p: dict[str, np.ndarray] = {}

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0.0, scale, shape)

    def norm_weight() -> np.ndarray:  # the effective scale is about 1 (Gemma stores it minus 1)
        return 1.0 - spec.norm_offset + rng.normal(0.0, 0.1, h)

    norms = ("attn_norm", "mlp_norm") + (("post_attn_norm", "post_mlp_norm") if spec.post_norms else ())
    for L in range(spec.layers):
        pre = f"L{L}."
        for n in norms:
            p[pre + n] = norm_weight()
            if spec.norm == "layer":
                p[f"{pre}{n}_b"] = rng.normal(0.0, 0.1, h)
        if spec.fused_qkv:
            p[pre + "wqkv"] = w(h, (spec.heads + 2 * spec.kv_heads) * hd)
        else:
            p[pre + "wq"] = w(h, spec.heads * hd)
            p[pre + "wk"] = w(h, spec.kv_heads * hd)
            p[pre + "wv"] = w(h, spec.kv_heads * hd)
        p[pre + "wo"] = w(spec.heads * hd, h)
        experts = [f"e{x}." for x in range(spec.num_experts)] if spec.is_moe else [""]
        if spec.is_moe:
            p[pre + "router"] = rng.normal(0.0, 1.0, (h, spec.num_experts)) / math.sqrt(h)
        for ex in experts:
            if spec.fused_gate_up:
                p[pre + ex + "w_gate_up"] = w(h, 2 * f)
            elif spec.gated_mlp:
                p[pre + ex + "w_gate"] = w(h, f)
            if not spec.fused_gate_up:
                p[pre + ex + "w_up"] = w(h, f)
            p[pre + ex + "w_down"] = w(f, h)
        if spec.qkv_bias:
            p[pre + "bq"] = w(spec.heads * hd)
            p[pre + "bk"], p[pre + "bv"] = w(spec.kv_heads * hd), w(spec.kv_heads * hd)
        if spec.o_bias:
            p[pre + "bo"] = w(h)
        if spec.mlp_bias:
            p[pre + "b_up"], p[pre + "b_down"] = w(f), w(h)
    p["final_norm"] = norm_weight()
    if spec.norm == "layer":
        p["final_norm_b"] = rng.normal(0.0, 0.1, h)
    p["lm_head"] = w(h, spec.vocab)
    return p


def split_params(spec: ModelSpec, params: dict[str, np.ndarray], pre: str) -> dict[str, np.ndarray]:
    """Layer ``pre``'s q/k/v and gate/up weights as separate matrices (fused checkpoints split in HF's
    column order), keyed ``wq wk wv`` and ``{expert}w_gate w_up``."""
    out: dict[str, np.ndarray] = {}
    hd = spec.head_dim
    if spec.fused_qkv:
        qkv = params[pre + "wqkv"]
        q, kv = spec.heads * hd, spec.kv_heads * hd
        out["wq"], out["wk"], out["wv"] = qkv[:, :q], qkv[:, q : q + kv], qkv[:, q + kv :]
    else:
        out.update({n: params[pre + n] for n in ("wq", "wk", "wv")})
    for ex in [f"e{x}." for x in range(spec.num_experts)] if spec.is_moe else [""]:
        if spec.fused_gate_up:
            gu = params[pre + ex + "w_gate_up"]
            out[ex + "w_gate"], out[ex + "w_up"] = gu[:, : spec.intermediate], gu[:, spec.intermediate :]
        else:
            if spec.gated_mlp:
                out[ex + "w_gate"] = params[pre + ex + "w_gate"]
            out[ex + "w_up"] = params[pre + ex + "w_up"]
    return out


def _norm(spec: ModelSpec, x: np.ndarray, g: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    if spec.norm == "rms":
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + spec.norm_eps) * (spec.norm_offset + g)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + spec.norm_eps) * g + (0.0 if b is None else b)


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name == "gelu":
        from math import erf

        return 0.5 * x * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(name)


def rope_inv_freq(spec: ModelSpec) -> np.ndarray:
    """Rotary inverse frequencies ``[head_dim / 2]`` (``theta^(-2i/hd)``), with the config's
    ``rope_scaling`` applied (``linear``: divided by the factor; ``llama3``: low frequencies divided by the
    factor, high ones kept, a smooth blend between, as Llama-3.1's reference code)."""
    hd = spec.head_dim
    inv = 1.0 / (spec.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    rs = spec.rope_scaling
    if rs is None:
        return inv
    if rs.type == "linear":
        return inv / rs.factor
    wavelen = 2.0 * math.pi / inv
    low_wavelen = rs.original_max_positions / rs.low_freq_factor
    high_wavelen = rs.original_max_positions / rs.high_freq_factor
    smooth = (rs.original_max_positions / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
    blended = (1.0 - smooth) * inv / rs.factor + smooth * inv
    return np.where(wavelen > low_wavelen, inv / rs.factor, np.where(wavelen < high_wavelen, inv, blended))


def rope(x: np.ndarray, pos: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """HF-style rotary embedding of ``x [..., S, hd]`` at positions ``pos [S]`` with inverse frequencies
    ``inv [hd/2]`` (rotate_half convention)."""
    hd = x.shape[-1]
    ang = np.outer(pos, inv)
    ang = np.concatenate([ang, ang], axis=-1)
    half = hd // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.cos(ang) + rot * np.sin(ang)


def _mlp(spec: ModelSpec, params: dict[str, np.ndarray], w: dict[str, np.ndarray], pre: str, ex: str,
         xn: np.ndarray) -> np.ndarray:
    if spec.gated_mlp:
        hmid = _act(spec.activation, xn @ w[ex + "w_gate"]) * (xn @ w[ex + "w_up"])
    else:
        hmid = _act(spec.activation, xn @ w[ex + "w_up"] + (params[pre + "b_up"] if spec.mlp_bias else 0.0))
    return hmid @ params[pre + ex + "w_down"] + (params[pre + "b_down"] if spec.mlp_bias else 0.0)


def _moe(spec: ModelSpec, params: dict[str, np.ndarray], w: dict[str, np.ndarray], pre: str, xn: np.ndarray,
         token_chunk: int | None) -> np.ndarray:
    """Mixture of experts over ``xn [B, S, h]`` with the static routing of :mod:`.moe`, chunk by chunk."""
    b, s, h = xn.shape
    flat = xn.reshape(b * s, h)
    out = np.zeros_like(flat)
    tc = token_chunk or len(flat)
    for i0 in range(0, len(flat), tc):
        xc = flat[i0 : i0 + tc]
        logits = xc @ params[pre + "router"]
        sel = moe.assignment(spec, len(xc))
        chosen = np.take_along_axis(logits, sel, axis=1)
        wts = np.exp(chosen - chosen.max(1, keepdims=True))
        wts /= wts.sum(1, keepdims=True)
        for c in range(len(xc)):
            for j, e in enumerate(sel[c]):
                out[i0 + c] += wts[c, j] * _mlp(spec, params, w, pre, f"e{e}.", xc[c])
    return out.reshape(b, s, h)


def forward(
    spec: ModelSpec,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    pos0: int = 0,
    k_cache: np.ndarray | None = None,
    v_cache: np.ndarray | None = None,
    token_chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the layers on ``x [B, S, h]``; returns (output, k_cache, v_cache).

    Decoders return the logits of the last token ``[B, vocab]`` and the updated caches (``ctx`` =
    ``pos0 + S`` at least); encoders return the final hidden states ``[B, S, h]``. ``token_chunk``: the
    tokens per chunk of mixture-of-experts routing (the lowering's ``Lowered.token_chunk``; ``None``: all
    tokens in one chunk)."""
    if (k_cache is None) != (v_cache is None):
        raise ValueError("forward: give both k_cache and v_cache, or neither")
    b, s, h = x.shape
    hd, nh, nkv = spec.head_dim, spec.heads, spec.kv_heads
    ctx = pos0 + s
    if spec.kind == "decoder":
        kc = np.zeros((spec.layers, b, nkv, ctx, hd))
        vc = np.zeros((spec.layers, b, nkv, ctx, hd))
        if k_cache is not None and v_cache is not None and pos0:
            kc[:, :, :, :pos0] = k_cache[:, :, :, :pos0]
            vc[:, :, :, :pos0] = v_cache[:, :, :, :pos0]
    else:
        kc = vc = np.zeros((spec.layers, b, nkv, s, hd))
    x = x.astype(np.float64) * spec.embed_scale
    pos = np.arange(pos0, pos0 + s)
    inv = rope_inv_freq(spec) if spec.rotary else None
    post = spec.family in ("bert", "roberta")
    for L in range(spec.layers):
        pre = f"L{L}."
        w = split_params(spec, params, pre)
        xn = x if post else _norm(spec, x, params[pre + "attn_norm"], params.get(pre + "attn_norm_b"))
        bq, bk, bv = (params[pre + n] for n in ("bq", "bk", "bv")) if spec.qkv_bias else (0.0, 0.0, 0.0)
        q, k, v = xn @ w["wq"] + bq, xn @ w["wk"] + bk, xn @ w["wv"] + bv
        q = q.reshape(b, s, nh, hd).transpose(0, 2, 1, 3)
        k = k.reshape(b, s, nkv, hd).transpose(0, 2, 1, 3)
        v = v.reshape(b, s, nkv, hd).transpose(0, 2, 1, 3)
        if inv is not None:
            q, k = rope(q, pos, inv), rope(k, pos, inv)
        if spec.kind == "decoder":
            kc[L, :, :, pos0:ctx] = k
            vc[L, :, :, pos0:ctx] = v
            keys, vals = kc[L], vc[L]
        else:
            keys, vals = k, v
        kpos = np.arange(keys.shape[2])
        rel = kpos[None, None, :] - pos[None, :, None]  # key position - query position, [1, s, keys]
        masked = np.zeros(rel.shape, bool)
        if spec.causal:
            masked |= rel > 0
        window = spec.window(L)
        if window:
            masked |= rel <= -window
        grp = nh // nkv
        out = np.zeros((b, nh, s, hd))
        for hh in range(nh):
            g = hh // grp
            sc = q[:, hh] @ keys[:, g].transpose(0, 2, 1) * spec.attn_scale  # [b, s, kv]
            if spec.attn_softcap:
                sc = spec.attn_softcap * np.tanh(sc / spec.attn_softcap)
            sc = np.where(masked, -np.inf, sc)
            sc = sc - sc.max(-1, keepdims=True)
            pr = np.exp(sc)
            pr /= pr.sum(-1, keepdims=True)
            out[:, hh] = pr @ vals[:, g]
        att = out.transpose(0, 2, 1, 3).reshape(b, s, nh * hd) @ params[pre + "wo"]
        if spec.o_bias:
            att = att + params[pre + "bo"]
        if spec.post_norms:
            att = _norm(spec, att, params[pre + "post_attn_norm"], None)
        x = x + att
        if post:
            x = _norm(spec, x, params[pre + "attn_norm"], params.get(pre + "attn_norm_b"))
        xn2 = x if post else _norm(spec, x, params[pre + "mlp_norm"], params.get(pre + "mlp_norm_b"))
        y = _moe(spec, params, w, pre, xn2, token_chunk) if spec.is_moe else _mlp(spec, params, w, pre, "", xn2)
        if spec.post_norms:
            y = _norm(spec, y, params[pre + "post_mlp_norm"], None)
        x = x + y
        if post:
            x = _norm(spec, x, params[pre + "mlp_norm"], params.get(pre + "mlp_norm_b"))
    if spec.kind == "decoder":
        last = _norm(spec, x[:, -1], params["final_norm"], params.get("final_norm_b"))
        logits = last @ params["lm_head"]
        if spec.final_softcap:
            logits = spec.final_softcap * np.tanh(logits / spec.final_softcap)
        return logits, kc, vc
    return x, kc, vc
