"""Topology and routing (infsim.hw.links): ring / 2D torus / switch graphs built from chip configs, core
placement, intra-chip paths, deterministic minimal routes."""

from __future__ import annotations

import itertools

import pytest

from infsim.config import ChipConfig, load_chip
from infsim.errors import ConfigError, InfsimError
from infsim.hw.links import Topology


def _torus_distance(a: tuple[int, int], b: tuple[int, int], dims: tuple[int, int]) -> int:
    return sum(min((q - p) % n, (p - q) % n) for p, q, n in zip(a, b, dims))


def test_inf2_ring_links_and_placement(inf2: ChipConfig) -> None:
    chip = inf2
    t = Topology.from_chip(chip)
    assert (t.num_chips, t.cores_per_chip, t.num_cores) == (12, 2, 24)
    links = t.chip_links()
    assert len(links) == 24  # 12 chips x 2 directions
    assert all(lk.gbps == chip.links.link_gbps and lk.multiplicity == 1 for lk in links)
    assert all(lk.latency_ns == chip.links.latency_ns for lk in links)
    assert (t.chip_of(23), t.local_core(23)) == (11, 1)
    assert (t.chip_of(4), t.local_core(4)) == (2, 0)


def test_ring_routes_are_minimal_and_tie_goes_forward(inf2: ChipConfig) -> None:
    t = Topology.from_chip(inf2)
    n = t.num_chips
    for a, b in itertools.permutations(range(n), 2):
        route = t.chip_route(a, b)
        assert len(route) == min((b - a) % n, (a - b) % n)
        # the route is a connected walk from a to b
        names = [t.links[i].name for i in route]
        assert names[0].startswith(f"chip{a}->") and names[-1].endswith(f"->chip{b}")
    assert [t.links[i].name for i in t.chip_route(0, 6)][0] == "chip0->chip1"  # tie: +1
    assert [t.links[i].name for i in t.chip_route(0, 11)] == ["chip0->chip11"]
    assert t.chip_route(3, 3) == ()


def test_intra_chip_path_uses_no_neuronlink(inf2: ChipConfig) -> None:
    chip = inf2
    t = Topology.from_chip(chip)
    p = t.core_path(0, 1)
    assert p.hops == 1 and t.links[p.links[0]].kind == "intra"
    assert p.gbps == chip.links.intra_chip_gbps and p.latency_ns == chip.links.intra_chip_latency_ns
    q = t.core_path(1, 2)  # chip 0 -> chip 1: out of core 1, then one NeuronLink
    assert q.hops == 2 and [t.links[i].kind for i in q.links] == ["intra", "chip"]
    assert q.links[0] == p.links[0] + 1  # core 1's egress
    assert q.gbps == min(chip.links.link_gbps, chip.links.intra_chip_gbps)
    r = t.core_path(0, 23)  # chip 0 -> chip 11, one hop backwards
    assert r.hops == 2 and r.latency_ns == chip.links.latency_ns + chip.links.intra_chip_latency_ns


def test_two_chip_ring_merges_parallel_links() -> None:
    chip = load_chip("inf2", ["instance.chips=2"])
    t = Topology.from_chip(chip)
    links = t.chip_links()
    assert len(links) == 2 and all(lk.multiplicity == 2 for lk in links)
    assert all(lk.gbps == 2 * chip.links.link_gbps for lk in links)


@pytest.mark.parametrize("preset", ["trn1", "trn2"])
def test_torus_4x4_routing(preset: str) -> None:
    chip = load_chip(preset)
    t = Topology.from_chip(chip)
    assert t.dims == (4, 4) and t.num_chips == 16
    assert len(t.chip_links()) == 16 * 4
    out_deg = {c: 0 for c in range(16)}
    for lk in t.chip_links():
        out_deg[int(lk.name.split("->")[0][4:])] += 1
    assert set(out_deg.values()) == {4}
    for a, b in itertools.permutations(range(16), 2):
        route = t.chip_route(a, b)
        assert len(route) == _torus_distance(t.coords(a), t.coords(b), (4, 4))
        # dimension order: all X hops (same row) come before Y hops
        rows = [int(t.links[i].name.split("->")[1][4:]) // 4 for i in route]
        sy = t.coords(a)[1]
        x_hops = [r for r in rows if r == sy]
        assert rows[: len(x_hops)] == x_hops
    # (0,0) -> (2,3): x +2 (tie goes +), y -1 through the wrap
    assert [t.links[i].name for i in t.chip_route(0, 14)] == ["chip0->chip1", "chip1->chip2", "chip2->chip14"]


def test_torus_snake_ring_is_all_neighbours() -> None:
    t = Topology.from_chip(load_chip("trn2"))
    order = t.ring_order(range(0, t.num_cores, t.cores_per_chip))  # one core per chip
    chips = [t.chip_of(c) for c in order]
    assert sorted(chips) == list(range(16))
    for a, b in zip(chips, chips[1:] + chips[:1]):
        assert len(t.chip_route(a, b)) == 1


def test_trn2_cores() -> None:
    t = Topology.from_chip(load_chip("trn2"))
    assert t.cores_per_chip == 8 and t.num_cores == 128
    assert (t.chip_of(127), t.local_core(127)) == (15, 7)
    assert t.links[t.core_path(8, 15).links[0]].kind == "intra"


def test_torus_dims_inferred_and_checked() -> None:
    base = ["links.topology=torus2d", "links.links_per_chip=4", "links.torus_dims=null"]
    t = Topology.from_chip(load_chip("inf2", [*base, "instance.chips=8"]))
    assert t.dims == (4, 2)
    lk = t.chip_links()  # Y of size 2: the two y neighbours coincide and merge
    assert {x.multiplicity for x in lk} == {1, 2}
    with pytest.raises(ConfigError, match="torus_dims"):
        Topology.from_chip(load_chip("inf2", [*base[:2], "links.torus_dims=[3,3]", "instance.chips=8"]))
    with pytest.raises(ConfigError, match="links_per_chip"):
        Topology.from_chip(load_chip("inf2", ["links.topology=torus2d", "instance.chips=4"]))


def test_switch_paths() -> None:
    chip = load_chip("trn3")
    t = Topology.from_chip(chip)
    p = t.core_path(0, 8 * 5)
    assert p.hops == 3  # core 0's egress, up, down
    assert p.gbps == min(chip.links.links_per_chip * chip.links.link_gbps, chip.links.intra_chip_gbps)
    assert p.latency_ns == 2 * chip.links.latency_ns + chip.links.intra_chip_latency_ns
    assert t.chip_egress_gbps() == chip.links.links_per_chip * chip.links.link_gbps


def test_none_topology_and_bad_cores() -> None:
    t = Topology.from_chip(load_chip("inf2", ["links.topology=none"]))
    assert t.core_path(0, 1).hops == 1  # on-chip still works
    with pytest.raises(ConfigError, match="none"):
        t.core_path(0, 2)
    with pytest.raises(InfsimError, match="out of range"):
        t.chip_of(24)
    with pytest.raises(InfsimError, match="repeated"):
        t.ring_order([1, 1])


def test_ring_order_is_deterministic(inf2: ChipConfig) -> None:
    t = Topology.from_chip(inf2)
    assert t.ring_order([5, 0, 23, 1, 4]) == [0, 1, 4, 5, 23]
