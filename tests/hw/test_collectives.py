"""Collectives (infsim.hw.collectives): event simulation vs closed forms and the contention-free
evaluator, contention, placement (intra-chip vs NeuronLink), per-link byte accounting, engine API, CLI.

Tolerance: the event simulation adds the same per-step terms one simpy timeout at a time, the closed forms
multiply them out, so results agree to float64 rounding (a few ulp per step); 1e-9 relative is far above it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator
from typing import Any

import pytest
import simpy
from hypothesis import given
from hypothesis import strategies as st

from infsim.cli import main
from infsim.commands.collective import parse_size
from infsim.config import ChipConfig, load_chip
from infsim.engine.collectives.link import LinkCollectives
from infsim.errors import InfsimError
from infsim.hw.collectives import (
    CollectiveModel,
    CollectiveRecord,
    CollectiveSpec,
    build_schedule,
    bus_factor,
    contention_free_time_ns,
    ring_all_gather_time_ns,
    ring_all_reduce_time_ns,
    ring_reduce_scatter_time_ns,
    send_recv_time_ns,
    simulate_collective,
    simulate_concurrent,
    tree_all_reduce_time_ns,
)
from infsim.hw.links import Topology

REL = 1e-9
SIZES = [0, 8192, 1_000_003, 16 * 2**20]
PS = [2, 4, 8, 12, 24]


def _rec(proc: simpy.Process) -> CollectiveRecord:
    rec = proc.value
    assert isinstance(rec, CollectiveRecord)
    return rec


# the ring algorithm, and a core egress (its collective DMA, the first hop of every path) that never limits
RING = ["links.collective_algorithm=ring", "links.intra_chip_gbps=100000", "links.collective_launch_overhead_ns=0"]


def _uniform_ring(p: int) -> ChipConfig:  # one core per chip, p chips in a ring: every hop is one NeuronLink
    return load_chip("inf2", ["cores_per_chip=1", f"instance.chips={p}", *RING])


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("nbytes", SIZES)
def test_ring_matches_closed_form_on_uniform_ring(p: int, nbytes: int) -> None:
    chip = _uniform_ring(p)
    L = chip.links
    bw = L.link_gbps * (2 if p == 2 else 1)  # two chips: both links join the same pair
    ovh = L.collective_step_overhead_ns
    forms = {"all_reduce": ring_all_reduce_time_ns, "all_gather": ring_all_gather_time_ns,
             "reduce_scatter": ring_reduce_scatter_time_ns}
    for op, f in forms.items():
        r = simulate_collective(chip, op, p, nbytes)
        want = f(nbytes, p, bw, L.latency_ns, ovh)
        assert r.time_ns == pytest.approx(want, rel=REL)
        assert r.closed_form_ns == pytest.approx(want, rel=REL)
        assert r.contention_free_ns == pytest.approx(want, rel=REL)
        assert r.steps == (2 if op == "all_reduce" else 1) * (p - 1)
        assert r.bus_gbps <= bw * (1 + REL)


@pytest.mark.parametrize("p", [4, 12])
def test_reduction_rate_adds_to_reduce_steps_only(p: int) -> None:
    chip = load_chip("inf2", ["cores_per_chip=1", f"instance.chips={p}", "links.collective_reduce_gbps=50", *RING])
    L = chip.links
    S = 4 * 2**20
    ar = simulate_collective(chip, "all_reduce", p, S)
    want = ring_all_reduce_time_ns(S, p, L.link_gbps, L.latency_ns, L.collective_step_overhead_ns, 0.0, 50.0)
    assert ar.time_ns == pytest.approx(want, rel=REL) and ar.closed_form_ns == pytest.approx(want, rel=REL)
    assert ar.time_ns - ring_all_reduce_time_ns(S, p, L.link_gbps, L.latency_ns, L.collective_step_overhead_ns) \
        == pytest.approx((p - 1) * S / p / 50.0)
    rs = simulate_collective(chip, "reduce_scatter", p, S)
    assert rs.time_ns == pytest.approx(ring_reduce_scatter_time_ns(S, p, L.link_gbps, L.latency_ns,
                                                                   L.collective_step_overhead_ns, 0.0, 50.0), rel=REL)
    ag = simulate_collective(chip, "all_gather", p, S)  # nothing to reduce
    assert ag.time_ns == pytest.approx(ring_all_gather_time_ns(S, p, L.link_gbps, L.latency_ns,
                                                               L.collective_step_overhead_ns), rel=REL)
    tr = simulate_collective(chip, "all_reduce", p, S, "tree")
    assert tr.time_ns == pytest.approx(tr.contention_free_ns, rel=REL)


@pytest.mark.parametrize("p", [4, 8, 12, 24])
def test_bidir_ring_is_the_closed_form_at_twice_the_bandwidth(p: int, inf2: ChipConfig) -> None:
    chip = _uniform_ring(p)
    L = chip.links
    for S in (8192, 16 * 2**20):
        for op in ("all_reduce", "all_gather", "reduce_scatter"):
            f = ring_all_reduce_time_ns if op == "all_reduce" else ring_all_gather_time_ns
            r = simulate_collective(chip, op, p, S, "bidir")
            # both directions leave a core through its (fast) egress: a few ps of sharing there
            assert r.time_ns == pytest.approx(f(S, p, 2 * L.link_gbps, L.latency_ns, L.collective_step_overhead_ns),
                                              rel=1e-4)
            assert len([k for k in r.link_bytes if k.startswith("chip")]) == 2 * p  # both directions of every link
    inf2 = load_chip("inf2", RING)  # with the preset's egress (56.7 GB/s) a core cannot feed both directions
    big = 16 * 2**20
    assert simulate_collective(inf2, "all_reduce", 24, big, "bidir").time_ns < \
        0.6 * simulate_collective(inf2, "all_reduce", 24, big, "ring").time_ns


def test_closed_form_is_the_issue_formula() -> None:
    S, p, bw, lat = 16 * 2**20, 8, 100.0, 1000.0
    assert ring_all_reduce_time_ns(S, p, bw, lat) == pytest.approx(2 * (p - 1) / p * S / bw + 2 * (p - 1) * lat)
    assert ring_all_reduce_time_ns(S, 1, bw, lat) == 0.0


@pytest.mark.parametrize("preset", ["trn1", "trn2"])
def test_ring_on_torus_snake_matches_closed_form(preset: str) -> None:
    """One rank per chip of the 4x4 torus: the snake ring makes every hop one link, so the closed form holds."""
    chip = load_chip(preset, [*RING, "lnc=1"])
    cores = [chip.cores_per_chip * i for i in range(16)]
    L = chip.links
    for S in (8192, 16 * 2**20):
        r = simulate_collective(chip, "all_reduce", cores, S)
        want = ring_all_reduce_time_ns(S, 16, L.link_gbps, L.latency_ns, L.collective_step_overhead_ns)
        assert r.time_ns == pytest.approx(want, rel=REL) and r.closed_form_ns == pytest.approx(want, rel=REL)
        assert len([k for k in r.link_bytes if k.startswith("chip")]) == 16
        assert r.algorithm == "ring"


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "reduce_scatter"])
def test_ring_on_inf2_matches_dependency_model(p: int, op: str, inf2: ChipConfig) -> None:
    """On the real inf2 placement the hops differ (on-chip, NeuronLink, multi-hop closing hop) but no
    link is shared, so the event simulation equals the contention-free longest-path evaluation."""
    chip = inf2
    for nbytes in (8192, 4 * 2**20):
        r = simulate_collective(chip, op, p, nbytes, "ring")
        assert r.time_ns == pytest.approx(r.contention_free_ns, rel=REL)
        hop_bw = min(chip.links.link_gbps, chip.links.intra_chip_gbps) if p > 2 else chip.links.intra_chip_gbps
        assert r.bus_gbps <= hop_bw * (1 + REL)  # every rank serialises its 2(p-1) messages on its hop


def test_tp2_on_inf2_is_one_chip(inf2: ChipConfig) -> None:
    chip = inf2
    S = 2**20
    r = simulate_collective(chip, "all_reduce", 2, S)
    assert r.chip_link_bytes == 0 and r.link_energy_j == 0
    assert r.intra_chip_bytes == pytest.approx(2 * S)  # 2 ranks x 2 steps x S/2
    L = chip.links
    assert r.time_ns == pytest.approx(
        ring_all_reduce_time_ns(S, 2, L.intra_chip_gbps, L.intra_chip_latency_ns, L.collective_step_overhead_ns,
                                L.collective_launch_overhead_ns), rel=REL)


def test_tp24_on_inf2_is_a_ring_of_12_chips_by_2_cores(inf2: ChipConfig) -> None:
    chip = inf2
    S = 8 * 2**20
    r = simulate_collective(chip, "all_reduce", 24, S, "ring")
    assert list(r.cores) == list(range(24))
    per_link = 2 * 23 / 24 * S
    chip_links = {k: v for k, v in r.link_bytes.items() if k.startswith("chip")}
    assert sorted(chip_links) == sorted(f"chip{i}->chip{(i + 1) % 12}" for i in range(12))
    assert all(v == pytest.approx(per_link) for v in chip_links.values())
    egress = {k: v for k, v in r.link_bytes.items() if not k.startswith("chip")}  # every core's, to both kinds
    assert sorted(egress) == sorted(f"c{i}.{j}->intra" for i in range(12) for j in range(2))
    assert all(v == pytest.approx(per_link) for v in egress.values())
    assert r.chip_link_bytes == pytest.approx(12 * per_link)
    assert r.link_energy_j == pytest.approx(12 * per_link * 8 * chip.energy.link_pj_per_bit * 1e-12)
    assert r.steps == 46


def test_per_step_overhead_is_paid_once_per_step_on_the_critical_path(inf2: ChipConfig) -> None:
    """TP 24 decode all-reduce (8 KiB): time is linear in the step overhead with slope 2(p-1) = 46 on the
    ring, 4 on the mesh the runtime picks at that size (intra-chip, inter-chip, inter-chip, intra-chip)."""
    base = load_chip("inf2", ["links.collective_step_overhead_ns=0"])
    more = load_chip("inf2", ["links.collective_step_overhead_ns=1000"])
    t0 = simulate_collective(base, "all_reduce", 24, 8192, "ring").time_ns
    t1 = simulate_collective(more, "all_reduce", 24, 8192, "ring").time_ns
    assert t1 - t0 == pytest.approx(46 * 1000, rel=1e-9)
    m0 = simulate_collective(base, "all_reduce", 24, 8192)
    m1 = simulate_collective(more, "all_reduce", 24, 8192)
    assert m0.algorithm == "mesh" and m0.steps == 4
    assert m1.contention_free_ns - m0.contention_free_ns == pytest.approx(4 * 1000, rel=1e-9)
    launch = load_chip("inf2", ["links.collective_launch_overhead_ns=700"])
    t2 = simulate_collective(launch, "all_reduce", 24, 8192).time_ns
    t3 = simulate_collective(load_chip("inf2", ["links.collective_launch_overhead_ns=0"]), "all_reduce", 24,
                             8192).time_ns
    assert t2 - t3 == pytest.approx(700, rel=1e-9)


def test_contention_two_collectives_on_one_ring() -> None:
    chip = load_chip("inf2", ["links.collective_algorithm=ring"])
    for S in (8192, 2**20, 16 * 2**20):
        one = simulate_collective(chip, "all_reduce", 24, S)
        a, b = simulate_concurrent(chip, [CollectiveSpec("all_reduce", 24, S), CollectiveSpec("all_reduce", 24, S)])
        if S > 8192:
            assert a.time_ns > one.time_ns and b.time_ns > one.time_ns
        else:  # 341-byte messages: the one queued second waits one message per link, the first never waits
            assert b.time_ns > one.time_ns and a.time_ns >= one.time_ns * (1 - REL)
        assert max(a.time_ns, b.time_ns) <= 2 * one.time_ns * (1 + REL)
        assert a.chip_link_bytes == pytest.approx(2 * one.chip_link_bytes)
        # the two share every link: together they cannot beat the link bound
        assert 2 * S * bus_factor("all_reduce", 24) / max(a.time_ns, b.time_ns) <= chip.links.link_gbps
    big = 16 * 2**20
    one = simulate_collective(chip, "all_reduce", 24, big)
    a, _ = simulate_concurrent(chip, [CollectiveSpec("all_reduce", 24, big)] * 2)
    assert a.time_ns > 1.8 * one.time_ns  # bandwidth-bound: close to 2x


def test_disjoint_collectives_do_not_interfere(inf2: ChipConfig) -> None:
    chip = inf2
    S = 4 * 2**20
    alone = simulate_collective(chip, "all_reduce", [0, 1], S)
    a, b = simulate_concurrent(chip, [CollectiveSpec("all_reduce", [0, 1], S),
                                      CollectiveSpec("all_reduce", [2, 3], S)])
    assert a.time_ns == pytest.approx(alone.time_ns, rel=REL) and b.time_ns == pytest.approx(alone.time_ns, rel=REL)


@pytest.mark.parametrize("p", [2, 4, 8, 16, 32, 64])
def test_tree_matches_closed_form_on_switch(p: int) -> None:
    chip = load_chip("trn3")
    cores = [chip.cores_per_chip * i for i in range(p)]  # one rank per chip: every edge is up + down
    path = Topology.from_chip(chip).core_path(cores[0], cores[1])
    S = 65536
    r = simulate_collective(chip, "all_reduce", cores, S, "tree")
    want = tree_all_reduce_time_ns(S, p, path.gbps, path.latency_ns, chip.links.collective_step_overhead_ns,
                                   chip.links.collective_launch_overhead_ns)
    assert r.time_ns == pytest.approx(want, rel=REL)
    assert r.steps == 2 * int(math.log2(p))


def test_hier_on_inf2() -> None:
    chip = load_chip("inf2", RING)
    S = 8 * 2**20
    h = simulate_collective(chip, "all_reduce", 24, S, "hier")
    assert h.steps == 1 + 22 + 1
    # two inter-chip rings (one per local core, opposite directions) of S/2 each: every link, both ways
    both = [v for k, v in h.link_bytes.items() if k.startswith("chip")]
    assert len(both) == 24 and all(v == pytest.approx(11 / 12 * S) for v in both)
    assert h.time_ns == pytest.approx(h.contention_free_ns, rel=REL)  # the two rings never share a link
    assert h.bus_gbps > chip.links.link_gbps  # more than one link's worth: both directions work
    # chip-level bound: each chip must send >= 2(q-1)/q S over its links
    assert 2 * 11 / 12 * S / h.time_ns <= Topology.from_chip(chip).chip_egress_gbps()
    one_chip = simulate_collective(chip, "all_reduce", 2, S, "hier")
    assert one_chip.time_ns == pytest.approx(simulate_collective(chip, "all_reduce", 2, S, "ring").time_ns, rel=REL)
    with pytest.raises(InfsimError, match="same number of ranks"):
        simulate_collective(chip, "all_reduce", 3, S, "hier")


def test_hier_rings_share_links_on_trn2() -> None:
    """8 cores per chip: 8 inter-chip rings, 4 each way, share the torus links. The simulation and the
    contention-free evaluation (which shares the links between the messages of one step) both see it."""
    chip = load_chip("trn2", ["lnc=1", "links.intra_chip_gbps=100000"])
    S = 16 * 2**20
    r = simulate_collective(chip, "all_reduce", 128, S, "hier")
    lone = simulate_collective(chip, "all_reduce", list(range(0, 128, 8)), S / 8, "ring")  # one ring alone
    assert r.contention_free_ns > 1.5 * lone.contention_free_ns  # 4 rings per direction on each link
    # the simulation overlaps one ring's step overhead with another's transfer; the step-level sharing does not
    assert 0.6 * r.contention_free_ns < r.time_ns <= r.contention_free_ns


def test_hier_and_tree_schedules_move_the_right_data() -> None:
    t = Topology.from_chip(load_chip("trn2"))
    S = 1024.0 * 128
    for op in ("all_gather", "reduce_scatter", "all_reduce"):
        for alg in ("ring", "bidir", "tree", "hier"):
            s = build_schedule(t, op, list(range(32)), S, alg)
            sent = [0.0] * s.p
            for tr in s.transfers:
                sent[tr.src] += tr.nbytes
            # every rank's data must leave it at least once (p > 1), and steps are contiguous from 0
            assert all(x > 0 for x in sent[1:])
            assert sorted({tr.step for tr in s.transfers}) == list(range(s.num_steps))
            if alg == "tree" and op == "all_gather":  # gather delivers every shard to the root once
                into_root = sum(tr.nbytes for tr in s.transfers if tr.dst == 0)
                assert into_root == pytest.approx(S * (s.p - 1) / s.p)


def test_send_recv(inf2: ChipConfig) -> None:
    chip = inf2
    S = 2**20
    r = simulate_collective(chip, "send_recv", [0, 23], S)
    path = Topology.from_chip(chip).core_path(0, 23)
    want = send_recv_time_ns(S, path.gbps, path.latency_ns, chip.links.collective_step_overhead_ns,
                             chip.links.collective_launch_overhead_ns)
    assert r.time_ns == pytest.approx(want, rel=REL) == r.closed_form_ns
    assert r.bus_gbps == pytest.approx(S / r.time_ns)
    assert r.link_bytes == {"c0.0->intra": S, "chip0->chip11": S}  # out of core 0, one hop back to chip 11
    assert r.algorithm == "direct"


def test_chunking_does_not_change_uncontended_time(inf2: ChipConfig) -> None:
    chip = inf2
    a = simulate_collective(chip, "all_reduce", 8, 4 * 2**20, "ring")
    b = simulate_collective(chip, "all_reduce", 8, 4 * 2**20, "ring", max_chunks=64)
    assert a.time_ns == pytest.approx(b.time_ns, rel=REL)
    assert a.link_bytes.keys() == b.link_bytes.keys()


def test_engine_api_run_join_and_time_units(inf2: ChipConfig) -> None:
    chip = inf2
    m = CollectiveModel(chip)
    env = simpy.Environment()
    pr = m.run(env, "all_reduce", [0, 1], 2**20)
    env.run()
    d = _rec(pr).time_ns
    assert d == pytest.approx(m.estimate_ns("all_reduce", [0, 1], 2**20))

    # skewed join: rank 1 arrives 1000 ns late; the dependency chain shifts by exactly that
    m2 = CollectiveModel(chip)
    env2 = simpy.Environment()
    done: dict[int, float] = {}

    def core(c: int, delay: float) -> Generator[simpy.Event, Any, None]:
        if delay:
            yield env2.timeout(delay)
        yield m2.join(env2, c, "ar0", "all_reduce", [0, 1], 2**20)
        done[c] = env2.now

    env2.process(core(0, 0))
    env2.process(core(1, 1000))
    env2.run()
    assert max(done.values()) == pytest.approx(1000 + d, rel=REL)
    assert m2.records[0].start_ns == 0 and m2.records[0].end_ns == pytest.approx(1000 + d, rel=REL)

    # environment counting cycles of a 1.4 GHz clock
    m3 = CollectiveModel(chip, ns_per_unit=1 / 1.4)
    env3 = simpy.Environment()
    pr3 = m3.run(env3, "all_reduce", list(range(8)), 2**20, "ring")
    env3.run()
    assert env3.now == pytest.approx(m3.estimate_ns("all_reduce", list(range(8)), 2**20, "ring") * 1.4, rel=REL)
    assert _rec(pr3).time_ns == pytest.approx(m3.estimate_ns("all_reduce", list(range(8)), 2**20, "ring"), rel=REL)

    # fast path: same time and bytes, no link events
    m4 = CollectiveModel(chip)
    env4 = simpy.Environment()
    pr4 = m4.run(env4, "all_reduce", list(range(8)), 2**20, "ring", contention=False)
    env4.run()
    full = simulate_collective(chip, "all_reduce", 8, 2**20, "ring")
    assert _rec(pr4).time_ns == pytest.approx(full.time_ns, rel=REL)
    assert m4.network(env4).bytes_by_link() == pytest.approx(full.link_bytes)
    assert m4.chip_link_bytes(env4) == pytest.approx(full.chip_link_bytes)
    assert m4.link_energy_j(env4) == pytest.approx(full.link_energy_j)

    with pytest.raises(InfsimError):
        m4.join(env4, 5, "x", "all_reduce", [0, 1], 8)
    with pytest.raises(InfsimError, match="out of range"):
        CollectiveModel(chip, num_cores=4).schedule("all_reduce", [0, 7], 8)


def test_two_engine_collectives_share_links(inf2: ChipConfig) -> None:
    chip = inf2
    m = CollectiveModel(chip)
    env = simpy.Environment()
    a = m.run(env, "all_reduce", list(range(24)), 2**22)
    b = m.run(env, "all_reduce", list(range(24)), 2**22)
    env.run()
    alone = m.estimate_ns("all_reduce", list(range(24)), 2**22)
    assert _rec(a).time_ns > alone and _rec(b).time_ns > alone
    assert len(m.records) == 2


def test_engine_adapter_duration_ps(inf2: ChipConfig) -> None:
    chip = inf2
    lc = LinkCollectives(chip)
    L = chip.links

    class _Op:  # the engine passes an enum member; only its name is used
        def __init__(self, name: str) -> None:
            self.name = name

    S = 2**20
    ps, lb = lc.duration_ps(_Op("all_reduce"), (0, 1), S, S, 2)
    want = ring_all_reduce_time_ns(S, 2, L.intra_chip_gbps, L.intra_chip_latency_ns, L.collective_step_overhead_ns,
                                   L.collective_launch_overhead_ns)
    assert ps == math.ceil(want * 1000 - 1e-6) and lb == 0
    ring = LinkCollectives(chip, "ring")
    ps24, lb24 = ring.duration_ps("all_reduce", tuple(range(24)), S, S, 2)
    assert ps24 == math.ceil(simulate_collective(chip, "all_reduce", 24, S, "ring").time_ns * 1000 - 1e-6)
    assert lb24 == round(12 * 2 * 23 / 24 * S / 24)  # NeuronLink bytes x hops per member
    # the default is the runtime's choice: 1 MiB over 12 chips of 2 cores is KangaRing, 8 KiB is mesh
    auto24, _ = lc.duration_ps("all_reduce", tuple(range(24)), S, S, 2)
    assert auto24 == math.ceil(simulate_collective(chip, "all_reduce", 24, S).contention_free_ns * 1000 - 1e-6)
    assert lc.algorithm("all_reduce", tuple(range(24)), S, S, 2) == "kangaring"
    assert lc.algorithm("all_reduce", tuple(range(24)), 8192, 8192, 2) == "mesh"
    assert lc.algorithm("all_reduce", (3,), S, S, 2) == "none"
    assert lc.algorithm(_Op("send"), (0, 23), S, S, 2) == "direct"
    ag, _ = lc.duration_ps("all_gather", tuple(range(4)), S // 4, S, 2)
    assert ag == math.ceil(simulate_collective(chip, "all_gather", 4, S).contention_free_ns * 1000 - 1e-6)
    sr, srb = lc.duration_ps(_Op("send"), (0, 23), S, S, 2)
    assert srb == S and sr > 0
    assert lc.duration_ps("all_reduce", (3,), S, S, 2) == (0, 0)
    with pytest.raises(InfsimError):
        lc.duration_ps("matmul", (0, 1), S, S, 2)


def test_deterministic() -> None:
    chip = load_chip("trn2")
    specs = [CollectiveSpec("all_reduce", 64, 3 * 2**20, "hier"), CollectiveSpec("all_gather", 48, 2**20, "ring"),
             CollectiveSpec("reduce_scatter", 32, 2**20, "tree", start_ns=1234.5)]
    a = [r.to_dict() | {"links": r.link_bytes} for r in simulate_concurrent(chip, specs)]
    b = [r.to_dict() | {"links": r.link_bytes} for r in simulate_concurrent(chip, specs)]
    assert a == b


@given(
    preset=st.sampled_from(["inf2", "trn1", "trn2", "trn3"]),
    op=st.sampled_from(["all_reduce", "all_gather", "reduce_scatter"]),
    alg=st.sampled_from(["ring", "bidir", "tree", "hier", "mesh", "rdh", "kangaring", "auto"]),
    chips=st.integers(1, 6),
    nbytes=st.sampled_from([0, 512, 8192, 100_000, 2**20]),
)
def test_simulation_is_bounded_by_contention_free_and_link_bounds(preset: str, op: str, alg: str, chips: int,
                                                                   nbytes: int) -> None:
    chip = load_chip(preset)
    cpc = chip.cores_per_chip
    p = chips * min(cpc, 2)
    cores = [c * cpc + k for c in range(chips) for k in range(min(cpc, 2))]
    topo = Topology.from_chip(chip)
    try:
        sched = build_schedule(topo, op, cores, nbytes, alg, chip.lnc)
    except InfsimError as e:  # rdh / kangaring where the group does not have their shape
        assert alg in ("rdh", "kangaring") and ("power-of-two" in str(e) or "pairs" in str(e))
        return
    r = simulate_collective(chip, op, cores, nbytes, alg)
    assert r.algorithm == sched.algorithm and (alg == "auto" or r.algorithm == alg)
    # the contention-free evaluation is a lower bound when no link carries two messages of one step; when
    # some do, its step-level sharing is an approximation (the simulation lets them overlap other steps)
    per_step: dict[tuple[int, int], int] = {}
    for t in sched.transfers:
        for li in topo.core_path(sched.cores[t.src], sched.cores[t.dst]).links:
            per_step[(t.step, li)] = per_step.get((t.step, li), 0) + 1
    shared = any(n > 1 for n in per_step.values())
    assert r.time_ns >= r.contention_free_ns * (1 - REL) * (0.8 if shared else 1)
    assert contention_free_time_ns(sched, topo, chip.links.collective_step_overhead_ns,
                                   chip.links.collective_launch_overhead_ns,
                                   chip.links.collective_reduce_gbps, chip.dma.fixed_latency_ns) == pytest.approx(
        r.contention_free_ns, rel=REL)
    # every byte is accounted on every link of its path
    hop_bytes = sum(t.nbytes * topo.core_path(sched.cores[t.src], sched.cores[t.dst]).hops for t in sched.transfers)
    assert sum(r.link_bytes.values()) == pytest.approx(hop_bytes, rel=REL)
    assert r.chip_link_bytes + r.intra_chip_bytes == pytest.approx(hop_bytes, rel=REL)
    if p > 1 and chips > 1 and nbytes > 0:
        factor = 2 * (chips - 1) / chips if op == "all_reduce" else (chips - 1) / chips
        assert factor * nbytes / r.time_ns <= topo.chip_egress_gbps() * (1 + REL)
    if alg == "ring" and p > 1 and nbytes > 0:
        assert r.bus_gbps <= max(chip.links.intra_chip_gbps, topo.chip_egress_gbps()) * (1 + REL)
    if p > 1 and nbytes > 0 and op != "all_gather":  # every rank's data leaves it through its own egress
        assert r.bus_gbps <= chip.links.intra_chip_gbps * p * (1 + REL)


# ---- CLI ---------------------------------------------------------------------------------------
def test_parse_size() -> None:
    assert parse_size("4K") == 4096 and parse_size("1M") == 2**20 and parse_size("16MiB") == 16 * 2**20
    assert parse_size("1.5M") == 1572864 and parse_size("123") == 123 and parse_size("1G") == 2**30
    for bad in ("1Q", "", "-1", "0.5"):
        with pytest.raises(InfsimError):
            parse_size(bad)


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["collective", "all_reduce", "--chip", "inf2", "--ranks", "2,4,8,12", "--bytes", "1M,16M", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    pts = out["points"]
    assert len(pts) == 8 and all("time_us" in p and "bus_gbps" in p for p in pts)
    assert [(p["ranks"], p["bytes"]) for p in pts][:2] == [(2, 2**20), (2, 16 * 2**20)]
    assert pts[0]["chip_link_bytes"] == 0


def test_cli_text_and_errors(capsys: pytest.CaptureFixture[str], inf2: ChipConfig) -> None:
    assert main(["collective", "all-gather", "--ranks", "4", "--bytes", "64K", "--algorithm", "tree"]) == 0
    assert "time_us" in capsys.readouterr().out
    assert main(["collective", "all_reduce", "--ranks", "24", "--bytes", "8K", "--json", "--algorithm", "ring",
                 "--set", "links.collective_step_overhead_ns=0"]) == 0
    no_ovh = json.loads(capsys.readouterr().out)["points"][0]["time_us"]
    assert main(["collective", "all_reduce", "--ranks", "24", "--bytes", "8K", "--json", "--algorithm", "ring"]) == 0
    preset = json.loads(capsys.readouterr().out)["points"][0]["time_us"]
    ovh_us = inf2.links.collective_step_overhead_ns / 1e3
    assert preset - no_ovh == pytest.approx(46 * ovh_us)
    assert main(["collective", "all_reduce", "--ranks", "24", "--bytes", "8K", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["points"][0]["algorithm"] == "mesh"
    assert main(["collective", "all_reduce", "--ranks", "25", "--bytes", "1M"]) == 1
    assert "exceeds" in capsys.readouterr().err
    assert main(["collective", "send_recv", "--ranks", "1", "--bytes", "1M"]) == 1
    with pytest.raises(SystemExit) as e:
        main(["collective", "broadcast", "--ranks", "2", "--bytes", "1M"])
    assert e.value.code == 2
