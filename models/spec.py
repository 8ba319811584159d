"""Model specifications: a Hugging Face ``config.json`` (zoo name or path) -> :class:`ModelSpec`.

A model is data, not code: every supported architecture is a transformer described by the handful of
fields below, read from the config under the names the Hugging Face families use. Supported
``model_type`` values:

* llama, mistral, mixtral: decoders with RMSNorm, rotary embeddings, SwiGLU, grouped-query attention,
  optional mixture of experts; Llama-3.1/3.2 ``rope_scaling`` (``llama3``, also ``linear``), tied
  embeddings (Llama-3.2 1B/3B), Mistral's sliding window;
* qwen2: the Llama layout with biases on the q/k/v projections (not on o_proj or the MLP); its
  ``sliding_window`` applies only with ``use_sliding_window`` (to the layers from ``max_window_layers``);
* phi3: the Llama layout with fused ``qkv_proj`` and ``gate_up_proj`` weights (``fused_qkv``,
  ``fused_gate_up``: HF's column order, split per projection when the weights are prepared) and a
  sliding window on every layer;
* gemma2: ``head_dim`` independent of ``hidden / heads``, GeGLU (gated GELU-tanh), attention-logit and
  final-logit soft-capping, sliding-window attention on every other layer (layers 0, 2, ...),
  ``query_pre_attn_scalar`` in place of ``head_dim`` in the attention scale, RMSNorm before *and after*
  attention and MLP (four per layer), RMSNorm scaling by ``1 + weight``, embeddings scaled by
  ``sqrt(hidden)``;
* gpt2 (decoder with LayerNorm, learned positions, GELU-tanh MLP), bert (encoder), vit (encoder over
  image patches).

Any other ``model_type`` is refused with the features infsim lacks for it where known
(:data:`UNSUPPORTED`), and a supported family's config that asks for something infsim does not model
(another ``rope_scaling`` type, MLP biases in a gated MLP, a partial rotary embedding) is refused naming
the field. Left out: biases are not counted in FLOPs (they are < 0.1%).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infsim.errors import InfsimError
from infsim.userfiles import parse_json, read_text

ZOO_DIR = Path(__file__).parent / "zoo"


class ModelError(InfsimError):
    """A model config is missing a field, has a bad value or an unsupported architecture."""


@dataclass(frozen=True)
class RopeScaling:
    """A config's ``rope_scaling`` (the types infsim models: ``llama3`` and ``linear``)."""

    type: str  # llama3 | linear
    factor: float
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_positions: int = 8192  # llama3


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # llama | mistral | mixtral | qwen2 | phi3 | gemma2 | gpt2 | bert | roberta | vit
    kind: str  # decoder | encoder
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int
    norm: str  # rms | layer
    norm_eps: float
    activation: str  # silu | gelu | gelu_tanh
    gated_mlp: bool  # SwiGLU-style gate * up
    rotary: bool
    rope_theta: float
    num_experts: int = 1
    experts_per_token: int = 1
    tie_embeddings: bool = False
    qkv_bias: bool = False  # biases on the q, k and v projections
    sliding_window: int | None = None  # keys attended per query, itself included (see ``window``)
    image_size: int = 0
    patch_size: int = 0
    num_channels: int = 0
    o_bias: bool = False  # bias on the attention output projection
    mlp_bias: bool = False  # biases on the (non-gated) MLP's up and down projections
    #: the layers with a sliding window; ``None``: every layer (when ``sliding_window`` is set)
    sliding_layers: tuple[int, ...] | None = None
    rope_scaling: RopeScaling | None = None
    fused_qkv: bool = False  # checkpoint stores q/k/v as one [q | k | v] matrix (Phi-3's qkv_proj)
    fused_gate_up: bool = False  # checkpoint stores gate/up as one [gate | up] matrix (Phi-3's gate_up_proj)
    query_pre_attn_scalar: float = 0.0  # attention scores scaled by its -1/2 power (0: head_dim's)
    attn_softcap: float = 0.0  # scores -> cap * tanh(scores / cap) before the softmax (0: none)
    final_softcap: float = 0.0  # logits -> cap * tanh(logits / cap) (0: none)
    post_norms: bool = False  # RMSNorm also on the attention and MLP outputs, before the residual add
    norm_offset: float = 0.0  # RMSNorm scales by (norm_offset + weight) (Gemma: 1)
    embed_scale: float = 1.0  # input embeddings multiplied by it (Gemma: sqrt(hidden))

    @property
    def causal(self) -> bool:
        return self.kind == "decoder"

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def attn_scale(self) -> float:
        """Factor of the attention scores ``q . k`` before the softmax."""
        return 1.0 / math.sqrt(self.query_pre_attn_scalar or self.head_dim)

    def window(self, layer: int) -> int | None:
        """Sliding window of ``layer`` (keys attended per query, itself included), ``None`` if unbounded."""
        if not self.sliding_window or (self.sliding_layers is not None and layer not in self.sliding_layers):
            return None
        return self.sliding_window

    def norms_per_layer(self) -> int:
        return 4 if self.post_norms else 2

    def params_per_layer(self) -> int:
        """Weight elements of one transformer layer (norm vectors and biases included)."""
        h, f = self.hidden, self.intermediate
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        attn += (self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0) + (h if self.o_bias else 0)
        mlp_one = (3 if self.gated_mlp else 2) * h * f + (f + h if self.mlp_bias else 0)
        mlp = mlp_one * self.num_experts + (h * self.num_experts if self.is_moe else 0)
        norms = self.norms_per_layer() * h * (2 if self.norm == "layer" else 1)
        return attn + mlp + norms

    def num_params(self) -> int:
        emb = self.vocab * self.hidden
        head = 0 if self.tie_embeddings or self.kind == "encoder" else self.vocab * self.hidden
        return self.layers * self.params_per_layer() + emb + head + self.hidden

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.json"))


