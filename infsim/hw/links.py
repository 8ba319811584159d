"""Chip-to-chip and core-to-core links: the topology graph, routing, and where each core sits.

What is modelled
----------------
* **Chips** ``0 .. instance.chips-1`` joined by directed links built from :class:`~infsim.config.schema.LinkConfig`:

  - ``ring``: chip ``i`` links to ``i+1`` and ``i-1`` (mod n). ``links_per_chip // 2`` physical links go to
    each neighbour and are aggregated into one directed link per direction (bandwidth ``multiplicity *
    link_gbps``). With two chips both neighbours coincide, so the two bundles merge (double bandwidth).
  - ``torus2d``: ``torus_dims = (X, Y)`` (inferred near-square when absent), chip ``id = y * X + x``;
    ``links_per_chip // 4`` links to each of the four neighbours ``(x +- 1, y)``, ``(x, y +- 1)`` with
    wrap-around. A dimension of size 2 merges its two neighbour bundles; a dimension of size 1 has none.
  - ``switch``: every chip has one uplink bundle to a single non-blocking switch and one downlink bundle back,
    each of ``links_per_chip`` links; a chip-to-chip path is two hops (up, down).
  - ``none``: no chip-to-chip links (a single-chip system); a route between chips is an error.

* **Cores**: global core ``c`` lives on chip ``c // cores_per_chip`` as local core ``c % cores_per_chip``
  (packed placement, as Neuron numbers NeuronCores). Each core has one *egress* link of ``intra_chip_gbps``
  / ``intra_chip_latency_ns``: its collective DMA writing out of the core. A transfer between two cores of
  one chip uses only that link; one to another chip leaves through it and then takes the NeuronLinks, so a
  core's collective traffic to all destinations shares its egress rate.

* **Routing** is deterministic and minimal: ring takes the shorter way round (ties go to ``+1``); torus is
  dimension-ordered, X then Y, shorter way in each dimension (ties go to ``+``); switch goes up then down.
  A path's bandwidth is its slowest link; its latency is the sum of the per-hop ``latency_ns``.

Left out: the receiving side's on-chip hop, adaptive or multi-path routing, link-level flow control and
packet headers, a shared on-chip fabric (each core's egress is its own resource), and switch-internal
contention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from infsim.config.schema import ChipConfig, LinkConfig
from infsim.errors import ConfigError, InfsimError

LinkKind = Literal["chip", "intra"]


@dataclass(frozen=True)
class Link:
    """One directed link (or bundle of parallel physical links) with its bandwidth and per-hop latency."""

    index: int
    name: str
    kind: LinkKind  # "chip": NeuronLink (chip-to-chip or through a switch); "intra": a core's on-chip egress
    gbps: float  # bytes per ns, one direction, all ``multiplicity`` physical links together
    latency_ns: float
    multiplicity: int


@dataclass(frozen=True)
class Path:
    """A route between two cores: the links it occupies, its bottleneck bandwidth and total latency."""

    links: tuple[int, ...]
    gbps: float
    latency_ns: float

    @property
    def hops(self) -> int:
        return len(self.links)


def _near_square(n: int) -> tuple[int, int]:
    x = int(math.isqrt(n))
    while n % x:
        x -= 1
    return (n // x, x)


class Topology:
    """Links of one system (``num_chips`` chips of one kind) and routing between its cores.

    ``Topology.from_chip(chip)`` builds the instance's topology (``chip.instance.chips`` chips). Link
    indices are stable: inter-chip links first (in construction order), then one egress link per core.
    """

    def __init__(self, cfg: LinkConfig, num_chips: int, cores_per_chip: int) -> None:
        if num_chips < 1 or cores_per_chip < 1:
            raise ConfigError("topology needs at least one chip and one core per chip")
        self.cfg = cfg
        self.num_chips = num_chips
        self.cores_per_chip = cores_per_chip
        self.num_cores = num_chips * cores_per_chip
        self.links: list[Link] = []
        self._edge: dict[tuple[str, str], int] = {}
        self.dims: tuple[int, int] | None = None
        topo = cfg.topology
        if topo == "ring":
            self._build_ring()
        elif topo == "torus2d":
            self._build_torus()
        elif topo == "switch":
            self._build_switch()
        self._egress: list[int] = []
        for core in range(self.num_cores):
            chip, local = divmod(core, cores_per_chip)
            self._egress.append(
                self._add(f"c{chip}.{local}", "intra", "intra", cfg.intra_chip_gbps, cfg.intra_chip_latency_ns, 1)
            )
        self._routes: dict[tuple[int, int], tuple[int, ...]] = {}
        self._paths: dict[tuple[int, int], Path] = {}

    @classmethod
    def from_chip(cls, chip: ChipConfig, num_chips: int | None = None) -> Topology:
        return cls(chip.links, chip.instance.chips if num_chips is None else num_chips, chip.cores_per_chip)

    # ---- construction -------------------------------------------------------------------------
    def _add(self, src: str, dst: str, kind: LinkKind, gbps: float, lat: float, mult: int) -> int:
        key = (src, dst)
        if key in self._edge:  # parallel bundle to the same neighbour: merge
            old = self.links[self._edge[key]]
            m = old.multiplicity + mult
            self.links[old.index] = Link(old.index, old.name, kind, gbps * m, lat, m)
            return old.index
        idx = len(self.links)
        self.links.append(Link(idx, f"{src}->{dst}", kind, gbps * mult, lat, mult))
        self._edge[key] = idx
        return idx

    def _chip_link(self, a: int, b: int, per_neighbour: int) -> None:
        c = self.cfg
        self._add(f"chip{a}", f"chip{b}", "chip", c.link_gbps, c.latency_ns, per_neighbour)

    def _need_links(self, per: int, what: str) -> None:
        if self.num_chips > 1 and (per < 1 or self.cfg.link_gbps <= 0):
            raise ConfigError(f"links: topology {self.cfg.topology} needs {what} and link_gbps > 0 "
                              f"(links_per_chip={self.cfg.links_per_chip}, link_gbps={self.cfg.link_gbps})")

    def _build_ring(self) -> None:
        n = self.num_chips
        per = self.cfg.links_per_chip // 2
        self._need_links(per, "links_per_chip >= 2")
        if n == 1:
            return
        for i in range(n):
            self._chip_link(i, (i + 1) % n, per)
            self._chip_link(i, (i - 1) % n, per)

    def _build_torus(self) -> None:
        dims = self.cfg.torus_dims or _near_square(self.num_chips)
        X, Y = dims
        if X * Y != self.num_chips or X < 1 or Y < 1:
            raise ConfigError(f"links.torus_dims: {X}x{Y} does not match instance.chips = {self.num_chips}")
        self.dims = (X, Y)
        per = self.cfg.links_per_chip // 4
        self._need_links(per, "links_per_chip >= 4")
        for y in range(Y):
            for x in range(X):
                a = y * X + x
                if X > 1:
                    self._chip_link(a, y * X + (x + 1) % X, per)
                    self._chip_link(a, y * X + (x - 1) % X, per)
                if Y > 1:
                    self._chip_link(a, ((y + 1) % Y) * X + x, per)
                    self._chip_link(a, ((y - 1) % Y) * X + x, per)

    def _build_switch(self) -> None:
        per = self.cfg.links_per_chip
        self._need_links(per, "links_per_chip >= 1")
        if self.num_chips == 1:
            return
        c = self.cfg
        for i in range(self.num_chips):
            self._add(f"chip{i}", "switch", "chip", c.link_gbps, c.latency_ns, per)
            self._add("switch", f"chip{i}", "chip", c.link_gbps, c.latency_ns, per)

    # ---- placement ------------------------------------------------------------------------------
    def chip_of(self, core: int) -> int:
        self._check_core(core)
        return core // self.cores_per_chip

    def local_core(self, core: int) -> int:
        self._check_core(core)
        return core % self.cores_per_chip

    def _check_core(self, core: int) -> None:
        if not 0 <= core < self.num_cores:
            raise InfsimError(f"core {core} out of range: the system has {self.num_cores} cores "
                              f"({self.num_chips} chips x {self.cores_per_chip})")

    def coords(self, chip: int) -> tuple[int, int]:
        """Torus coordinates ``(x, y)`` of a chip (``(chip, 0)`` for other topologies)."""
        if self.dims is None:
            return (chip, 0)
        return (chip % self.dims[0], chip // self.dims[0])

    def ring_position(self, chip: int) -> int:
        """Position of a chip along the ring the collectives use: chip order for ring and switch; for the
        torus a snake (boustrophedon) order, so consecutive chips are neighbours (and, with an even number of
        rows, the last row wraps back to the first in one hop)."""
        if self.dims is None:
            return chip
        X, _ = self.dims
        x, y = self.coords(chip)
        return y * X + (x if y % 2 == 0 else X - 1 - x)

    def ring_order(self, cores: Sequence[int]) -> list[int]:
        """``cores`` sorted into ring order: by chip ring position, then local core."""
        for c in cores:
            self._check_core(c)
        if len(set(cores)) != len(cores):
            raise InfsimError(f"collective group has repeated cores: {list(cores)}")
        return sorted(cores, key=lambda c: (self.ring_position(c // self.cores_per_chip), c % self.cores_per_chip))

    # ---- routing --------------------------------------------------------------------------------
    def _link(self, src: str, dst: str) -> int:
        return self._edge[(src, dst)]

    @staticmethod
    def _ring_steps(a: int, b: int, n: int) -> list[int]:
        """Positions visited from ``a`` to ``b`` on a ring of ``n``, shorter way (ties: +1)."""
        fwd = (b - a) % n
        step = 1 if fwd <= n - fwd else -1
        out, cur = [], a
        while cur != b:
            cur = (cur + step) % n
            out.append(cur)
        return out

    def chip_route(self, src: int, dst: int) -> tuple[int, ...]:
        """Directed link indices from chip ``src`` to chip ``dst`` (empty when equal)."""
        key = (src, dst)
        if key in self._routes:
            return self._routes[key]
        if src == dst:
            route: tuple[int, ...] = ()
        elif self.cfg.topology == "none" or self.num_chips == 1:
            raise ConfigError(f"links.topology is '{self.cfg.topology}': no route from chip {src} to chip {dst}")
        elif self.cfg.topology == "switch":
            route = (self._link(f"chip{src}", "switch"), self._link("switch", f"chip{dst}"))
        elif self.cfg.topology == "ring":
            hops, cur = [], src
            for nxt in self._ring_steps(src, dst, self.num_chips):
                hops.append(self._link(f"chip{cur}", f"chip{nxt}"))
                cur = nxt
            route = tuple(hops)
        else:  # torus2d, dimension order X then Y
            assert self.dims is not None
            X, Y = self.dims
            (sx, sy), (dx, dy) = self.coords(src), self.coords(dst)
            hops, cur = [], src
            for nx in self._ring_steps(sx, dx, X):
                nxt = sy * X + nx
                hops.append(self._link(f"chip{cur}", f"chip{nxt}"))
                cur = nxt
            for ny in self._ring_steps(sy, dy, Y):
                nxt = ny * X + dx
                hops.append(self._link(f"chip{cur}", f"chip{nxt}"))
                cur = nxt
            route = tuple(hops)
        self._routes[key] = route
        return route

    def core_path(self, src: int, dst: int) -> Path:
        """Route from core ``src`` to core ``dst``: the source core's egress, then (other chip) the NeuronLink
        route between their chips."""
        hit = self._paths.get((src, dst))
        if hit is not None:
            return hit
        cs, cd = self.chip_of(src), self.chip_of(dst)
        if src == dst:
            return Path((), math.inf, 0.0)
        links = (self._egress[src],) + (self.chip_route(cs, cd) if cs != cd else ())
        ls = [self.links[i] for i in links]
        path = Path(links, min(link.gbps for link in ls), sum(link.latency_ns for link in ls))
        self._paths[(src, dst)] = path
        return path

    def chip_links(self) -> list[Link]:
        return [link for link in self.links if link.kind == "chip"]

    def chip_egress_gbps(self) -> float:
        """Total NeuronLink bandwidth out of one chip (all its links, one direction)."""
        return self.cfg.links_per_chip * self.cfg.link_gbps
