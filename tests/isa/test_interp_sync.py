"""Property tests of the reference interpreter's ordering semantics: semaphores across engines and cores,
barriers, deadlock reports, collectives over replica groups and send/recv."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infsim.isa import AccessPattern, DeadlockError, DType, Op, Program, Space, hbm, sbuf
from infsim.isa import make as mk
from infsim.isa.interp import InterpError, run

F32 = DType.fp32


def t(n: int, off: int = 0, p: int = 4) -> AccessPattern:
    return sbuf(p, n, F32, offset=off)


# ---- semaphores ---------------------------------------------------------------------------------

def test_consumer_on_lower_stream_key_sees_producer_data() -> None:
    """The scheduler prefers low stream keys (vector < gpsimd); only the semaphore makes the vector copy wait
    for the gpsimd memset."""
    for with_sem in (True, False):
        p = Program()
        p.append(mk("memset", t(8), value=3.0, engine="gpsimd", signals=[("s", 1)] if with_sem else []))
        p.append(mk("tensor_copy", t(8, 64), t(8), engine="vector", waits=[("s", 1)] if with_sem else []))
        r = run(p, {})
        assert np.all(r.read(t(8, 64)) == (3.0 if with_sem else 0.0))
        assert r.steps == 2
        if with_sem:
            assert r.semaphores == {"s": 1}


def test_cross_core_through_hbm() -> None:
    """Core 1 stores to HBM, core 0 (same chip) loads it after a semaphore."""
    p = Program(2, 2)
    p.add_tensor("X", F32, (4, 8), "scratch")
    p.add_tensor("Y", F32, (4, 8), "output")
    p.append(mk("dma_copy", t(8), hbm("X", 4, 8, F32), core=0, waits=[("st", 1)], signals=[("ld", 1)]))
    p.append(mk("dma_copy", hbm("Y", 4, 8, F32), t(8), core=0, waits=[("ld", 1)]))
    p.append(mk("iota", t(8), multipliers=[1], channel_multiplier=10, core=1, signals=[("io", 1)]))
    p.append(mk("dma_copy", hbm("X", 4, 8, F32), t(8), core=1, waits=[("io", 1)], signals=[("st", 1)]))
    r = run(p, {})
    np.testing.assert_array_equal(r.hbm("Y"), np.arange(8)[None, :] + 10 * np.arange(4)[:, None])


@st.composite
def chains(draw: st.DrawFn) -> list[tuple[int, str, int]]:
    """A random chain of (core, engine, queue) stages."""
    n = draw(st.integers(1, 12))
    stages = []
    for _ in range(n):
        eng = draw(st.sampled_from(["vector", "gpsimd", "scalar", "dma"]))
        stages.append((draw(st.integers(0, 1)), eng, draw(st.integers(0, 2)) if eng == "dma" else 0))
    return stages


@given(chains())
def test_semaphore_chain_orders_any_placement(stages: list[tuple[int, str, int]]) -> None:
    """A chain of read-increment-write stages through one HBM value, each stage on a random core / engine /
    queue, counts the compute stages: each stage waits for the previous one's signal, whatever the stream
    keys (which alone would order the scheduler)."""
    p = Program(2, 2)
    p.add_tensor("V", F32, (1, 1), "output")
    one = sbuf(1, 1, F32)
    ins = []
    for k, (core, eng, q) in enumerate(stages):
        w = [(f"s{k}", 1)] if k else []
        ld, op_, stv = f"a{k}", f"b{k}", f"s{k + 1}"
        if eng == "dma":  # a copy that adds nothing: a DMA cannot compute, so it moves V to itself
            ins.append(mk("dma_copy", hbm("V", 1, 1, F32), hbm("V", 1, 1, F32), core=core, queue=q, waits=w,
                          signals=[(stv, 1)]))
            continue
        ins.append(mk("dma_copy", one, hbm("V", 1, 1, F32), core=core, queue=0, waits=w, signals=[(ld, 1)]))
        ins.append(mk("tensor_scalar", one, one, op0="add", imm0=1.0, engine=eng, core=core, waits=[(ld, 1)],
                      signals=[(op_, 1)]))
        ins.append(mk("dma_copy", hbm("V", 1, 1, F32), one, core=core, queue=0, waits=[(op_, 1)],
                      signals=[(stv, 1)]))
    p.extend(ins)
    r = run(p, {})
    assert r.hbm("V")[0, 0] == sum(1 for _, e, _ in stages if e != "dma")


# ---- barrier ------------------------------------------------------------------------------------

@given(st.integers(2, 4), st.integers(1, 3))
def test_barrier_rendezvous(n: int, rounds: int) -> None:
    """n cores each write their slot, barrier, then read everyone's slot; repeated `rounds` times."""
    p = Program(n, n)
    p.add_tensor("S", F32, (rounds, n), "scratch")
    p.add_tensor("O", F32, (n, rounds, n), "output")
    for c in range(n):
        for k in range(rounds):
            v = sbuf(1, 1, F32, offset=64)
            p.append(mk("memset", v, value=float(100 * k + c), core=c, waits=[(f"w{c}", k)] if k else [],
                        signals=[(f"m{c}", 1)]))
            p.append(mk("dma_copy", hbm("S", 1, 1, F32, offset=4 * (k * n + c)), v, core=c,
                        waits=[(f"m{c}", k + 1)], signals=[(f"d{c}", 1)]))
            p.append(mk("barrier", core=c, sem="bar", count=n, waits=[(f"d{c}", k + 1)], signals=[(f"b{c}", 1)]))
            p.append(mk("dma_copy", hbm("O", 1, n, F32, offset=4 * (c * rounds * n + k * n)),
                        hbm("S", 1, n, F32, offset=4 * k * n), core=c, queue=1, waits=[(f"b{c}", k + 1)],
                        signals=[(f"w{c}", 1)]))
    r = run(p, {})
    exp = np.array([[[100 * k + c for c in range(n)] for k in range(rounds)]] * n, np.float32)
    np.testing.assert_array_equal(r.hbm("O"), exp)
    assert r.semaphores["bar"] == n * rounds


