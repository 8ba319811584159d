"""Can this chip run this step at all? Checks shared by every fidelity, made before any of them runs, so that
the analytical model never gives a latency for a step the lowering (the cycle fidelity's path) refuses.

:func:`check_step` refuses, naming the option or chip field: a weight dtype the lowering has no kernels
for (fp32, int32: only bf16, fp16, fp8 and 8-bit integer weights, dequantised to bf16 before the matmul),
a matmul input dtype (weights, KV cache) that the chip's tensor engine has no rate for, and fewer than two
PSUM banks (the lowering alternates matmul output blocks between banks).

:func:`check_capacity` refuses a step whose weights and KV cache alone exceed the HBM of the chips it
runs on. It counts a lower bound (no padding, no activations, no layout): the lowering's exact check of
its declared tensors refuses more at cycle fidelity. With it the analytical model no longer computes
(for minutes) a latency for a batch of a billion sequences whose KV cache would need petabytes.

Left out (issue 15): the exact footprint at analytical fidelity (padding, activations), working sets
beyond SBUF, and the limits of the lowering's tiling (head dimension, array rows vs SBUF partitions),
which the lowering checks itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infsim.errors import InfsimError

if TYPE_CHECKING:
    from infsim.config import ChipConfig
    from infsim.models.graph import Workload
    from infsim.models.spec import ModelSpec

#: weight dtypes with lowering kernels (8-bit integers are dequantised to bf16 on chip)
WEIGHT_DTYPES = ("bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "uint8")


class InfeasibleError(InfsimError):
    """The chip cannot run the step as asked (a dtype it lacks, a resource too small)."""


def matmul_dtype(weight_dtype: str) -> str:
    """The tensor-engine input dtype of a linear layer with weights of ``weight_dtype``."""
    return "bf16" if weight_dtype in ("int8", "uint8") else weight_dtype


def check_step(wl: Workload, chip: ChipConfig) -> None:
    """Raise :class:`InfeasibleError` naming the first reason ``chip`` cannot run ``wl`` (see the module)."""
    if wl.weight_dtype not in WEIGHT_DTYPES:
        raise InfeasibleError(f"--dtype {wl.weight_dtype}: weights of this dtype are not supported "
                              f"(use {', '.join(WEIGHT_DTYPES)})")
    rates = chip.tensor_engine.macs_per_pe_per_cycle
    for flag, given, dt in (("--dtype", wl.weight_dtype, matmul_dtype(wl.weight_dtype)),
                            ("--kv-dtype", wl.kv_dtype, wl.kv_dtype)):
        if dt not in rates:
            via = f" (multiplied as {dt})" if dt != given else ""
            raise InfeasibleError(f"{flag} {given}{via}: chip '{chip.name}' has no tensor_engine."
                                  f"macs_per_pe_per_cycle rate for {dt} (it has {', '.join(sorted(rates))})")
    if chip.psum.banks < 2:
        raise InfeasibleError(f"psum.banks {chip.psum.banks}: chip '{chip.name}' needs at least 2 PSUM banks "
                              "(the lowering alternates matmul outputs between banks)")


def min_hbm_bytes(spec: ModelSpec, wl: Workload) -> tuple[int, int]:
    """(weight bytes, KV-cache bytes) the step keeps in HBM, over all ranks, without padding: the weights of
    the op graph (replicas included) and, for a decoder, K and V of every cached and new position (at most
    the sliding window) of every layer and sequence."""
    from infsim.isa.dtypes import DType
    from infsim.models.graph import build_graph

    weights = build_graph(spec, wl).weight_bytes()
    if spec.kind != "decoder":
        return weights, 0
    positions = wl.context + wl.seq
    if spec.sliding_window:
        positions = min(positions, spec.sliding_window)
    kv = 2 * spec.layers * wl.batch * positions * spec.kv_dim * DType.parse(wl.kv_dtype).itemsize
    return weights, kv


def check_capacity(spec: ModelSpec, wl: Workload, chip: ChipConfig) -> None:
    """Raise :class:`InfeasibleError` when the step's weights and KV cache (:func:`min_hbm_bytes`) exceed the
    HBM of the ``ceil(tp / cores_per_chip)`` chips it runs on."""
    import math

    weights, kv = min_hbm_bytes(spec, wl)
    chips = math.ceil(wl.tp / chip.cores_per_chip)
    cap = chips * chip.hbm_bytes
    if weights + kv > cap:
        gib = 2**30
        raise InfeasibleError(
            f"model '{spec.name}' {wl.phase} batch {wl.batch} context {wl.prompt_or_context} with tp {wl.tp}: needs "
            f"at least {(weights + kv) / gib:.4g} GiB of HBM (weights {weights / gib:.4g} GiB, KV cache "
            f"{kv / gib:.4g} GiB), its {chips} chip(s) of '{chip.name}' hold {cap / gib:.4g} GiB; use a larger "
            "--tp or a smaller batch or context")
