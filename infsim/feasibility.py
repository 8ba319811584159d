"""Can this chip run this step at all? The checks every fidelity makes before it runs, in one place, so that
no fidelity gives a latency for a step another one refuses (``infsim run`` at either fidelity, every
``compare``, ``what-it-takes``, ``sweep`` and ``search`` point goes through
:func:`infsim.models.lower.plan.check_feasible`, which applies these checks to the lowering's plan of the
step and lives beside it so that this module imports no lowering; the lowering itself calls
:func:`check_step` and :func:`check_hbm`).

Each refusal is an :class:`InfeasibleError` whose ``limit`` names the resource (:data:`LIMITS`) and whose
message names the option or config field behind it:

* ``dtype`` (:func:`check_step`): a weight dtype the lowering has no kernels for (fp32, int32: only bf16,
  fp16, fp8 and 8-bit integer weights, dequantised to bf16 before the matmul), or a matmul input dtype
  (weights, KV cache) that the chip's tensor engine has no rate for;
* ``psum`` (:func:`check_step`): fewer than two PSUM banks (the lowering alternates matmul output blocks
  between banks);
* ``tensor_engine`` (:func:`check_step`): a moving free size (``tensor_engine.moving_free_max``) below the
  partitions (``sbuf.partitions``): the lowering transposes partition-square tiles (attention
  probabilities, staged K/V rows) in one matmul each, whose moving free size is the partitions;
* ``instance`` (:func:`check_instance`, made by :func:`infsim.mapping.physical_workload` as it maps the
  logical ranks onto physical cores): tensor parallelism over more chips than the chip's instance has
  (``instance.chips``);
* ``hbm`` (:func:`check_hbm`): the tensors a chip holds (weights in their slab layout, norm weights and
  biases, the KV cache at the context's capacity, inputs and outputs: exactly what the lowering declares,
  :meth:`infsim.models.lower.plan.LoweringPlan.rank_tensors`) beyond ``hbm.capacity_gib``;
* ``sbuf``: no token chunk and weight-ring depth whose working set fits ``sbuf.bytes_per_partition`` (the
  lowering's own SBUF placement, :meth:`~infsim.models.lower.plan.LoweringPlan.fit`; the PSUM bank size
  bounds the token chunk there).

The plan behind the HBM and SBUF checks is computed in closed form per layer (no per-sequence work), so a
batch of a billion sequences is refused at once rather than estimated for minutes.

A model the lowering does not support at all (a head size, an array shape, a ViT patch wider than the
hidden state, more sequences than partitions in a model with a head) is not "infeasible" but unsupported:
that error (:class:`~infsim.models.lower.LoweringError`, raised by the plan's constructor, before the checks
above) passes through unchanged.

Left out: host memory, the serving stack's memory, fragmentation of HBM.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from infsim.errors import InfsimError

if TYPE_CHECKING:
    from infsim.config import ChipConfig
    from infsim.models.graph import Workload

#: the limits :class:`InfeasibleError` names (``limit``)
LIMITS = ("dtype", "psum", "tensor_engine", "instance", "hbm", "sbuf")

#: weight dtypes with lowering kernels (8-bit integers are dequantised to bf16 on chip)
WEIGHT_DTYPES = ("bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "uint8")


class InfeasibleError(InfsimError):
    """The chip cannot run the step as asked; ``limit`` names the resource (one of :data:`LIMITS`) and
    ``reason`` is the message without the ``infeasible (limit):`` prefix."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(f"infeasible ({limit}): {message}")
        self.limit = limit
        self.reason = message


def matmul_dtype(weight_dtype: str) -> str:
    """The tensor-engine input dtype of a linear layer with weights of ``weight_dtype``."""
    return "bf16" if weight_dtype in ("int8", "uint8") else weight_dtype