def test_barrier_short_of_members_deadlocks() -> None:
    p = Program(2, 2)
    p.append(mk("barrier", core=0, sem="bar", count=3))
    p.append(mk("barrier", core=1, sem="bar", count=3))
    with pytest.raises(DeadlockError, match=r"barrier waits for semaphore 'bar' >= 3 \(current 2\)"):
        run(p, {})


# ---- deadlock -----------------------------------------------------------------------------------

def test_deadlock_names_every_blocked_stream() -> None:
    p = Program(2, 2)
    p.append(mk("memset", t(4), value=1.0, engine="vector", signals=[("a", 1)]))
    p.append(mk("tensor_copy", t(4, 64), t(4), engine="vector", waits=[("a", 1), ("never", 1)]))  # instr 1
    p.append(mk("matmul", sbuf(4, 4, F32, space=Space.psum), t(4), t(4), core=1,
                waits=[("b", 2)]))  # instr 2
    p.append(mk("sem_signal", core=1, engine="sync", signals=[("b", 1)]))
    p.append(mk("sem_wait", core=0, engine="sync", queue=0, waits=[("b", 5)]))  # instr 4
    with pytest.raises(DeadlockError) as ei:
        run(p, {})
    msg = str(ei.value)
    assert "\n" not in msg
    assert "3 stream(s) blocked" in msg
    assert "core 0 vector[0] at instruction 1 (tensor_copy) waits for semaphore 'never' >= 1 (current 0)" in msg
    assert "core 0 sync[0] at instruction 4 (sem_wait) waits for semaphore 'b' >= 5 (current 1)" in msg
    assert "core 1 tensor[0] at instruction 2 (matmul) waits for semaphore 'b' >= 2 (current 1)" in msg
    assert "'a'" not in msg  # satisfied waits are not blamed
    assert len(ei.value.blocked) == 3


def test_max_steps() -> None:
    p = Program()
    for _ in range(5):
        p.append(mk("nop", engine="vector"))
    assert run(p, {}).steps == 5
    with pytest.raises(InterpError, match="max_steps=3"):
        run(p, {}, max_steps=3)


# ---- collectives --------------------------------------------------------------------------------

def collective_program(n: int, opname: str, src_elems: int, dst_elems: int, **imms: object) -> tuple[Program, dict]:
    """n cores on n chips; core c loads X{c} [4, src_elems/4] into SBUF, runs the collective on cc queue 0,
    stores dst to Y{c}."""
    p = Program(n, 1)
    p.add_group("g", list(range(n)))
    inputs = {}
    rng = np.random.default_rng(n * 7 + src_elems)
    for c in range(n):
        sf, df = src_elems // 4, dst_elems // 4
        p.add_tensor(f"X{c}", F32, (4, sf), "input", chip=c)
        p.add_tensor(f"Y{c}", F32, (4, df), "output", chip=c)
        inputs[f"X{c}"] = rng.integers(-50, 50, (4, sf)).astype(np.float32)
        p.append(mk("dma_copy", sbuf(4, sf, F32), hbm(f"X{c}", 4, sf, F32), core=c, signals=[(f"l{c}", 1)]))
        p.append(mk(opname, sbuf(4, df, F32, offset=4096), sbuf(4, sf, F32), core=c, group="g", waits=[(f"l{c}", 1)],
                    signals=[(f"c{c}", 1)], **imms))
        p.append(mk("dma_copy", hbm(f"Y{c}", 4, df, F32), sbuf(4, df, F32, offset=4096), core=c,
                    waits=[(f"c{c}", 1)]))
    return p, inputs


