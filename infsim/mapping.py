"""Logical NeuronCores: how a run's tensor-parallel degree maps onto physical cores.

Trn2 and Trn3 are served with logical NeuronCores ([RT-LNC] in ``docs/references.md``): ``lnc`` physical
cores (the chip's ``lnc`` field, 1 or 2) act as one rank, and the tensor-parallel degree counts those
logical cores ([NXDI-FEAT]: TP up to 64 on trn2.48xlarge, i.e. all 128 physical cores). Each physical core
keeps its own engines, SBUF/PSUM and DMA engines; the pair shares one HBM bank, and the compiler splits
every op of the rank's graph over the two cores, which exchange partial results through the shared HBM
under a semaphore barrier.

The mapping: a step of tensor-parallel degree ``tp`` is lowered and costed at ``tp * lnc`` physical ranks
(:func:`physical_workload`), packed so that logical core ``l`` is physical cores ``l * lnc`` to
``l * lnc + lnc - 1`` (one chip, since ``cores_per_chip`` is a multiple of ``lnc``). Every physical core
therefore runs its own engines and DMA queues on its share of the work, and the collectives of the
step group the physical cores back into logical ranks: the cores of one logical core reduce and exchange
through their shared HBM (a DMA plus its semaphore, ``dma.fixed_latency_ns``), and the runtime's algorithm
runs over the logical ranks (:func:`infsim.hw.collectives.algorithms.lnc_wrap`).

Left out (stated, not modelled): the work split inside a logical core follows infsim's tensor-parallel
split (heads and MLP features over the physical cores; a head is replicated when there are fewer heads
than physical cores), whereas the Neuron kernels split decode attention by batch or sequence when heads
run out and split some matmuls by output features (an exchange instead of a reduction). No published
LNC=2 versus LNC=1 speedup exists to check the net effect against.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from infsim.config.schema import ChipConfig
from infsim.feasibility import check_instance

if TYPE_CHECKING:
    from infsim.models.graph import Workload


def physical_cores(tp: int, chip: ChipConfig) -> int:
    """Physical cores a step of ``tp`` logical ranks occupies."""
    return tp * chip.lnc


def chips_for(tp: int, chip: ChipConfig) -> int:
    """Chips a step of ``tp`` logical ranks spans."""
    return -(-physical_cores(tp, chip) // chip.cores_per_chip)  # integer ceil (no float overflow for huge --tp)


def physical_workload(wl: Workload, chip: ChipConfig) -> Workload:
    """The step as lowered and costed: ``wl`` with ``tp`` counted in physical cores.
    :class:`~infsim.feasibility.InfeasibleError` (limit ``instance``) when the chip's instance has too few
    cores."""
    check_instance(physical_cores(wl.tp, chip), chip)
    return replace(wl, tp=physical_cores(wl.tp, chip)) if chip.lnc > 1 else wl
