"""The runtime's collective algorithms (mesh, RDH, KangaRing) and the one place that chooses among them
(infsim.hw.collectives.choice), logical NeuronCores in collectives, and the choice reported by the engine
adapter and the CLI.

Reference for the schedules: conservation of data. Whatever the algorithm, after an all-reduce or a
reduce-scatter every rank has absorbed (reduced) the other ranks' contributions to its part, and after an
all-gather every rank has received everything it did not own: ``(1 - 1/p) S`` bytes either way (ring,
mesh, RDH, hier; KangaRing moves the secondaries' work to their primaries, so its totals are per pair).
"""

from __future__ import annotations

import pytest

from infsim.config import load_chip
from infsim.errors import InfsimError
from infsim.hw.collectives import build_schedule, simulate_collective
from infsim.hw.collectives.choice import GroupShape, choose_algorithm
from infsim.hw.collectives.schedule import group_shape, hypercube_labels
from infsim.hw.links import Topology

KiB, MiB = 2**10, 2**20


def _received(sched: object, reduce: bool) -> list[float]:
    out = [0.0] * sched.p  # type: ignore[attr-defined]
    for t in sched.transfers:  # type: ignore[attr-defined]
        if t.reduce == reduce:
            out[t.dst] += t.nbytes
    return out


@pytest.mark.parametrize("preset,cores", [("trn1", 32), ("trn1", 16), ("inf2", 24), ("inf2", 8), ("trn2", 128),
                                          ("trn2", 64), ("trn3", 64)])
@pytest.mark.parametrize("alg", ["ring", "bidir", "hier", "mesh", "rdh"])
def test_every_rank_absorbs_and_receives_what_it_must(preset: str, cores: int, alg: str) -> None:
    chip = load_chip(preset)
    topo = Topology.from_chip(chip)
    S = 3 * 2**20
    for op in ("all_reduce", "reduce_scatter", "all_gather"):
        try:
            s = build_schedule(topo, op, list(range(cores)), S, alg, chip.lnc)
        except InfsimError as e:  # rdh on a chip count that is not a power of two
            assert alg == "rdh" and "power-of-two" in str(e)
            return
        want = (1 - 1 / s.p) * S
        if op != "all_gather":
            assert _received(s, True) == pytest.approx([want] * s.p)
        if op != "reduce_scatter":
            assert _received(s, False) == pytest.approx([want] * s.p)
        assert sorted({t.step for t in s.transfers}) == list(range(s.num_steps))


def test_kangaring_pairs_do_the_work_of_two() -> None:
    chip = load_chip("trn1")
    topo = Topology.from_chip(chip)
    S = 64 * MiB
    s = build_schedule(topo, "all_reduce", list(range(32)), S, "kangaring")
    n = 16  # primaries: the first core of every chip
    red = _received(s, True)
    prim = [i for i in range(32) if s.cores[i] % 2 == 0]
    sec = [i for i in range(32) if s.cores[i] % 2 == 1]
    assert all(red[i] == pytest.approx((n - 1) / n * S) for i in prim)  # the ring of pairs' reduction
    assert all(red[i] == 0 for i in sec)  # read by its primary, not sent
    assert all(_received(s, False)[i] == pytest.approx(S) for i in sec)  # duplication writes: all of it
    assert all(_received(s, False)[i] == pytest.approx((n - 1) / n * S) for i in prim)
    assert s.num_steps == 2 * n - 1  # half the hops of a 32-rank ring (62 steps)
    ring = simulate_collective(chip, "all_reduce", 32, S, "ring")
    kr = simulate_collective(chip, "all_reduce", 32, S, "kangaring")
    assert kr.steps < ring.steps / 1.9 and kr.time_ns < ring.time_ns
    with pytest.raises(InfsimError, match="pairs"):
        build_schedule(Topology.from_chip(load_chip("inf1")), "all_reduce", [0, 1, 2, 4, 5, 6], S, "kangaring")


def test_mesh_takes_a_constant_number_of_steps() -> None:
    chip = load_chip("inf2")
    for p, steps in ((2, 2), (8, 4), (24, 4)):
        assert simulate_collective(chip, "all_reduce", p, 8 * KiB, "mesh").steps == steps
        assert simulate_collective(chip, "all_gather", p, 8 * KiB, "mesh").steps == steps // 2
    one = load_chip("inf2", ["cores_per_chip=1"])  # one rank per chip: the two inter-chip steps only
    assert simulate_collective(one, "all_reduce", 12, 8 * KiB, "mesh").steps == 2
    uneven = simulate_collective(chip, "all_reduce", 3, 8 * KiB, "mesh")  # 2 + 1 ranks: the flat form
    assert uneven.steps == 2


