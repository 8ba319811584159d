"""Cost of one vector / scalar (activation) / GpSimd instruction.

What is modelled (NeuronCore-v2 rules of [NKI-ARCH2], docs/references.md; every number from the chip
config's :class:`~infsim.config.schema.ElementwiseEngineConfig`):

* one lane per partition, ``lanes`` lanes: ``passes = ceil(partitions / lanes)`` (fewer partitions cost
  the same time as a full pass);
* per pass ``free_elements / elems_per_cycle_per_lane`` cycles, multiplied by

  - the input factor: ``1`` for one full-size input tensor (or none: memset, iota), ``two_input_factor``
    for two, and ``1 + (inputs - 1) * (two_input_factor - 1)`` beyond (select reads three tensors);
  - the function cost (``func_cost[name]``, 1.0 when absent: activation functions, ALU ops);
  - ``strided_penalty`` when an operand's innermost stride exceeds ``strided_threshold_bytes`` (16 on
    NeuronCore-v2: half-bandwidth access);

* plus ``fixed_overhead_cycles`` per instruction (access initiation, issue) and ``reduce_extra_cycles``
  when the instruction also reduces along the free axis into a separate result (activation with
  ``reduce_dst``; ActReadAccumulator on ScalarE).

The compute part is rounded up to whole engine cycles. Busy time equals latency (the engines are not
modelled as pipelined across instructions: the ~60-100 cycle static overhead is paid every time).

Left out: perf modes (2x/4x for bf16 on NC-v3+), SBUF-port conflicts between VectorE and GpSimdE,
PSUM-bank conflicts, and data-dependent costs.

:func:`elementwise_cycles` is the vectorised model; :func:`elementwise_cycles_reference` is a slow,
element-by-element exact-rational reference it is tested against.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from infsim.config.schema import ElementwiseEngineConfig

_EPS = 1e-9


def input_factor(cfg: ElementwiseEngineConfig, n_inputs: np.ndarray | int) -> np.ndarray:
    """Throughput divisor for an instruction reading ``n_inputs`` full-size tensors."""
    n = np.maximum(np.asarray(n_inputs, dtype=np.float64), 1.0)
    return 1.0 + (n - 1.0) * (cfg.two_input_factor - 1.0)


def elementwise_cycles(cfg: ElementwiseEngineConfig, partitions: np.ndarray | int, free_elems: np.ndarray | int,
                       n_inputs: np.ndarray | int, func_cost: np.ndarray | float = 1.0,
                       strided: np.ndarray | bool = False, reduce: np.ndarray | bool = False) -> np.ndarray:
    """Engine cycles of elementwise instructions (vectorised over all array arguments; int64)."""
    p = np.asarray(partitions, dtype=np.int64)
    f = np.asarray(free_elems, dtype=np.float64)
    passes = (p + cfg.lanes - 1) // cfg.lanes
    pen = np.where(np.asarray(strided, dtype=bool), cfg.strided_penalty, 1.0)
    work = passes * f * input_factor(cfg, n_inputs) * np.asarray(func_cost, dtype=np.float64) * pen
    compute = np.ceil(work / cfg.elems_per_cycle_per_lane - _EPS).astype(np.int64)
    extra = np.where(np.asarray(reduce, dtype=bool), cfg.reduce_extra_cycles, 0)
    return (cfg.fixed_overhead_cycles + np.maximum(compute, 0) + extra).astype(np.int64)


def elementwise_cycles_reference(cfg: ElementwiseEngineConfig, partitions: int, free_elems: int, n_inputs: int,
                                 func_cost: float = 1.0, strided: bool = False, reduce: bool = False) -> int:
    """Slow reference: stream every element of every partition through its lane, in exact arithmetic.

    Each lane handles the partitions ``lane, lane + lanes, ...`` one after another; each element costs
    ``factor / elems_per_cycle_per_lane`` cycles; the instruction lasts as long as its busiest lane.
    """
    per_elem = Fraction(1)
    n = max(n_inputs, 1)
    per_elem *= 1 + (n - 1) * (Fraction(cfg.two_input_factor) - 1)
    per_elem *= Fraction(func_cost)
    if strided:
        per_elem *= Fraction(cfg.strided_penalty)
    per_elem /= Fraction(cfg.elems_per_cycle_per_lane)
    lane_time = [Fraction(0)] * cfg.lanes
    for part in range(partitions):
        lane = part % cfg.lanes
        for _ in range(free_elems):
            lane_time[lane] += per_elem
    busiest = max(lane_time)
    compute = -(-busiest.numerator // busiest.denominator)  # ceil
    return cfg.fixed_overhead_cycles + compute + (cfg.reduce_extra_cycles if reduce else 0)
