"""Op graphs: one transformer step (prefill or decode) as a list of ops with FLOPs and minimum HBM bytes.

The graph is the lowering's specification and its independent check: every op knows its tensor-engine
FLOPs (2 x MACs of its matmuls), its other (vector/scalar) element operations, and its *minimum* HBM
traffic — weights read once, KV cache read/written, model inputs read and outputs written — as if every
intermediate activation stayed on chip. Figures are per tensor-parallel rank; ``Graph`` totals multiply
by the ranks.

Conventions (the lowering follows them, so FLOPs match exactly):

* Prefill processes ``batch x seq`` tokens with an empty cache and computes the full ``seq x seq`` score
  matrix per head (the causal mask is applied, masked blocks are *not* skipped); the LM head runs on the
  last token of each sequence only. Decode processes ``batch`` new tokens against ``context`` cached
  tokens (attention over ``context + 1`` keys). A layer with a sliding window (:meth:`ModelSpec.window`)
  attends to at most ``window`` keys per query: decode reads ``window - 1`` cached tokens per kv head,
  prefill counts ``seq x min(seq, window)`` scores (a band instead of the square).
* Gemma-2's extra work is counted where it happens: the embedding scale (one multiply per input
  element), the score soft-capping (one tanh per score), the post-attention and post-MLP norms, the
  final-logit soft-capping (a tanh and a multiply per logit).
* Tensor parallelism (Megatron-style): q/k/v and gate/up are column-split, o_proj and down are
  row-split, followed by an all-reduce of the hidden state. Heads are split ``ceil(heads/tp)`` per rank
  (padded, as Neuron's transformers library pads heads); KV heads likewise, replicated when
  ``kv_heads < tp``. The LM head is split over the vocabulary (an all-gather of logits follows).
* Mixture of experts: every token is routed to ``experts_per_token`` experts; a step touches
  :func:`.moe.experts_touched` distinct experts (static balanced routing, ``min(experts, tokens x
  experts_per_token)`` when ``experts_per_token`` divides ``experts``), whose weights are read once.
  Experts are split over ranks like a dense MLP (each rank holds a slice of every expert).
* Encoders (BERT, ViT) have no KV cache; BERT returns hidden states (no head); ViT adds the patch
  embedding and a classifier on the class token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

from infsim.isa.dtypes import DType

from . import moe
from .spec import ModelError, ModelSpec

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class Workload:
    """What one simulated step does."""

    phase: str
    batch: int
    seq: int  # prompt tokens per sequence (prefill / encoder); 1 for decode
    context: int  # cached tokens per sequence before this step (decode); 0 for prefill
    tp: int = 1
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    act_dtype: str = "bf16"

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ModelError(f"phase '{self.phase}': expected one of {', '.join(PHASES)}")
        for f in ("batch", "seq", "tp"):
            if getattr(self, f) < 1:
                raise ModelError(f"workload field '{f}': must be >= 1, got {getattr(self, f)}")
        if self.context < 0:
            raise ModelError(f"workload field 'context': must be >= 0, got {self.context}")
        for f in ("weight_dtype", "kv_dtype", "act_dtype"):
            DType.parse(getattr(self, f))

    @classmethod
    def make(
        cls,
        phase: str,
        batch: int = 1,
        context: int = 2048,
        tp: int = 1,
        dtype: str = "bf16",
        kv_dtype: str | None = None,
    ) -> Workload:
        """Prefill of ``context`` tokens, or decode of one token after ``context`` cached tokens."""
        if phase == "prefill":
            return cls("prefill", batch, context, 0, tp, dtype, kv_dtype or "bf16")
        return cls("decode", batch, 1, context, tp, dtype, kv_dtype or "bf16")

    @property
    def prompt_or_context(self) -> int:
        """The ``context`` of :meth:`make` (``infsim run --context``): prompt tokens of a prefill, cached
        tokens of a decode."""
        return self.seq if self.phase == "prefill" else self.context

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


@dataclass(frozen=True)
class Op:
    """One op of the graph, per tensor-parallel rank. ``m x k . k x n`` for matmuls (``count`` of them)."""

    name: str
    kind: str  # matmul | attention | elementwise | norm | softmax | embedding | collective
    layer: int = -1
    m: int = 0
    n: int = 0
    k: int = 0
    count: int = 1  # independent matmuls of that shape (e.g. batch x heads for attention)
    weight_bytes: int = 0
    kv_read_bytes: int = 0
    kv_write_bytes: int = 0
    act_read_bytes: int = 0  # model inputs read from HBM (embeddings gathered, images)
    act_write_bytes: int = 0  # model outputs written to HBM (logits, hidden states)
    elem_ops: int = 0  # vector/scalar element operations
    collective: str = ""  # all_reduce | all_gather
    collective_bytes: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k * self.count

    @property
    def hbm_bytes(self) -> int:
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes + self.act_read_bytes + self.act_write_bytes


class _OpFields(TypedDict, total=False):
    """The fields of :class:`Op` after ``name``, ``kind`` and ``layer``, as keywords of the per-layer builder."""

    m: int
    n: int
    k: int
    count: int
    weight_bytes: int
    kv_read_bytes: int
    kv_write_bytes: int
    act_read_bytes: int
    act_write_bytes: int
    elem_ops: int
    collective: str
    collective_bytes: int


@dataclass
class Graph:
    spec: ModelSpec
    workload: Workload
    ops: list[Op] = field(default_factory=list)

    @property
    def ranks(self) -> int:
        return self.workload.tp

    def flops(self) -> int:
        """Tensor-engine FLOPs of the whole step over all ranks."""
        return self.ranks * sum(o.flops for o in self.ops)

    def hbm_bytes(self) -> int:
        """Minimum HBM bytes of the step over all ranks."""
        return self.ranks * sum(o.hbm_bytes for o in self.ops)

    def weight_bytes(self) -> int:
        return self.ranks * sum(o.weight_bytes for o in self.ops)

    def kv_bytes(self) -> int:
        return self.ranks * sum(o.kv_read_bytes + o.kv_write_bytes for o in self.ops)

    def collective_bytes(self) -> int:
        return sum(o.collective_bytes for o in self.ops)

    def elem_ops(self) -> int:
        return self.ranks * sum(o.elem_ops for o in self.ops)

    def summary(self) -> dict[str, int]:
        return {
            "flops": self.flops(),
            "hbm_bytes": self.hbm_bytes(),
            "weight_bytes": self.weight_bytes(),
            "kv_bytes": self.kv_bytes(),
            "collective_bytes": self.collective_bytes(),
            "ops": len(self.ops),
        }


def split(n: int, tp: int) -> int:
    """Per-rank share of ``n`` heads/units split over ``tp`` ranks (padded up)."""
    return max(1, math.ceil(n / tp))


def build_graph(spec: ModelSpec, wl: Workload) -> Graph:
    """The op graph of one step of ``spec`` under workload ``wl`` (see the module docstring)."""
    if wl.phase == "decode" and spec.kind != "decoder":
        raise ModelError(f"model '{spec.name}' is an encoder: it has no decode phase (use --phase prefill)")
    if spec.kind == "decoder" and wl.seq + wl.context > spec.max_positions:
        raise ModelError(
            f"model '{spec.name}': {wl.seq + wl.context} positions exceed max_position_embeddings {spec.max_positions}"
        )
    wb = DType.parse(wl.weight_dtype).itemsize
    kvb = DType.parse(wl.kv_dtype).itemsize
    ab = DType.parse(wl.act_dtype).itemsize
    tp = wl.tp
    h, hd = spec.hidden, spec.head_dim
    heads = split(spec.heads, tp)
    kvh = split(spec.kv_heads, tp)
    inter = split(spec.intermediate, tp)
    b = wl.batch
    if spec.family == "vit":
        seq = (spec.image_size // spec.patch_size) ** 2 + 1
    else:
        seq = wl.seq
    t = b * seq  # tokens this step
    kv_len_full = wl.context + seq if spec.kind == "decoder" else seq
    g = Graph(spec, wl)
    ops = g.ops
    if spec.family == "vit":
        patch_k = spec.num_channels * spec.patch_size**2
        ops.append(
            Op(
                "patch_embed",
                "matmul",
                -1,
                t - b,
                h,
                patch_k,
                weight_bytes=patch_k * h * wb // tp,
                act_read_bytes=b * spec.num_channels * spec.image_size**2 * ab // tp,
            )
        )
    else:
        ops.append(Op("embed", "embedding", -1, act_read_bytes=t * h * ab // tp, elem_ops=t * h // tp))
        if spec.embed_scale != 1.0:
            ops.append(Op("embed_scale", "elementwise", -1, elem_ops=t * h))
    norm_ops = 4 if spec.norm == "rms" else 6
    for L in range(spec.layers):

        def op(name: str, kind: str, **kw: Unpack[_OpFields]) -> None:
            ops.append(Op(f"L{L}.{name}", kind, L, **kw))  # noqa: B023

        window = spec.window(L)
        kv_len = min(kv_len_full, window) if window else kv_len_full
        nw = h * wb * (1 if spec.norm == "rms" else 2)
        op("attn_norm", "norm", weight_bytes=nw, elem_ops=norm_ops * t * h)
        op("q_proj", "matmul", m=t, n=heads * hd, k=h, weight_bytes=h * heads * hd * wb)
        op("k_proj", "matmul", m=t, n=kvh * hd, k=h, weight_bytes=h * kvh * hd * wb)
        op("v_proj", "matmul", m=t, n=kvh * hd, k=h, weight_bytes=h * kvh * hd * wb)
        if spec.rotary:
            op("rope", "elementwise", elem_ops=3 * t * (heads + kvh) * hd)
        if spec.kind == "decoder":
            # the cached positions attention reads: the context, at most the sliding window's
            kv_read = 2 * b * kvh * hd * (kv_len - seq) * kvb if wl.phase == "decode" else 0
            op("kv_cache", "elementwise", kv_read_bytes=kv_read, kv_write_bytes=2 * t * kvh * hd * kvb)
        op("attn_scores", "attention", m=seq, n=kv_len, k=hd, count=b * heads)
        if spec.attn_softcap:
            op("attn_softcap", "elementwise", elem_ops=b * heads * seq * kv_len)
        op("softmax", "softmax", elem_ops=5 * b * heads * seq * kv_len)
        op("attn_values", "attention", m=seq, n=hd, k=kv_len, count=b * heads)
        op("o_proj", "matmul", m=t, n=h, k=heads * hd, weight_bytes=heads * hd * h * wb)
        if tp > 1:
            op("attn_all_reduce", "collective", collective="all_reduce", collective_bytes=t * h * ab)
        if spec.post_norms:
            op("post_attn_norm", "norm", weight_bytes=nw, elem_ops=norm_ops * t * h)
        op("attn_residual", "elementwise", elem_ops=t * h)
        op("mlp_norm", "norm", weight_bytes=nw, elem_ops=norm_ops * t * h)
        if spec.is_moe:
            e, k_e = spec.num_experts, spec.experts_per_token
            touched = moe.experts_touched(spec, t)
            op("router", "matmul", m=t, n=e, k=h, weight_bytes=h * e * wb)
            op("router_topk", "softmax", elem_ops=5 * t * e)
            # each token's k experts: grouped per expert, t*k token-rows in all
            op("experts_gate_up", "matmul", m=t * k_e, n=2 * inter, k=h, weight_bytes=touched * 2 * h * inter * wb)
            op("experts_act", "elementwise", elem_ops=3 * t * k_e * inter)
            op("experts_down", "matmul", m=t * k_e, n=h, k=inter, weight_bytes=touched * inter * h * wb)
            op("experts_combine", "elementwise", elem_ops=2 * t * k_e * h)
        elif spec.gated_mlp:
            op("gate_up_proj", "matmul", m=t, n=2 * inter, k=h, weight_bytes=2 * h * inter * wb)
            op("mlp_act", "elementwise", elem_ops=3 * t * inter)
            op("down_proj", "matmul", m=t, n=h, k=inter, weight_bytes=inter * h * wb)
        else:
            op("up_proj", "matmul", m=t, n=inter, k=h, weight_bytes=h * inter * wb)
            op("mlp_act", "elementwise", elem_ops=2 * t * inter)
            op("down_proj", "matmul", m=t, n=h, k=inter, weight_bytes=inter * h * wb)
        if tp > 1:
            op("mlp_all_reduce", "collective", collective="all_reduce", collective_bytes=t * h * ab)
        if spec.post_norms:
            op("post_mlp_norm", "norm", weight_bytes=nw, elem_ops=norm_ops * t * h)
        op("mlp_residual", "elementwise", elem_ops=t * h)
    nw = h * wb * (1 if spec.norm == "rms" else 2)
    if spec.kind == "decoder":
        ops.append(Op("final_norm", "norm", -1, weight_bytes=nw, elem_ops=norm_ops * b * h))
        vocab = split(spec.vocab, tp)
        ops.append(
            Op("lm_head", "matmul", -1, b, vocab, h, weight_bytes=h * vocab * wb, act_write_bytes=b * vocab * ab)
        )
        if spec.final_softcap:
            ops.append(Op("logit_softcap", "elementwise", -1, elem_ops=2 * b * vocab))
        if tp > 1:
            ops.append(
                Op("logits_all_gather", "collective", -1, collective="all_gather", collective_bytes=b * vocab * tp * ab)
            )
    elif spec.family == "vit":
        ops.append(Op("final_norm", "norm", -1, weight_bytes=nw, elem_ops=norm_ops * b * h))
        ops.append(
            Op(
                "classifier",
                "matmul",
                -1,
                b,
                split(spec.vocab, tp),
                h,
                weight_bytes=h * split(spec.vocab, tp) * wb,
                act_write_bytes=b * split(spec.vocab, tp) * ab,
            )
        )
    else:
        ops.append(Op("output", "elementwise", -1, act_write_bytes=t * h * ab // tp))
    return g