def check_step(wl: Workload, chip: ChipConfig) -> None:
    """:class:`InfeasibleError` (limit ``dtype``, ``psum`` or ``tensor_engine``) naming the first dtype, PSUM
    or tensor-engine reason ``chip`` cannot run ``wl`` (see the module docstring)."""
    if wl.weight_dtype not in WEIGHT_DTYPES:
        raise InfeasibleError(f"--dtype {wl.weight_dtype}: weights of this dtype are not supported "
                              f"(use {', '.join(WEIGHT_DTYPES)})", "dtype")
    rates = chip.tensor_engine.macs_per_pe_per_cycle
    for flag, given, dt in (("--dtype", wl.weight_dtype, matmul_dtype(wl.weight_dtype)),
                            ("--kv-dtype", wl.kv_dtype, wl.kv_dtype)):
        if dt not in rates:
            via = f" (multiplied as {dt})" if dt != given else ""
            raise InfeasibleError(f"{flag} {given}{via}: chip '{chip.name}' has no tensor_engine."
                                  f"macs_per_pe_per_cycle rate for {dt} (it has {', '.join(sorted(rates))})", "dtype")
    if chip.psum.banks < 2:
        raise InfeasibleError(f"psum.banks {chip.psum.banks}: chip '{chip.name}' needs at least 2 PSUM banks "
                              "(the lowering alternates matmul outputs between banks)", "psum")
    n_max, parts = chip.tensor_engine.moving_free_max, chip.sbuf.partitions
    if n_max < parts:
        raise InfeasibleError(f"tensor_engine.moving_free_max {n_max}: chip '{chip.name}' needs at least "
                              f"sbuf.partitions ({parts}) (the lowering transposes {parts} x {parts} tiles in one "
                              "matmul each; missing: transposes split along the moving free size)", "tensor_engine")


def check_instance(physical_cores: int, chip: ChipConfig) -> None:
    """:class:`InfeasibleError` (limit ``instance``) when ``physical_cores`` need more chips than the chip's
    instance has (``instance.chips``); the message counts ranks as ``--tp`` does (logical cores)."""
    need = -(-physical_cores // chip.cores_per_chip)  # integer ceil: any --tp, however large, stays exact
    if need > chip.instance.chips:
        lnc = f" (LNC={chip.lnc}: {physical_cores} physical cores)" if chip.lnc > 1 else ""
        raise InfeasibleError(f"--tp {physical_cores // chip.lnc} needs {need} chips of '{chip.name}'{lnc} but its "
                              f"instance '{chip.instance.name}' has {chip.instance.chips} (instance.chips)", "instance")


def check_hbm(per_chip_bytes: dict[int, int], chip: ChipConfig, model: str, tp: int,
              by_kind: dict[str, int] | None = None) -> None:
    """:class:`InfeasibleError` (limit ``hbm``) when a chip's tensors exceed ``hbm.capacity_gib``. ``tp``: the
    physical cores the step runs on (the message counts ``--tp`` in logical cores, ``tp / lnc``). ``by_kind``:
    one rank's bytes per kind (weights, kv_cache, activations), for the message."""
    cap = chip.hbm_bytes
    c, need = max(per_chip_bytes.items(), key=lambda kv: kv[1])
    if need <= cap:
        return
    gib = 2**30
    ranks_here = sum(1 for r in range(tp) if r // chip.cores_per_chip == c)
    parts = ""
    if by_kind:
        parts = " (" + ", ".join(f"{k.replace('_', ' ')} {v * ranks_here / gib:.4g} GiB"
                                 for k, v in by_kind.items()) + ")"
    # a rank's tensors shrink about linearly with the ranks; a full chip holds cores_per_chip of them
    cores = math.ceil(chip.cores_per_chip * (need / ranks_here) * tp / cap)
    most = chip.cores_per_chip * chip.instance.chips
    lnc = chip.lnc
    tp_hint = (f"a larger --tp (about {math.ceil(cores / lnc)} or more)" if cores <= most else "a larger --tp")
    raise InfeasibleError(
        f"model '{model}' with tp {tp // lnc}: chip {c} needs {need / gib:.4g} GiB of HBM{parts}, '{chip.name}' has "
        f"{cap / gib:.4g} GiB (hbm.capacity_gib); use {tp_hint}, a smaller batch or context, or a chip with "
        "more HBM", "hbm")