#: the largest value of each integer field of a config.json that infsim accepts (about 10x the largest
#: published model's; beyond, the op graph and the lowered program grow without a physical reason)
MODEL_LIMITS: dict[str, int] = {
    "hidden_size": 2**18, "n_embd": 2**18, "num_hidden_layers": 1024, "n_layer": 1024,
    "num_attention_heads": 4096, "n_head": 4096, "num_key_value_heads": 4096, "head_dim": 4096,
    "intermediate_size": 2**20, "n_inner": 2**20, "vocab_size": 2**22, "num_labels": 2**22,
    "max_position_embeddings": 2**24, "n_positions": 2**24, "n_ctx": 2**24, "num_local_experts": 1024,
    "num_experts_per_tok": 1024, "sliding_window": 2**24, "image_size": 2**14, "patch_size": 2**12,
    "num_channels": 64,
}


def _need(cfg: dict[str, Any], src: str, *names: str, default: Any = ..., kind: type = int) -> Any:
    """The first of ``names`` that ``cfg`` sets (not null): a positive integer up to its
    :data:`MODEL_LIMITS` (``kind=int``) or a positive finite number (``kind=float``); else ``default``."""
    for n in names:
        if n in cfg and cfg[n] is not None:
            v = cfg[n]
            if kind is int:
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise ModelError(f"{src}: field '{n}': expected a positive integer, got {_show(v)}")
                if v > MODEL_LIMITS.get(n, 2**24):
                    raise ModelError(f"{src}: field '{n}': {v} is above the largest supported, "
                                     f"{MODEL_LIMITS.get(n, 2**24)} (infsim.models.spec.MODEL_LIMITS)")
            if kind is float and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                                  or v <= 0):
                raise ModelError(f"{src}: field '{n}': expected a positive finite number, got {_show(v)}")
            return kind(v)
    if default is ...:
        raise ModelError(f"{src}: missing field '{names[0]}'")
    return default


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _flag(cfg: dict[str, Any], src: str, name: str, default: bool) -> bool:
    v = cfg.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ModelError(f"{src}: field '{name}': expected true or false, got {_show(v)}")
    return v


def _eps(cfg: dict[str, Any], src: str, name: str, default: float) -> float:
    eps = _need(cfg, src, name, default=default, kind=float)
    if eps >= 1:
        raise ModelError(f"{src}: field '{name}': {eps} is not a small normalisation epsilon (expected < 1)")
    return eps


