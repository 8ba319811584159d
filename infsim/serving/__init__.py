"""The serving stack as its own model: what a served request sees beyond the chip's device time.

Published latencies are of a serving stack, not of a bare chip. A :class:`ServingStack` (a YAML file in
``infsim/config/serving/``, loaded with :func:`load_serving`) says

* which shapes the device runs: the Neuron stacks compile context encoding (prefill) and token generation
  (decode) for fixed sequence buckets, so a prompt is padded to its context bucket and decode attention runs
  over the bucket of the KV length (:meth:`ServingStack.device_workload`);
* what the host and runtime add (:meth:`ServingStack.runtime_ns`): per synchronous device execution a host
  gap (launch, dispatch, output sync), hidden in async mode; with host sampling the logits cross the host
  link every step (and force synchronous steps); per request, any work before the first token.

``infsim run --serving NAME`` (and :func:`infsim.run`) report ``device_ms`` (the chip, at the padded
shapes) and ``runtime_ms`` (this model) separately; ``latency_ms`` is their sum, what a served request sees.
The stack ``none`` is the bare chip: no padding, no runtime time (``infsim compare``'s default: a chip study
compares devices; it states the stack it used).

Left out: batching policies (continuous batching, batch buckets), speculative decoding, multi-request
queueing, bucket-switching costs, the first decode step after prefill (synchronous even in async mode), and
tokenisation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from infsim.config.loader import load_raw, validate_model
from infsim.errors import InfsimError

from .config import BucketConfig, ServingConfig

if TYPE_CHECKING:
    from infsim.models.graph import Workload
    from infsim.models.spec import ModelSpec

SERVING_DIR = Path(__file__).resolve().parents[1] / "config" / "serving"


def buckets(cfg: BucketConfig, max_len: int, tkg: BucketConfig | None = None) -> list[int]:
    """The sequence buckets of one phase compiled up to ``max_len`` tokens, ascending (``tkg``: the token
    generation buckets, for ``half_of_tkg``)."""
    if max_len < 1:
        raise InfsimError(f"serving: compiled maximum sequence length must be >= 1, got {max_len}")
    if cfg.kind == "none":
        return [max_len]
    if cfg.kind == "half_of_tkg":
        if tkg is None or tkg.kind == "half_of_tkg":
            raise InfsimError("serving: half_of_tkg context buckets need token-generation buckets")
        return sorted({max(1, b // 2) for b in buckets(tkg, max_len)})
    if cfg.kind == "list":
        vals = {v for v in cfg.values if v < max_len}
    else:
        vals, b = set(), cfg.min_tokens
        while b < max_len:
            vals.add(b)
            b *= 2
    return sorted(vals | {max_len})


def select(bs: list[int], need: int, how: str) -> int:
    """The bucket of ``bs`` for ``need`` tokens: the first >= it (``ge``) or > it (``gt``), else the largest."""
    for b in bs:
        if b > need or (how == "ge" and b == need):
            return b
    return bs[-1]


class ServingStack:
    """One serving stack (see the module docstring)."""

    def __init__(self, cfg: ServingConfig) -> None:
        self.cfg = cfg

    @property
    def name(self) -> str:
        return self.cfg.name

    def tkg_buckets(self, max_len: int) -> list[int]:
        return buckets(self.cfg.token_generation_buckets, max_len)

    def cte_buckets(self, max_len: int) -> list[int]:
        return buckets(self.cfg.context_encoding_buckets, max_len, self.cfg.token_generation_buckets)

    @staticmethod
    def compiled_length(wl: Workload, spec: ModelSpec, max_len: int | None = None) -> int:
        """The sequence length the stack compiled for: ``max_len`` when given, else the model's
        ``max_position_embeddings`` for a decoder and the prompt itself for an encoder (a traced shape)."""
        if max_len is not None:
            return max_len
        return spec.max_positions if spec.kind == "decoder" else wl.seq

    def device_workload(self, wl: Workload, max_len: int) -> Workload:
        """The step the device runs: decode attention over the bucket of its KV length (the bucket minus the
        new token is the cached part), prefill over the prompt's context bucket. ``max_len``: the sequence
        length the stack compiled for (``n_positions``); a step longer than it runs unpadded."""
        if self.cfg.name == "none":
            return wl
        if wl.phase == "decode":
            kv = select(self.tkg_buckets(max_len), wl.context + 1, self.cfg.bucket_select)
            return replace(wl, context=max(kv, wl.context + 1) - 1)
        return replace(wl, seq=max(wl.seq, select(self.cte_buckets(max_len), wl.seq, self.cfg.bucket_select)))

    def runtime_ns(self, wl: Workload, spec: ModelSpec) -> float:
        """Host and runtime time of one step: the host gap of a synchronous execution (every prefill; a decode
        step unless async with device sampling), the logits' transfer with host sampling, and for a prefill
        the per-request overhead."""
        c = self.cfg
        sync = wl.phase == "prefill" or not c.async_mode or c.sampling == "host"
        ns = c.host_step_overhead_us * 1e3 if sync else 0.0
        if c.sampling == "host" and spec.kind == "decoder":
            ns += wl.batch * spec.vocab * 4 / c.host_link_gbps  # fp32 logits of every sequence
        if wl.phase == "prefill":
            ns += c.request_overhead_us * 1e3
        return ns


def serving_names() -> list[str]:
    return sorted(p.stem for p in SERVING_DIR.glob("*.yaml"))


def load_serving(name_or_path: str | Path | ServingStack | None) -> ServingStack:
    """A serving stack by name (``infsim/config/serving/NAME.yaml``) or YAML path; None is ``none``."""
    if isinstance(name_or_path, ServingStack):
        return name_or_path
    data, path = load_raw(name_or_path or "none", SERVING_DIR, what="serving stack")
    return ServingStack(validate_model(ServingConfig, data, str(path)))


__all__ = ["BucketConfig", "ServingConfig", "ServingStack", "buckets", "load_serving", "select", "serving_names"]
