"""Static balanced expert routing: which experts each token of a chunk goes to, in one place.

A lowered program's data flow is fixed when it is lowered, so infsim cannot route tokens by the
router's top-k. The lowering (:mod:`.lower.mlp`), the op graph (:mod:`.graph`), the step-level model
(:mod:`infsim.fidelity.step`) and the numpy reference (:mod:`.reference`) share this static assignment
instead, a timing model of balanced routing:

* the ``E`` experts are split into ``k = experts_per_token`` groups, group ``j`` being experts
  ``j*E//k .. (j+1)*E//k - 1`` (``g_j`` of them);
* of a chunk of ``n`` tokens, token ``c`` goes to one expert of every group: expert ``c * g_j // n`` of
  group ``j`` when ``n >= g_j`` (every expert of the group gets ``n / g_j`` consecutive tokens), else
  expert ``c`` (one token each, the first ``n`` experts of the group);
* a token's ``k`` experts are therefore distinct, every expert's tokens are one run of consecutive
  tokens, and ``n`` tokens touch the first ``min(n, g_j)`` experts of every group (``min(E, n k)`` when
  ``k`` divides ``E``).

What is real: every token is processed by exactly ``k`` experts and their outputs are combined with the
router's weights, the softmax of the token's router logits over its ``k`` experts (Mixtral's top-k
softmax renormalised over the chosen experts, with this static choice in place of the top-k). What is
not: which experts a token goes to does not depend on its router logits, and the load is perfectly
balanced (real routing is skewed: more experts touched per chunk, uneven expert batch sizes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .spec import ModelSpec


class ExpertRun(NamedTuple):
    """The tokens ``c0 .. c1-1`` of a chunk that expert ``expert`` (of group ``slot``) processes."""

    expert: int
    slot: int
    c0: int
    c1: int


def expert_groups(spec: ModelSpec) -> list[tuple[int, int]]:
    """(first expert, experts) of every group, one group per routing slot."""
    e, k = spec.num_experts, spec.experts_per_token
    return [(j * e // k, (j + 1) * e // k - j * e // k) for j in range(k)]


def expert_runs(spec: ModelSpec, n: int) -> list[ExpertRun]:
    """The touched experts of a chunk of ``n`` tokens with their runs of tokens, in expert order."""
    runs: list[ExpertRun] = []
    for slot, (lo, g) in enumerate(expert_groups(spec)):
        if n < g:
            runs += [ExpertRun(lo + c, slot, c, c + 1) for c in range(n)]
            continue
        for i in range(g):  # tokens c with c * g // n == i
            runs.append(ExpertRun(lo + i, slot, -(-i * n // g), -(-(i + 1) * n // g)))
    return runs


def experts_touched(spec: ModelSpec, n: int) -> int:
    """Distinct experts a chunk of ``n`` tokens touches (per MoE layer)."""
    return sum(min(n, g) for _, g in expert_groups(spec))


def assignment(spec: ModelSpec, n: int) -> np.ndarray:
    """``[n, k]`` expert of every token of a chunk of ``n`` tokens, one column per group."""
    out = np.zeros((n, spec.experts_per_token), np.int64)
    for r in expert_runs(spec, n):
        out[r.c0 : r.c1, r.slot] = r.expert
    return out