_ACT = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}


def _activation(cfg: dict[str, Any], src: str, field: str, default: str) -> str:
    """The activation function named by ``field`` (default ``default``), in ModelSpec's names."""
    act = cfg.get(field, default)
    if not isinstance(act, str) or act not in _ACT:
        raise ModelError(f"{src}: field '{field}': unsupported activation {_show(act)} "
                         f"(supported: {', '.join(sorted(_ACT))})")
    return _ACT[act]


def _heads(
    cfg: dict[str, Any], src: str, hidden_fields: tuple[str, ...], heads_fields: tuple[str, ...]
) -> tuple[int, int]:
    """(hidden size, attention heads), the hidden size a multiple of the heads."""
    hidden = _need(cfg, src, *hidden_fields)
    heads = _need(cfg, src, *heads_fields)
    if hidden % heads:
        raise ModelError(f"{src}: field '{hidden_fields[0]}': {hidden} not divisible by {heads_fields[0]} {heads}")
    return hidden, heads


def _rope_scaling(cfg: dict[str, Any], src: str) -> RopeScaling | None:
    """The ``rope_scaling`` object (``None``, absent or type ``default``: no scaling)."""
    rs = cfg.get("rope_scaling")
    if rs is None:
        return None
    if not isinstance(rs, dict):
        raise ModelError(f"{src}: field 'rope_scaling': expected an object or null, got {rs!r}")
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return None
    if kind not in ("llama3", "linear"):
        raise ModelError(
            f"{src}: field 'rope_scaling': unsupported rope_type {kind!r} (supported: llama3, linear, default)"
        )
    where = f"{src}: rope_scaling"
    factor = _need(rs, where, "factor", kind=float)
    if kind == "linear":
        return RopeScaling("linear", factor)
    low = _need(rs, where, "low_freq_factor", kind=float)
    high = _need(rs, where, "high_freq_factor", kind=float)
    if high <= low:
        raise ModelError(f"{where}: field 'high_freq_factor': {high} must exceed low_freq_factor {low}")
    return RopeScaling("llama3", factor, low, high, _need(rs, where, "original_max_position_embeddings"))


def _sliding_layers(
    cfg: dict[str, Any], src: str, layers: int, default: tuple[int, ...] | None
) -> tuple[int, ...] | None:
    """The layers with a sliding window: the config's ``layer_types`` if it has them, else ``default``
    (``None``: every layer)."""
    types = cfg.get("layer_types")
    if types is None:
        return default
    allowed = ("sliding_attention", "full_attention")
    if not isinstance(types, list) or len(types) != layers or any(t not in allowed for t in types):
        raise ModelError(
            f"{src}: field 'layer_types': expected {layers} entries (num_hidden_layers), each one of "
            f"{', '.join(allowed)}"
        )
    return tuple(i for i, t in enumerate(types) if t == "sliding_attention")


#: families infsim reads like Llama: decoders with RMSNorm, rotary embeddings and a gated MLP
LLAMA_LIKE = ("llama", "mistral", "mixtral", "qwen2", "phi3", "gemma", "gemma2")


