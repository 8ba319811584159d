"""A plain numpy forward pass of the supported transformers (float64 math): the functional reference the
lowered programs are checked against.

Parameters use one canonical layout (in x out matrices): ``L{l}.wq [h, heads*hd]``, ``wk``/``wv
[h, kv_heads*hd]``, ``wo [heads*hd, h]``, ``w_gate``/``w_up [h, f]``, ``w_down [f, h]``, norms
``L{l}.attn_norm``/``mlp_norm``/``final_norm [h]`` (LayerNorm adds ``*_b``), biases ``bq bk bv bo b_up
b_down``, ``lm_head [h, vocab]``. The input is the embedded tokens ``x [B, S, h]`` (positions
``pos0 .. pos0+S-1``); the KV cache is ``k, v [layers, B, kv_heads, ctx, hd]``.
"""

from __future__ import annotations

import math

import numpy as np

from .spec import ModelSpec


def random_params(spec: ModelSpec, seed: int = 0, scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, hd, f = spec.hidden, spec.head_dim, spec.intermediate
    p: dict[str, np.ndarray] = {}

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0.0, scale, shape)

    for L in range(spec.layers):
        for n in ("attn_norm", "mlp_norm"):
            p[f"L{L}.{n}"] = 1.0 + rng.normal(0.0, 0.1, h)
            if spec.norm == "layer":
                p[f"L{L}.{n}_b"] = rng.normal(0.0, 0.1, h)
        p[f"L{L}.wq"] = w(h, spec.heads * hd)
        p[f"L{L}.wk"] = w(h, spec.kv_heads * hd)
        p[f"L{L}.wv"] = w(h, spec.kv_heads * hd)
        p[f"L{L}.wo"] = w(spec.heads * hd, h)
        if spec.gated_mlp:
            p[f"L{L}.w_gate"] = w(h, f)
        p[f"L{L}.w_up"] = w(h, f)
        p[f"L{L}.w_down"] = w(f, h)
        if spec.qkv_bias:
            p[f"L{L}.bq"], p[f"L{L}.bk"], p[f"L{L}.bv"] = (
                w(spec.heads * hd),
                w(spec.kv_heads * hd),
                w(spec.kv_heads * hd),
            )
            p[f"L{L}.bo"], p[f"L{L}.b_up"], p[f"L{L}.b_down"] = w(h), w(f), w(h)
    p["final_norm"] = 1.0 + rng.normal(0.0, 0.1, h)
    if spec.norm == "layer":
        p["final_norm_b"] = rng.normal(0.0, 0.1, h)
    p["lm_head"] = w(h, spec.vocab)
    return p


def _norm(spec: ModelSpec, x: np.ndarray, g: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    if spec.norm == "rms":
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + spec.norm_eps) * g
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


def rope(x: np.ndarray, pos: np.ndarray, theta: float) -> np.ndarray:
    """HF-style rotary embedding of ``x [..., S, hd]`` at positions ``pos [S]`` (rotate_half convention)."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (np.arange(0, hd, 2) / hd))
    ang = np.outer(pos, inv)
    ang = np.concatenate([ang, ang], axis=-1)
    half = hd // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.cos(ang) + rot * np.sin(ang)


def forward(
    spec: ModelSpec,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    pos0: int = 0,
    k_cache: np.ndarray | None = None,
    v_cache: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the layers on ``x [B, S, h]``; returns (output, k_cache, v_cache).

    Decoders return the logits of the last token ``[B, vocab]`` and the updated caches (``ctx`` =
    ``pos0 + S`` at least); encoders return the final hidden states ``[B, S, h]``.
    """
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
    x = x.astype(np.float64)
    pos = np.arange(pos0, pos0 + s)
    post = spec.family in ("bert", "roberta")
    for L in range(spec.layers):
        pre = f"L{L}."
        xn = x if post else _norm(spec, x, params[pre + "attn_norm"], params.get(pre + "attn_norm_b"))
        q = xn @ params[pre + "wq"] + params.get(pre + "bq", 0.0)
        k = xn @ params[pre + "wk"] + params.get(pre + "bk", 0.0)
        v = xn @ params[pre + "wv"] + params.get(pre + "bv", 0.0)
        q = q.reshape(b, s, nh, hd).transpose(0, 2, 1, 3)
        k = k.reshape(b, s, nkv, hd).transpose(0, 2, 1, 3)
        v = v.reshape(b, s, nkv, hd).transpose(0, 2, 1, 3)
        if spec.rotary:
            q, k = rope(q, pos, spec.rope_theta), rope(k, pos, spec.rope_theta)
        if spec.kind == "decoder":
            kc[L, :, :, pos0:ctx] = k
            vc[L, :, :, pos0:ctx] = v
            keys, vals = kc[L], vc[L]
        else:
            keys, vals = k, v
        grp = nh // nkv
        out = np.zeros((b, nh, s, hd))
        for hh in range(nh):
            g = hh // grp
            sc = q[:, hh] @ keys[:, g].transpose(0, 2, 1) / math.sqrt(hd)  # [b, s, kv]
            if spec.causal:
                kpos = np.arange(keys.shape[2])
                sc = np.where(kpos[None, None, :] > pos[None, :, None], -np.inf, sc)
            sc = sc - sc.max(-1, keepdims=True)
            pr = np.exp(sc)
            pr /= pr.sum(-1, keepdims=True)
            out[:, hh] = pr @ vals[:, g]
        att = out.transpose(0, 2, 1, 3).reshape(b, s, nh * hd) @ params[pre + "wo"] + params.get(pre + "bo", 0.0)
        x = x + att
        if post:
            x = _norm(spec, x, params[pre + "attn_norm"], params.get(pre + "attn_norm_b"))
        xn2 = x if post else _norm(spec, x, params[pre + "mlp_norm"], params.get(pre + "mlp_norm_b"))
        if spec.gated_mlp:
            hmid = _act(spec.activation, xn2 @ params[pre + "w_gate"]) * (xn2 @ params[pre + "w_up"])
        else:
            hmid = _act(spec.activation, xn2 @ params[pre + "w_up"] + params.get(pre + "b_up", 0.0))
        x = x + hmid @ params[pre + "w_down"] + params.get(pre + "b_down", 0.0)
        if post:
            x = _norm(spec, x, params[pre + "mlp_norm"], params.get(pre + "mlp_norm_b"))
    if spec.kind == "decoder":
        last = _norm(spec, x[:, -1], params["final_norm"], params.get("final_norm_b"))
        return last @ params["lm_head"], kc, vc
    return x, kc, vc