@given(st.sampled_from([2, 4]), st.sampled_from(["add", "max", "min"]), st.integers(1, 8))
def test_all_reduce(n: int, op: str, f: int) -> None:
    p, x = collective_program(n, "all_reduce", 4 * f, 4 * f, op=op)
    r = run(p, x)
    stack = np.stack([x[f"X{c}"] for c in range(n)])
    exp = {"add": np.sum, "max": np.max, "min": np.min}[op](stack, axis=0)
    for c in range(n):
        np.testing.assert_array_equal(r.hbm(f"Y{c}"), exp)


@given(st.sampled_from([2, 4]), st.integers(1, 4))
def test_all_gather_rank_order(n: int, f: int) -> None:
    p, x = collective_program(n, "all_gather", 4 * f, 4 * f * n)
    r = run(p, x)
    exp = np.concatenate([x[f"X{c}"].reshape(-1) for c in range(n)])
    for c in range(n):
        np.testing.assert_array_equal(r.hbm(f"Y{c}").reshape(-1), exp)


@given(st.sampled_from([2, 4]), st.integers(1, 4))
def test_reduce_scatter_chunks(n: int, f: int) -> None:
    p, x = collective_program(n, "reduce_scatter", 4 * f * n, 4 * f)
    r = run(p, x)
    tot = np.sum(np.stack([x[f"X{c}"].reshape(-1) for c in range(n)]), axis=0)
    for c in range(n):
        np.testing.assert_array_equal(r.hbm(f"Y{c}").reshape(-1), tot[c * 4 * f:(c + 1) * 4 * f])


def test_group_rank_is_position_in_group() -> None:
    p, x = collective_program(2, "all_gather", 4, 8)
    p.groups["g"] = (1, 0)  # rank 0 is core 1
    r = run(p, x)
    np.testing.assert_array_equal(r.hbm("Y0").reshape(-1), np.concatenate([x["X1"].reshape(-1),
                                                                            x["X0"].reshape(-1)]))


def test_collective_mismatch_is_an_error() -> None:
    p = Program(2, 2)
    p.add_group("g", [0, 1])
    p.append(mk("all_reduce", t(4, 64), t(4), core=0, group="g"))
    p.append(mk("all_gather", t(8, 64), t(4), core=1, group="g"))
    with pytest.raises(InterpError, match="collective mismatch on group 'g'.*all_reduce op=add.*all_gather"):
        run(p, {})
    p = Program(2, 2)
    p.add_group("g", [0, 1])
    p.append(mk("all_reduce", t(4, 64), t(4), core=0, group="g"))
    p.append(mk("all_reduce", t(2, 64), t(2), core=1, group="g"))
    with pytest.raises(InterpError, match="has 16 src elements but instruction 1 on core 1 has 8"):
        run(p, {})


def test_collective_waits_for_member_and_other_group_first() -> None:
    """Core 1 first joins group h (with core 2), then g (with core 0): g waits, h runs, then g."""
    p = Program(3, 3)
    p.add_group("g", [0, 1])
    p.add_group("h", [1, 2])
    for c in range(3):
        p.append(mk("memset", t(1), value=float(c + 1), core=c, signals=[(f"m{c}", 1)]))
    p.append(mk("all_reduce", t(1, 64), t(1), core=0, group="g", waits=[("m0", 1)]))
    p.append(mk("all_reduce", t(1, 32), t(1), core=1, group="h", waits=[("m1", 1)]))
    p.append(mk("all_reduce", t(1, 64), t(1, 32), core=1, group="g"))
    p.append(mk("all_reduce", t(1, 32), t(1), core=2, group="h", waits=[("m2", 1)]))
    r = run(p, {})
    assert r.read(t(1, 32), core=1)[0, 0] == 5.0  # h: 2 + 3
    assert r.read(t(1, 64), core=0)[0, 0] == 6.0  # g: 1 + 5
    assert r.read(t(1, 64), core=1)[0, 0] == 6.0


def test_collective_missing_member_deadlocks() -> None:
    p = Program(2, 2)
    p.add_group("g", [0, 1])
    p.append(mk("all_reduce", t(4, 64), t(4), core=0, group="g"))
    with pytest.raises(DeadlockError, match=r"all_reduce\) waits for group 'g' members: core 1 cc\[0\] \(no "):
        run(p, {})