def _llama_like(cfg: dict[str, Any], src: str, name: str, mt: str) -> ModelSpec:
    """The Llama-like decoders (:data:`LLAMA_LIKE`): the common fields, then each family's differences."""
    gemma = mt in ("gemma", "gemma2")
    hidden, heads = _heads(cfg, src, ("hidden_size",), ("num_attention_heads",))
    kv = _need(cfg, src, "num_key_value_heads", default=heads)
    if heads % kv:
        raise ModelError(f"{src}: field 'num_key_value_heads': {kv} does not divide num_attention_heads {heads}")
    layers = _need(cfg, src, "num_hidden_layers")
    # Gemma's MLP uses hidden_activation (HF ignores hidden_act there), GELU-tanh when unset
    act = _activation(cfg, src, "hidden_activation", "gelu_pytorch_tanh") if gemma else _activation(
        cfg, src, "hidden_act", "silu")
    experts = _need(cfg, src, "num_local_experts", default=1) if mt == "mixtral" else 1
    per_tok = _need(cfg, src, "num_experts_per_tok", default=1) if experts > 1 else 1
    if per_tok > experts:
        raise ModelError(f"{src}: field 'num_experts_per_tok': {per_tok} is more than num_local_experts {experts}")
    partial = cfg.get("partial_rotary_factor", 1.0)
    if partial not in (None, 1, 1.0):
        raise ModelError(f"{src}: field 'partial_rotary_factor': {partial!r} unsupported (missing: partial rotary "
                         "embeddings; only 1.0)")
    if _flag(cfg, src, "mlp_bias", False):
        raise ModelError(f"{src}: field 'mlp_bias': unsupported (missing: biases in a gated MLP)")
    window = _need(cfg, src, "sliding_window", default=None)
    sliding: tuple[int, ...] | None = None
    extra: dict[str, Any] = {}
    attn_bias = _flag(cfg, src, "attention_bias", False)
    if mt == "qwen2":  # q/k/v biases always, none on o_proj; the window only with use_sliding_window
        attn_bias = False
        extra["qkv_bias"] = True
        if not _flag(cfg, src, "use_sliding_window", False):
            window = None
        sliding = tuple(range(_need(cfg, src, "max_window_layers", default=layers), layers))
    elif mt == "phi3":  # fused weights; no biases whatever attention_bias says (as HF's Phi3Attention)
        attn_bias = False
        extra.update(fused_qkv=True, fused_gate_up=True)
    elif gemma:
        extra.update(norm_offset=1.0, embed_scale=hidden**0.5)
        if mt == "gemma2":
            extra.update(
                attn_softcap=_need(cfg, src, "attn_logit_softcapping", default=0.0, kind=float),
                final_softcap=_need(cfg, src, "final_logit_softcapping", default=0.0, kind=float),
                query_pre_attn_scalar=_need(cfg, src, "query_pre_attn_scalar", default=256.0, kind=float),
                post_norms=True,
            )
            sliding = tuple(range(0, layers, 2))  # HF Gemma2: sliding on even layers, global on odd ones
        else:
            window = None
    if attn_bias:  # Llama's attention_bias: q, k, v and o_proj
        extra.update(qkv_bias=True, o_bias=True)
    return ModelSpec(
        name=name,
        family=mt,
        kind="decoder",
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv,
        head_dim=_need(cfg, src, "head_dim", default=256 if gemma else hidden // heads),
        intermediate=_need(cfg, src, "intermediate_size"),
        vocab=_need(cfg, src, "vocab_size"),
        max_positions=_need(cfg, src, "max_position_embeddings", default=8192 if gemma else ...),
        norm="rms",
        norm_eps=_eps(cfg, src, "rms_norm_eps", 1e-6),
        activation=act,
        gated_mlp=True,
        rotary=True,
        rope_theta=_need(cfg, src, "rope_theta", default=10000.0, kind=float),
        num_experts=experts,
        experts_per_token=per_tok,
        tie_embeddings=_flag(cfg, src, "tie_word_embeddings", gemma),
        sliding_window=window,
        sliding_layers=_sliding_layers(cfg, src, layers, sliding) if window else None,
        rope_scaling=_rope_scaling(cfg, src),
        **extra,
    )


#: architectures people bring that infsim does not model, with what is missing for each
UNSUPPORTED: dict[str, str] = {
    "gemma3": "multimodal inputs, q/k RMSNorm, a separate rotary base for local layers",
    "gemma3_text": "q/k RMSNorm, a separate rotary base for local layers",
    "qwen3": "q/k RMSNorm",
    "qwen2_moe": "shared experts, top-k normalisation switch",
    "qwen3_moe": "q/k RMSNorm, top-k normalisation switch",
    "phi": "parallel attention and MLP blocks, partial rotary embeddings",
    "phimoe": "sparse-mixer routing",
    "falcon": "parallel attention and MLP blocks, multi-query attention layouts",
    "gpt_neox": "parallel residual, partial rotary embeddings",
    "deepseek_v2": "multi-head latent attention, shared experts",
    "deepseek_v3": "multi-head latent attention, shared experts, group-limited routing",
    "mamba": "state-space layers (no attention)",
    "mamba2": "state-space layers (no attention)",
    "jamba": "state-space layers, interleaved attention and MoE",
    "t5": "encoder-decoder cross-attention, relative position buckets",
}


def spec_from_config(cfg: dict[str, Any], name: str = "model", source: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a parsed config.json dict; errors name the source and field."""
    src = source or name
    if not isinstance(cfg, dict):
        raise ModelError(f"{src}: expected a JSON object")
    mt = cfg.get("model_type")
    if mt is None:
        raise ModelError(f"{src}: missing field 'model_type'")
    if not isinstance(mt, str):
        raise ModelError(f"{src}: field 'model_type': expected a string, got {_show(mt)}")
    if mt in LLAMA_LIKE:
        return _llama_like(cfg, src, name, mt)
    if mt == "gpt2":
        hidden, heads = _heads(cfg, src, ("n_embd", "hidden_size"), ("n_head", "num_attention_heads"))
        act = _activation(cfg, src, "activation_function", "gelu_new")
        return ModelSpec(
            name=name,
            family="gpt2",
            kind="decoder",
            hidden=hidden,
            layers=_need(cfg, src, "n_layer"),
            heads=heads,
            kv_heads=heads,
            head_dim=hidden // heads,
            intermediate=_need(cfg, src, "n_inner", default=4 * hidden),
            vocab=_need(cfg, src, "vocab_size"),
            max_positions=_need(cfg, src, "n_positions", "n_ctx"),
            norm="layer",
            norm_eps=_eps(cfg, src, "layer_norm_epsilon", 1e-5),
            activation=act,
            gated_mlp=False,
            rotary=False,
            rope_theta=0.0,
            tie_embeddings=_flag(cfg, src, "tie_word_embeddings", True),
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
        )
    if mt in ("bert", "roberta", "vit"):
        hidden, heads = _heads(cfg, src, ("hidden_size",), ("num_attention_heads",))
        act = _activation(cfg, src, "hidden_act", "gelu")
        vit = mt == "vit"
        image = _need(cfg, src, "image_size") if vit else 0
        patch = _need(cfg, src, "patch_size") if vit else 0
        if patch > image:
            raise ModelError(f"{src}: field 'patch_size': {patch} is larger than image_size {image}")
        return ModelSpec(
            name=name,
            family=mt,
            kind="encoder",
            hidden=hidden,
            layers=_need(cfg, src, "num_hidden_layers"),
            heads=heads,
            kv_heads=heads,
            head_dim=hidden // heads,
            intermediate=_need(cfg, src, "intermediate_size"),
            vocab=_need(cfg, src, "num_labels", default=1000) if vit else _need(cfg, src, "vocab_size"),
            max_positions=(image // patch) ** 2 + 1 if vit else _need(cfg, src, "max_position_embeddings"),
            norm="layer",
            norm_eps=_eps(cfg, src, "layer_norm_eps", 1e-12),
            activation=act,
            gated_mlp=False,
            rotary=False,
            rope_theta=0.0,
            tie_embeddings=not vit,
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            image_size=image,
            patch_size=patch,
            num_channels=_need(cfg, src, "num_channels", default=3) if vit else 0,
        )
    supported = ", ".join((*LLAMA_LIKE, "gpt2", "bert", "roberta", "vit"))
    missing = f"missing: {UNSUPPORTED[mt]}; " if mt in UNSUPPORTED else ""
    raise ModelError(f"{src}: field 'model_type': unsupported architecture {mt!r} ({missing}supported: {supported})")


def load_model(name_or_path: str | Path) -> ModelSpec:
    """Load a zoo model by name (``llama-2-7b``) or any compatible ``config.json`` by path."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        if not p.exists():
            raise ModelError(f"{p}: no such file")
        path, name = p, (p.parent.name if p.name == "config.json" else p.stem)
    else:
        path = ZOO_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise ModelError(f"unknown model '{name_or_path}' (zoo: {', '.join(zoo_names())}; or a config.json path)")
        name = str(name_or_path)
    text = read_text(path, "model config (config.json)", error=ModelError)
    return spec_from_config(parse_json(text, str(path), error=ModelError), name, str(path))
