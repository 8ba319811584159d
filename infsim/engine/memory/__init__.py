"""The memory interface between DMA engines and a chip's HBM, and the registry of the models behind it.

Interface (what a memory model implements)
------------------------------------------
:class:`MemoryModel` has one timing call::

    end_ps = model.transfer(chip, start_ps, nbytes, is_write, addr, max_gbps, eff)

* ``chip``: which chip's HBM (every chip has its own, shared by all DMA engines of all its cores);
* ``start_ps``: the time (integer picoseconds) the DMA engine issues the transfer. **Calls arrive in
  non-decreasing ``start_ps`` order**, and calls with equal ``start_ps`` arrive in a canonical order
  (core, DMA engine), so a stateful model is deterministic;
* ``nbytes`` / ``is_write`` / ``addr``: size, direction and byte address in the chip's HBM;
* ``max_gbps``: the fastest the requesting DMA engine can consume or produce the data (its own
  bandwidth after descriptor overheads); a model may use it to spread the transfer out in time.
* ``eff``: the transfer's access-pattern efficiency, the value :meth:`MemoryModel.access` gave its
  instruction and direction (payload bytes per byte of pin time; 1.0 by default);
* returns the time the last byte has been read (delivered to the engine) or written, HBM latency
  included. It must be ``>= start_ps``. ``latency_ps`` says how much of it is that latency: the engine
  does not hold a DMA engine for it (requests pipeline), only the transfer's completion waits.

Before a run the engine asks :meth:`MemoryModel.access` once for the per-instruction efficiencies
(:class:`~.access.HbmAccess`, from each DMA instruction's HBM access pattern, :mod:`.access`) and passes
each transfer's value to ``transfer``; a compiled engine does the same with the pool kernel
:func:`~.simple.allocate` and the model's ``peak_bpps``, ``kappa`` and ``write_batch`` (the read/write
mixing cost; 0 and 1 for a model without one).

Models also count ``bytes_read`` / ``bytes_written`` per chip and, when ``log`` is on, keep
``(chip, start_ps, end_ps, nbytes, is_write)`` of every transfer for bandwidth counter tracks.
:meth:`MemoryModel.reset` clears state before a run. :meth:`MemoryModel.stream_gbps` is the bandwidth
one long sequential stream gets with the chip's HBM to itself and :meth:`MemoryModel.pattern_efficiency`
the share of pin bandwidth a strided pattern gets: the analytical fidelities (:mod:`infsim.fidelity`) use
them, and ``kappa`` / ``write_batch``, for the transfers they model, so all three fidelities see the same
model.

The numba engine (:mod:`infsim.engine.numba_engine`) is that compiled engine: it times models that are
:class:`~.simple.SimpleMemory`'s pool (the class or a subclass that keeps its ``transfer``, such as ``dram``:
per chip a rate profile of ``peak_bpps`` with ``latency_ps``, each transfer at its :meth:`MemoryModel.access`
efficiency, reads and writes mixed at ``kappa`` / ``write_batch``) with the same step-function code; any
other model runs on the simpy reference engine (``numba_engine.supports``).

Registry
--------
:data:`MEMORY_MODELS` maps a name to a factory ``chip -> MemoryModel``:

* ``simple`` -- :class:`~.simple.SimpleMemory`: per-chip shared bandwidth pool + fixed latency;
* ``dram`` -- :class:`~.dram.DramMemory`: the same pool, each transfer charged at the DRAM-command-level
  model's efficiency for its access pattern, with the read/write mixing cost of write-drain batching.

A chip names its model in ``hbm.memory_model`` (default ``dram``); ``simulate(..., memory=NAME)`` and the
CLI's ``--memory`` override it. A new model is a class with this interface, added with
:func:`register_memory`; a chip YAML can then name it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from infsim.config.schema import ChipConfig
from infsim.errors import ConfigError, InfsimError
from infsim.isa.program import Program

from .access import HbmAccess
from .dram import DramMemory
from .simple import SimpleMemory

if TYPE_CHECKING:
    from infsim.engine.costs import Costs


class MemoryModel(Protocol):
    """What the engine needs from a memory model (see the module docstring)."""

    bytes_read: list[int]
    bytes_written: list[int]
    log: list[tuple[int, int, int, int, bool]] | None
    latency_ps: int  # the part of transfer()'s end that is latency (does not occupy a DMA engine)
    peak_bpps: float  # the pool: the chip's HBM pin bandwidth, bytes per ps
    kappa: float  # read/write mixing cost of the pool (simple.allocate); 0: none
    write_batch: int

    def reset(self, num_chips: int, log: bool = False) -> None: ...

    def access(self, program: Program, costs: Costs) -> HbmAccess: ...

    def transfer(self, chip: int, start_ps: int, nbytes: int, is_write: bool, addr: int,
                 max_gbps: float | None = None, eff: float = 1.0) -> int: ...

    def stream_gbps(self, is_write: bool = False) -> float: ...

    def pattern_efficiency(self, row_bytes: int, stride_bytes: int, is_write: bool = False,
                           offset: int = 0) -> float: ...


MEMORY_MODELS: dict[str, Callable[[ChipConfig], MemoryModel]] = {"simple": SimpleMemory, "dram": DramMemory}


def register_memory(name: str, factory: Callable[[ChipConfig], MemoryModel]) -> None:
    """Register a memory model under ``name`` (a chip's ``hbm.memory_model`` or ``--memory`` may then name it)."""
    if name in MEMORY_MODELS:
        raise InfsimError(f"memory model '{name}' is already registered")
    MEMORY_MODELS[name] = factory


def memory_model_name(chip: ChipConfig, name: str | None = None) -> str:
    """The memory model a run of ``chip`` uses: ``name`` if given, else the chip's ``hbm.memory_model``;
    an unregistered name is an error listing the registered ones."""
    chosen = chip.hbm.memory_model if name is None else name
    if chosen not in MEMORY_MODELS:
        known = ", ".join(sorted(MEMORY_MODELS))
        if name is None:
            raise ConfigError(f"chip '{chip.name}': hbm.memory_model: unknown memory model '{chosen}' "
                              f"(registered: {known})")
        raise InfsimError(f"unknown memory model '{chosen}' (registered: {known})")
    return chosen


def make_memory(chip: ChipConfig, name: str | None = None) -> MemoryModel:
    """A new instance of the memory model of ``chip`` (or of the one registered under ``name``)."""
    return MEMORY_MODELS[memory_model_name(chip, name)](chip)


__all__ = ["MEMORY_MODELS", "HbmAccess", "MemoryModel", "make_memory", "memory_model_name", "register_memory"]
