"""Model specifications: a Hugging Face ``config.json`` (zoo name or path) -> :class:`ModelSpec`.

A model is data, not code: every supported architecture is a transformer described by the handful of
fields below, read from the config under the names the Hugging Face families use. Supported
``model_type`` values: llama, mistral, mixtral (decoders with RMSNorm, rotary embeddings, SwiGLU,
grouped-query attention, optional mixture of experts), gpt2 (decoder with LayerNorm, learned positions,
GELU-tanh MLP), bert (encoder), vit (encoder over image patches).

Left out: sliding-window attention is recorded (``sliding_window``) and bounds the attended context;
biases other than the ones the family always has are ignored in FLOPs (they are < 0.1%).
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
class ModelSpec:
    name: str
    family: str  # llama | mistral | mixtral | gpt2 | bert | vit
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
    qkv_bias: bool = False
    sliding_window: int | None = None
    image_size: int = 0
    patch_size: int = 0
    num_channels: int = 0

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

    def params_per_layer(self) -> int:
        """Weight elements of one transformer layer (norm vectors included, biases of q/k/v if any)."""
        h, f = self.hidden, self.intermediate
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        mlp_one = (3 if self.gated_mlp else 2) * h * f
        mlp = mlp_one * self.num_experts + (h * self.num_experts if self.is_moe else 0)
        norms = 2 * h * (2 if self.norm == "layer" else 1)
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
    if mt in ("llama", "mistral", "mixtral"):
        hidden, heads = _heads(cfg, src, ("hidden_size",), ("num_attention_heads",))
        kv = _need(cfg, src, "num_key_value_heads", default=heads)
        if heads % kv:
            raise ModelError(f"{src}: field 'num_key_value_heads': {kv} does not divide num_attention_heads {heads}")
        act = _activation(cfg, src, "hidden_act", "silu")
        experts = _need(cfg, src, "num_local_experts", default=1)
        per_tok = _need(cfg, src, "num_experts_per_tok", default=1) if experts > 1 else 1
        if per_tok > experts:
            raise ModelError(f"{src}: field 'num_experts_per_tok': {per_tok} is more than num_local_experts "
                             f"{experts}")
        return ModelSpec(
            name=name,
            family=mt,
            kind="decoder",
            hidden=hidden,
            layers=_need(cfg, src, "num_hidden_layers"),
            heads=heads,
            kv_heads=kv,
            head_dim=_need(cfg, src, "head_dim", default=hidden // heads),
            intermediate=_need(cfg, src, "intermediate_size"),
            vocab=_need(cfg, src, "vocab_size"),
            max_positions=_need(cfg, src, "max_position_embeddings"),
            norm="rms",
            norm_eps=_eps(cfg, src, "rms_norm_eps", 1e-6),
            activation=act,
            gated_mlp=True,
            rotary=True,
            rope_theta=_need(cfg, src, "rope_theta", default=10000.0, kind=float),
            num_experts=experts,
            experts_per_token=per_tok,
            tie_embeddings=_flag(cfg, src, "tie_word_embeddings", False),
            qkv_bias=_flag(cfg, src, "attention_bias", False),
            sliding_window=_need(cfg, src, "sliding_window", default=None),
        )
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
            image_size=image,
            patch_size=patch,
            num_channels=_need(cfg, src, "num_channels", default=3) if vit else 0,
        )
    raise ModelError(
        f"{src}: field 'model_type': unsupported architecture {mt!r} "
        "(supported: llama, mistral, mixtral, gpt2, bert, roberta, vit)"
    )


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