# ---- send / recv --------------------------------------------------------------------------------

def test_send_recv_pairs_in_order_by_tag() -> None:
    p = Program(2, 1)
    for k in range(3):
        p.append(mk("memset", t(2, 8 * k), value=float(k + 1), core=0, signals=[("m", 1)]))
    # core 0 sends tag 7 then tag 0 then tag 7; core 1 receives tag 0 first on queue 1, tag 7 twice on queue 0
    p.append(mk("send", t(2, 0), core=0, peer=1, tag=7, waits=[("m", 3)]))
    p.append(mk("send", t(2, 8), core=0, peer=1, tag=0))
    p.append(mk("send", t(2, 16), core=0, peer=1, tag=7))
    p.append(mk("recv", sbuf(4, 2, DType.bf16, offset=0), core=1, queue=0, peer=0, tag=7))
    p.append(mk("recv", sbuf(4, 2, DType.bf16, offset=8), core=1, queue=0, peer=0, tag=7))
    p.append(mk("recv", sbuf(4, 2, DType.bf16, offset=16), core=1, queue=1, peer=0, tag=0))
    r = run(p, {})
    assert r.read(sbuf(4, 2, DType.bf16, offset=0), core=1).astype(np.float32).max() == 1.0
    assert r.read(sbuf(4, 2, DType.bf16, offset=8), core=1).astype(np.float32).min() == 3.0
    assert np.all(r.read(sbuf(4, 2, DType.bf16, offset=16), core=1).astype(np.float32) == 2.0)
    assert r.read(sbuf(4, 2, DType.bf16, offset=0), core=1).dtype == ml_dtypes.bfloat16


def test_send_recv_unmatched_and_size_mismatch() -> None:
    p = Program(2, 1)
    p.append(mk("send", t(2), core=0, peer=1, tag=1))
    p.append(mk("recv", t(2), core=1, peer=0, tag=2))
    with pytest.raises(DeadlockError, match=r"send\) waits for a matching recv on core 1 with tag 1"):
        run(p, {})
    p = Program(2, 1)
    p.append(mk("send", t(2), core=0, peer=1))
    p.append(mk("recv", t(3), core=1, peer=0))
    with pytest.raises(InterpError, match="sends 8 elements but .* receives 12"):
        run(p, {})


def test_hbm_of_another_chip_is_unreachable() -> None:
    p = Program(2, 1)
    p.add_tensor("X", F32, (4, 4), "scratch", chip=0)
    p.append(mk("dma_copy", t(4), hbm("X", 4, 4, F32), core=1))
    with pytest.raises(InterpError, match="core 1 is on chip 1 and cannot address HBM tensor 'X' on chip 0"):
        run(p, {})


def test_collectives_convert_dtypes_and_reach_hbm() -> None:
    """all_gather copies bits when dtypes match and casts through fp32 otherwise; operands may be in HBM."""
    p = Program(2, 1)
    p.add_group("g", [0, 1])
    p.add_tensor("O0", DType.bf16, (2, 2), "output", chip=0)
    p.add_tensor("O1", F32, (2, 2), "output", chip=1)
    p.append(mk("memset", sbuf(1, 2, DType.bf16), value=1.00390625, core=0, signals=[("a", 1)]))  # bf16: 1.0
    p.append(mk("memset", sbuf(1, 2, F32), value=1.00390625, core=1, signals=[("b", 1)]))  # exact in fp32
    p.append(mk("all_gather", hbm("O0", 2, 2, DType.bf16), sbuf(1, 2, DType.bf16), core=0, group="g",
                waits=[("a", 1)]))
    p.append(mk("all_gather", hbm("O1", 2, 2, F32), sbuf(1, 2, F32), core=1, group="g", waits=[("b", 1)]))
    r = run(p, {})
    np.testing.assert_array_equal(r.hbm("O0").astype(np.float64), [[1.0, 1.0], [1.0, 1.0]])  # RNE to bf16
    np.testing.assert_array_equal(r.hbm("O1"), [[1.0, 1.0], [1.00390625, 1.00390625]])


def test_every_opcode_has_a_semantics_test() -> None:
    """Each opcode of the table is exercised by name in the interpreter's property tests."""
    from pathlib import Path

    here = Path(__file__).parent
    text = (here / "test_interp_ops.py").read_text() + (here / "test_interp_sync.py").read_text()
    missing = [op.name for op in Op if f'"{op.name}"' not in text]
    assert not missing, f"opcodes without an interpreter test: {missing}"
