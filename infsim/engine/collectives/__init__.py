"""Collective timing used by the engine and both analytical fidelities: the interface and the registry of the
models behind it.

Interface
---------
:class:`CollectiveTiming` has one call, ``duration_ps(op, members, src_bytes, dst_bytes, cores_per_chip)
-> (duration_ps, link_bytes)``: the time from the moment the last member arrives (every member's
instruction has its waits satisfied and its stream is free) until every member has its result, and the
bytes each member sends over chip-to-chip links (for link energy). It is a function of its arguments
(no time, no state of a run): the numba engine asks for every collective's duration before the run
(:meth:`infsim.engine.rendezvous.CollectivePlan.durations`), the reference engine when the last member
arrives, and both get the same. ``op`` is the instruction's
:class:`~infsim.isa.opcodes.Op` (``all_reduce``, ``all_gather``, ``reduce_scatter``, ``send``, ``recv``);
``members`` the global core ids of the group (for send/recv: ``(sender, receiver)``). The engine runs the
rendezvous itself (:mod:`infsim.engine.rendezvous`), so collectives overlap compute on other engines;
the program-level analytical fidelity treats it as a barrier of the group followed by the same duration.

Registry
--------
:data:`COLLECTIVE_MODELS` maps a name to a factory ``chip -> CollectiveTiming``:

* ``link`` -- :class:`~.link.LinkCollectives`: the topology-aware link model of :mod:`infsim.hw.collectives`
  (ring / torus / switch routing, per-step latencies and overheads from the chip's ``links`` config),
  contention-free per call.

A chip names its model in ``links.collective_model`` (default ``link``); :func:`make_collectives` is the
one place every fidelity gets it from. A new model is a class with this interface, added with
:func:`register_collectives`; a chip YAML can then name it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from infsim.config.schema import ChipConfig
from infsim.errors import ConfigError, InfsimError
from infsim.isa.opcodes import Op

from .link import LinkCollectives


class CollectiveTiming(Protocol):
    """What the engine needs from a collective model (see the module docstring)."""

    def duration_ps(self, op: Op, members: tuple[int, ...], src_bytes: int, dst_bytes: int,
                    cores_per_chip: int) -> tuple[int, int]: ...


COLLECTIVE_MODELS: dict[str, Callable[[ChipConfig], CollectiveTiming]] = {"link": LinkCollectives}


def register_collectives(name: str, factory: Callable[[ChipConfig], CollectiveTiming]) -> None:
    """Register a collective model under ``name`` (a chip's ``links.collective_model`` may then name it)."""
    if name in COLLECTIVE_MODELS:
        raise InfsimError(f"collective model '{name}' is already registered")
    COLLECTIVE_MODELS[name] = factory


def collective_model_name(chip: ChipConfig) -> str:
    """The chip's ``links.collective_model``; an unregistered name is an error listing the registered ones."""
    name = chip.links.collective_model
    if name not in COLLECTIVE_MODELS:
        raise ConfigError(f"chip '{chip.name}': links.collective_model: unknown collective model '{name}' "
                          f"(registered: {', '.join(sorted(COLLECTIVE_MODELS))})")
    return name


def make_collectives(chip: ChipConfig) -> CollectiveTiming:
    """A new instance of the collective model of ``chip``."""
    return COLLECTIVE_MODELS[collective_model_name(chip)](chip)


__all__ = ["COLLECTIVE_MODELS", "CollectiveTiming", "collective_model_name", "make_collectives",
           "register_collectives"]
