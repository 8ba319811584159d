"""Can this chip run this step at all? Checks shared by every fidelity, made before any of them runs, so that
the analytical model never gives a latency for a step the lowering (the cycle fidelity's path) refuses.

:func:`check_step` refuses, naming the option or chip field: a weight dtype the lowering has no kernels
for (fp32, int32: only bf16, fp16, fp8 and 8-bit integer weights, dequantised to bf16 before the matmul),
a matmul input dtype (weights, KV cache) that the chip's tensor engine has no rate for, and fewer than two
PSUM banks (the lowering alternates matmul output blocks between banks).

Left out (issue 15): capacity (weights and KV cache beyond HBM, working sets beyond SBUF) and the limits
of the lowering's tiling (head dimension, array rows vs SBUF partitions), which the lowering checks itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infsim.errors import InfsimError

if TYPE_CHECKING:
    from infsim.config import ChipConfig
    from infsim.models.graph import Workload

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