def test_rdh_on_a_4x4_torus_exchanges_with_neighbours_only() -> None:
    chip = load_chip("trn1")
    topo = Topology.from_chip(chip)
    labels = hypercube_labels(topo, list(range(16)))
    assert sorted(labels) == list(range(16))
    for a in range(16):
        for bit in range(4):
            b = labels.index(labels[a] ^ (1 << bit))
            assert len(topo.chip_route(a, b)) == 1  # Gray-coded axes: every partner is one hop away
    s = build_schedule(topo, "all_reduce", list(range(32)), 8 * MiB, "rdh")
    assert s.num_steps == 1 + 4 + 4 + 1  # intra-chip, 4 halvings, 4 doublings, intra-chip
    for t in s.transfers:
        assert len(topo.core_path(s.cores[t.src], s.cores[t.dst]).links) <= 2  # egress (+ one link)
    with pytest.raises(InfsimError, match="power-of-two"):
        build_schedule(Topology.from_chip(load_chip("inf2")), "all_reduce", list(range(24)), MiB, "rdh")


def test_choice_follows_the_runtime_ranges() -> None:
    links = load_chip("trn2").links
    full16 = GroupShape(64, 16, 4, True)
    assert choose_algorithm("all_reduce", 16 * KiB, full16, links) == "mesh"
    assert choose_algorithm("all_reduce", MiB - 1, full16, links) == "mesh"
    assert choose_algorithm("all_reduce", MiB, full16, links) == "rdh"
    assert choose_algorithm("all_reduce", 56 * MiB, full16, links) == "kangaring"
    assert choose_algorithm("all_reduce", 56 * MiB, GroupShape(16, 16, 1, False), links) == "ring"
    assert choose_algorithm("all_reduce", 4 * MiB, GroupShape(24, 12, 2, True), links) == "kangaring"  # not 2^k
    assert choose_algorithm("all_reduce", 4 * MiB, GroupShape(8, 1, 8, True), links) == "ring"  # one chip
    assert choose_algorithm("all_reduce", 4 * MiB, GroupShape(1, 1, 1, False), links) == "ring"
    assert choose_algorithm("send_recv", 4 * MiB, full16, links) == "direct"
    pinned = load_chip("trn2", ["links.collective_algorithm=hier"]).links
    assert choose_algorithm("all_reduce", 16 * KiB, full16, pinned) == "hier"
    moved = load_chip("trn2", ["links.collective_mesh_max_bytes=0"]).links
    assert choose_algorithm("all_reduce", 16 * KiB, full16, moved) == "rdh"


def test_group_shape_counts_logical_cores() -> None:
    topo = Topology.from_chip(load_chip("trn2"))
    assert group_shape(topo, topo.ring_order(range(128)), 2) == GroupShape(64, 16, 4, True)
    assert group_shape(topo, topo.ring_order(range(64)), 2) == GroupShape(32, 8, 4, True)
    assert group_shape(topo, topo.ring_order(range(4)), 2) == GroupShape(2, 1, 2, False)


def test_logical_cores_exchange_through_shared_hbm() -> None:
    """trn2 at LNC=2: the two physical cores of a logical core reduce-scatter and all-gather through their
    shared HBM (a DMA and its semaphore: dma.fixed_latency_ns instead of a collective step), and the
    logical-level algorithm runs on half the data in each half."""
    chip = load_chip("trn2")
    S = 16 * KiB
    r = simulate_collective(chip, "all_reduce", 128, S)
    assert r.algorithm == "mesh" and r.lnc == 2
    assert r.steps == 1 + 4 + 1
    lnc1 = simulate_collective(load_chip("trn2", ["lnc=1"]), "all_reduce", 128, S)
    assert lnc1.lnc == 1 and lnc1.steps == 4
    pair = simulate_collective(chip, "all_reduce", [0, 1], S)  # one logical core: its own HBM, no network
    fixed = chip.dma.fixed_latency_ns
    launch = chip.links.collective_launch_overhead_ns
    assert pair.steps == 2
    assert pair.time_ns == pytest.approx(launch + 2 * (fixed + S / 2 / chip.links.intra_chip_gbps))
    partial = simulate_collective(chip, "all_reduce", [0, 2], S)  # halves of two logical cores: physical ranks
    assert partial.lnc == 1
    cheaper = simulate_collective(load_chip("trn2", ["dma.fixed_latency_ns=0"]), "all_reduce", 128, S)
    assert r.contention_free_ns - cheaper.contention_free_ns == pytest.approx(2 * fixed, rel=1e-6)


def test_pinned_algorithm_that_does_not_fit_is_a_clear_error() -> None:
    chip = load_chip("inf2", ["links.collective_algorithm=rdh"])
    with pytest.raises(InfsimError, match="rdh needs a power-of-two number of chips"):
        simulate_collective(chip, "all_reduce", 24, MiB)
