"""What each instruction of a lowered program is for: an op class and a layer per instruction.

The emitters tag every instruction when they emit it (:class:`~.emit.Emitter` keeps the current tag and
records it for each instruction it appends, the ``nop`` carriers of extra waits included); the tags are
kept beside the program, not in its records, so the program is the same with or without them.
:class:`~.transformer.Lowered` exposes them as ``op_class`` (``uint8``, an :class:`OpClass` per
instruction) and ``layer`` (``int16``, the transformer layer, ``-1`` outside the layers), aligned with
``program.instr``; :data:`OP_CLASS_NAMES` names the codes.

Conventions. A PSUM eviction belongs to the op whose matmuls it evicts (an eviction that also adds into
the residual stream included); ``residual`` is a separate add into the residual stream. Per-channel
vectors (biases, int8 scales, norm weights) are loaded under the op that uses them. A weight slab's DMA
is ``weight_stream`` with the layer of the weights it loads (it is issued ahead, during earlier ops);
the int8 dequantisation of a slab is ``dequant`` with the layer that consumes it. Left out: finer
purposes (which projection of q/k/v, which head), and the tags of programs not built by this lowering.
"""

from __future__ import annotations

import re
from array import array
from enum import IntEnum

import numpy as np


class OpClass(IntEnum):
    """Purpose of an instruction (the codes of ``Lowered.op_class``)."""

    sync = 0  # nop carrying waits that did not fit on the instruction after it
    setup = 1  # per-rank constants (ones vectors, rotation matrix)
    input_dma = 2  # model inputs into SBUF (hidden states, patches, position embeddings)
    output_dma = 3  # model outputs to HBM (logits, hidden states)
    weight_stream = 4  # weight slabs HBM -> SBUF ring
    dequant = 5  # int8 weight slab -> bf16
    norm = 6  # RMSNorm / LayerNorm (and the cast of a post-norm residual to the matmul dtype)
    qkv = 7  # q, k, v projections
    rope = 8  # rotary embedding (cos/sin loads, rotation)
    kv_write = 9  # new keys/values into the HBM cache (V staging transposes included)
    kv_load = 10  # keys/values of one kv head into SBUF for attention
    attn_scores = 11  # q^T K (causal mask included)
    softmax = 12  # row max, exp and sum, normalisation
    attn_pv = 13  # probabilities (and encoder V) transposed, P x V, its eviction
    o_proj = 14  # attention output projection
    residual = 15  # adds into the residual stream not fused into an eviction
    collective = 16  # all-reduce of a partial output over the tensor-parallel ranks
    mlp_up = 17  # MLP gate and up projections with the activation (experts' included)
    mlp_down = 18  # MLP down projection (experts' included)
    moe_router = 19  # MoE router projection and its exp
    head = 20  # LM head / classifier (final tokens picked, logits transposed to rows)
    patch_embed = 21  # ViT patch embedding projection
    embed = 22  # input embeddings scaled (Gemma: by sqrt(hidden))
    moe_combine = 23  # MoE routing weights (chosen-expert mask, normalisation, broadcasts), accumulator


#: the tag of instructions emitted outside any tagged block (a lowering bug: :func:`~.transformer.lower`
#: refuses to return a program with one)
UNTAGGED = 255

#: names of the op classes, indexed by code
OP_CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in OpClass)

#: op classes whose matmuls have weights as the stationary operand
LINEAR_CLASSES = frozenset(
    {OpClass.qkv, OpClass.o_proj, OpClass.mlp_up, OpClass.mlp_down, OpClass.moe_router, OpClass.head,
     OpClass.patch_embed}
)
#: op classes whose matmuls are the attention's (scores and probabilities x values)
ATTENTION_CLASSES = frozenset({OpClass.attn_scores, OpClass.attn_pv})

#: op class of the matmul ops of the op graph (:mod:`infsim.models.graph`), by name without the layer
GRAPH_MATMUL_CLASS: dict[str, OpClass] = {
    "q_proj": OpClass.qkv,
    "k_proj": OpClass.qkv,
    "v_proj": OpClass.qkv,
    "attn_scores": OpClass.attn_scores,
    "attn_values": OpClass.attn_pv,
    "o_proj": OpClass.o_proj,
    "gate_up_proj": OpClass.mlp_up,
    "up_proj": OpClass.mlp_up,
    "experts_gate_up": OpClass.mlp_up,
    "down_proj": OpClass.mlp_down,
    "experts_down": OpClass.mlp_down,
    "router": OpClass.moe_router,
    "lm_head": OpClass.head,
    "classifier": OpClass.head,
    "patch_embed": OpClass.patch_embed,
}

_LAYER = re.compile(r"^L(\d+)\.")


def layer_of(name: str) -> int:
    """Layer of a per-layer weight or tensor name (``L3.wq`` -> 3), -1 for the others."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def graph_op_class(name: str) -> OpClass:
    """Op class of a matmul op of the op graph (``L3.q_proj`` -> ``qkv``); ``KeyError`` for other ops."""
    return GRAPH_MATMUL_CLASS[name.split(".", 1)[1] if _LAYER.match(name) else name]


class TagLog:
    """Op class and layer of every instruction appended so far (compact, appended one at a time)."""

    def __init__(self) -> None:
        self.op_class = array("B")
        self.layer = array("h")

    def __len__(self) -> int:
        return len(self.op_class)

    def append(self, op_class: int, layer: int) -> None:
        self.op_class.append(op_class)
        self.layer.append(layer)

    def fill(self, op_class: int, layer: int, n: int) -> None:
        """Tag the next ``n`` instructions alike."""
        self.op_class.extend(array("B", (op_class,)) * n)
        self.layer.extend(array("h", (layer,)) * n)

    def arrays(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(op_class uint8, layer int16) of instructions ``start..stop`` (copies)."""
        stop = len(self) if stop is None else stop
        return (
            np.frombuffer(self.op_class, np.uint8)[start:stop].copy(),
            np.frombuffer(self.layer, np.int16)[start:stop].copy(),
        )

    def extend(self, op_class: np.ndarray, layer: np.ndarray) -> None:
        self.op_class.frombytes(np.ascontiguousarray(op_class, np.uint8).tobytes())
        self.layer.frombytes(np.ascontiguousarray(layer, np.int16).tobytes())
