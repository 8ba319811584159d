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

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infsim.errors import InfsimError

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


def _need(cfg: dict[str, Any], src: str, *names: str, default: Any = ..., kind: type = int) -> Any:
    for n in names:
        if n in cfg and cfg[n] is not None:
            v = cfg[n]
            if kind is int and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ModelError(f"{src}: field '{n}': expected a positive integer, got {v!r}")
            if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ModelError(f"{src}: field '{n}': expected a number, got {v!r}")
            return kind(v)
    if default is ...:
        raise ModelError(f"{src}: missing field '{names[0]}'")
    return default


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
    if act not in _ACT:
        raise ModelError(f"{src}: field '{field}': unsupported activation {act!r}")
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
    if mt in ("llama", "mistral", "mixtral"):
        hidden, heads = _heads(cfg, src, ("hidden_size",), ("num_attention_heads",))
        kv = _need(cfg, src, "num_key_value_heads", default=heads)
        if heads % kv:
            raise ModelError(f"{src}: field 'num_key_value_heads': {kv} does not divide num_attention_heads {heads}")
        act = _activation(cfg, src, "hidden_act", "silu")
        experts = _need(cfg, src, "num_local_experts", default=1)
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
            norm_eps=_need(cfg, src, "rms_norm_eps", default=1e-6, kind=float),
            activation=act,
            gated_mlp=True,
            rotary=True,
            rope_theta=_need(cfg, src, "rope_theta", default=10000.0, kind=float),
            num_experts=experts,
            experts_per_token=_need(cfg, src, "num_experts_per_tok", default=1) if experts > 1 else 1,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=bool(cfg.get("attention_bias", False)),
            sliding_window=cfg.get("sliding_window"),
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
            norm_eps=_need(cfg, src, "layer_norm_epsilon", default=1e-5, kind=float),
            activation=act,
            gated_mlp=False,
            rotary=False,
            rope_theta=0.0,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            qkv_bias=True,
        )
    if mt in ("bert", "roberta", "vit"):
        hidden, heads = _heads(cfg, src, ("hidden_size",), ("num_attention_heads",))
        act = _activation(cfg, src, "hidden_act", "gelu")
        vit = mt == "vit"
        image = _need(cfg, src, "image_size") if vit else 0
        patch = _need(cfg, src, "patch_size") if vit else 0
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
            norm_eps=_need(cfg, src, "layer_norm_eps", default=1e-12, kind=float),
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
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    return spec_from_config(cfg, name, str(path))
