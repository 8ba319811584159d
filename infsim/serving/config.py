"""The serving stack's configuration schema: how a stack pads shapes to its compiled buckets and what the host
and runtime add around each device execution. Stacks are YAML files in ``infsim/config/serving/`` whose every
number cites its source or says ``assumed`` (the same rule as the chip presets)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infsim.config.schema import _Model


class BucketConfig(_Model):
    """The sequence lengths a stack compiles one phase for.

    ``pow2``: powers of two from ``min_tokens`` below the compiled maximum, then the maximum itself;
    ``half_of_tkg``: each token-generation bucket halved (context encoding only); ``list``: ``values`` (and
    the maximum); ``none``: one bucket, the compiled maximum.
    """

    kind: Literal["none", "pow2", "half_of_tkg", "list"]
    min_tokens: int = Field(default=128, ge=1)
    values: tuple[int, ...] = ()


class ServingConfig(_Model):
    name: str
    description: str = ""
    token_generation_buckets: BucketConfig = Field(description="sequence buckets of decode (the KV length "
                                                   "decode attention runs over)")
    context_encoding_buckets: BucketConfig = Field(description="sequence buckets of prefill (the prompt pads to "
                                                   "its bucket)")
    bucket_select: Literal["ge", "gt"] = Field(default="ge", description=(
        "ge: the first bucket >= the length needed; gt: the first bucket strictly greater (the largest when "
        "none is)"))
    host_step_overhead_us: float = Field(ge=0, description=(
        "host time between two synchronous device executions (launch, dispatch, output sync), exposed once per "
        "synchronous execution"))
    async_mode: bool = Field(default=False, description=(
        "decode steps overlap the host's work for the next step with the device's (needs device sampling)"))
    sampling: Literal["host", "device"] = Field(default="host", description=(
        "host: the logits of every sequence go to the host each step and the step is synchronous"))
    host_link_gbps: float = Field(gt=0, description="host <-> device transfer rate, GB/s (logits to the host)")
    request_overhead_us: float = Field(default=0.0, ge=0, description=(
        "per-request host work before the first token beyond one synchronous execution"))
