"""Which collective algorithm runs: the one place that chooses (the engine, both analytical fidelities,
``infsim collective`` and the benchmark all ask here, through :func:`.schedule.build_schedule` with
``algorithm='auto'``).

The rule is the Neuron runtime's as its intra-node collectives page describes it ([RT-INTRA] in
``docs/references.md``; measured on trn2.48xlarge with 64 ranks, "sweet ranges (empirically)"): Mesh below
about 1 MB, RDH (recursive doubling/halving) from 1 to 56 MB, KangaRing above, Ring "fallback only".
The size limits come from the chip's ``links.collective_mesh_max_bytes`` and ``links.collective_rdh_max_bytes``
(the presets cite them for trn2 and say where they are assumed); ``links.collective_algorithm`` other than
``auto`` pins one algorithm for every collective (an infsim option; the runtime documents no such setting).

Applicability, in the order tried for a group of ``p`` ranks (logical cores) on ``q`` chips:

1. one rank: nothing to do (``ring`` by name);
2. size below the mesh limit: ``mesh``;
3. one chip: ``ring`` among its cores (nothing is gained by halving or by a hypercube of one chip);
4. below the RDH limit, the same ranks on every chip and ``q`` a power of two: ``rdh``;
5. every logical core of each chip in the group, in pairs (an even number per chip): ``kangaring``
   (the runtime uses it for groups holding all ranks of a chip, Ring for one rank per chip);
6. otherwise ``ring``.

What is assumed: the runtime publishes the size ranges for one instance and rank count only, and nothing
for inf2 or trn1; the same limits are used for every rank count and chip. The choice is reported with each
collective (:class:`.standalone.CollectiveResult`, ``infsim run --json``'s ``collectives``).
"""

from __future__ import annotations

from dataclasses import dataclass

from infsim.config.schema import LinkConfig


@dataclass(frozen=True)
class GroupShape:
    """A collective group as the choice sees it: ``p`` ranks (logical cores) on ``q`` chips, ``per_chip``
    ranks on each (None when uneven), ``full_chips`` when it holds every logical core of its chips."""

    p: int
    q: int
    per_chip: int | None
    full_chips: bool


def choose_algorithm(op: str, nbytes: float, shape: GroupShape, links: LinkConfig) -> str:
    """The algorithm for ``op`` of ``nbytes`` over a group of ``shape`` (see the module docstring)."""
    if links.collective_algorithm != "auto":
        return links.collective_algorithm
    if op == "send_recv":
        return "direct"
    if shape.p <= 1:
        return "ring"
    if nbytes < links.collective_mesh_max_bytes:
        return "mesh"
    if shape.q == 1:
        return "ring"
    pow2 = shape.q & (shape.q - 1) == 0
    if nbytes < links.collective_rdh_max_bytes and shape.per_chip is not None and pow2:
        return "rdh"
    if shape.full_chips and shape.per_chip is not None and shape.per_chip % 2 == 0:
        return "kangaring"
    return "ring"
