"""Energy from event counts (Accelergy-style: action counts x per-action energy from the chip config).

What is modelled (unit energies in :class:`~infsim.config.schema.EnergyConfig`, derivations in
docs/references.md, [EF8]):

* ``mac``: MACs of matmul/transpose instructions x ``mac_pj[dtype]`` (dtype of the matmul inputs);
* ``sbuf`` / ``psum``: bytes of every SBUF / PSUM operand an instruction reads or writes (engines and
  the on-chip side of DMAs) x ``sbuf_pj_per_byte`` / ``psum_pj_per_byte`` (a matmul's PSUM output is
  one read-modify-write per byte);
* ``hbm``: bits read from and written to HBM x ``hbm_pj_per_bit`` (device + controller/PHY/NoC);
* ``link``: bits sent over chip-to-chip links by collectives x ``link_pj_per_bit``;
* ``vector``: element-ops of vector and GpSimd instructions (elements x inputs) x ``vector_op_pj``;
* ``scalar``: elements through the activation engine x ``scalar_op_pj``;
* ``static``: the chip's static power (``static_w`` + cores x ``static_w_per_core``) x simulated time x chips
  used.

Reported: joules per component, total, average watts, and dynamic joules per instruction class
(opcode). Left out: clock-gating detail (idle engines cost only static power), link idle power,
instruction fetch, and DVFS.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from infsim.config.schema import EnergyConfig, by_dtype
from infsim.isa.dtypes import DType
from infsim.isa.opcodes import Op

COMPONENTS = ("mac", "sbuf", "psum", "hbm", "link", "vector", "scalar", "static")


@dataclass
class EnergyReport:
    """Joules per component (``COMPONENTS``), per opcode (dynamic only), total and average power."""

    by_component: dict[str, float]
    by_class: dict[str, float]
    total_j: float
    power_w: float


def mac_pj_table(cfg: EnergyConfig) -> np.ndarray:
    """pJ per MAC indexed by DType code (0 where the config has no entry)."""
    return np.array([by_dtype(cfg.mac_pj, DType(d).name, 0.0) for d in range(len(DType))])


def per_instruction_pj(cfg: EnergyConfig, macs: np.ndarray, mac_dtype: np.ndarray, sbuf_bytes: np.ndarray,
                       psum_bytes: np.ndarray, hbm_bytes: np.ndarray, vector_ops: np.ndarray,
                       scalar_ops: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Dynamic energy (pJ) of every instruction per component (vectorised): ``(component, per-instruction pJ)``,
    one component at a time (so a caller summing them holds one array of the program's length, not six)."""
    table = mac_pj_table(cfg)
    yield "mac", np.where(mac_dtype >= 0, macs * table[np.maximum(mac_dtype, 0)], 0.0)
    yield "sbuf", sbuf_bytes * cfg.sbuf_pj_per_byte
    yield "psum", psum_bytes * cfg.psum_pj_per_byte
    yield "hbm", hbm_bytes * 8.0 * cfg.hbm_pj_per_bit
    yield "vector", vector_ops * cfg.vector_op_pj
    yield "scalar", scalar_ops * cfg.scalar_op_pj


def energy_report(cfg: EnergyConfig, ops: np.ndarray, per_instr_pj: Iterable[tuple[str, np.ndarray]],
                  link_bytes: float, time_ps: int, chips: int, static_w: float | None = None) -> EnergyReport:
    """Sum the per-instruction energies (``(component, pJ per instruction)`` pairs, :func:`per_instruction_pj`),
    add link and static energy, and group by opcode. ``static_w``: one chip's static power
    (:attr:`~infsim.config.schema.ChipConfig.static_power_w`; default ``cfg.static_w``)."""
    comp: dict[str, float] = {}
    total_instr = None  # the components summed per instruction, in their order
    for k, v in per_instr_pj:
        comp[k] = float(v.sum()) * 1e-12
        if total_instr is None:
            total_instr = np.array(v, dtype=np.float64)
        else:
            total_instr += v
        del v
    if total_instr is None:
        total_instr = np.zeros(len(ops))
    comp["link"] = link_bytes * 8.0 * cfg.link_pj_per_bit * 1e-12
    comp["static"] = (cfg.static_w if static_w is None else static_w) * time_ps * 1e-12 * chips
    by_component = {k: comp.get(k, 0.0) for k in COMPONENTS}
    by_class: dict[str, float] = {}
    if len(ops):
        sums = np.bincount(ops, weights=total_instr, minlength=len(Op))
        for o in Op:
            if sums[int(o)] > 0:
                by_class[o.name] = float(sums[int(o)]) * 1e-12
    if comp["link"] > 0:
        by_class["collective_links"] = comp["link"]
    total = sum(by_component.values())
    power = total / (time_ps * 1e-12) if time_ps > 0 else 0.0
    return EnergyReport(by_component, by_class, total, power)
