"""Validation against a chip config (isa/validate.py): legal programs pass; every deliberately broken
operand is reported with the right instruction index and field (hypothesis); messages name the limit."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infsim.config.loader import load_chip
from infsim.config.schema import ChipConfig
from infsim.isa import (
    AccessPattern,
    DType,
    Engine,
    Instruction,
    Op,
    Program,
    Space,
    ValidationError,
    hbm,
    make,
    psum,
    sbuf,
)
from infsim.isa.opcodes import OPSPECS
from infsim.isa.program import AP_DTYPE, INSTR_DTYPE
from infsim.isa.validate import Problem, check, validate

# inf2 with 16 DMA queues per core (the preset has 256, all a u8 queue field can name): queue-range
# violations stay expressible
CHIP = load_chip("inf2", ["dma.queues_per_core=16"])
SBUF_BPP = CHIP.sbuf.bytes_per_partition
PSUM_BPP = CHIP.psum.bytes_per_partition
BANK = PSUM_BPP // CHIP.psum.banks


def ins(opcode: str, /, *operands: AccessPattern | None, engine: str | None = None, core: int = 0, queue: int = 0,
        waits: tuple[tuple[str, int], ...] = (), signals: tuple[tuple[str, int], ...] = (),
        **imms: object) -> Instruction:
    """Like ``make`` but accepts an immediate called ``op`` (tensor_tensor, tensor_reduce)."""
    o = Op[opcode]
    spec = OPSPECS[o]
    ops = tuple(operands) + (None,) * (len(spec.slots) - len(operands))
    return Instruction(o, ops, dict(imms), Engine[engine] if engine else spec.engine, core, queue, waits, signals)


def new_program(num_cores: int = 4, cores_per_chip: int = 2) -> Program:
    p = Program(num_cores, cores_per_chip)
    p.add_tensor("A", "bf16", (512, 1024), "input")
    p.add_tensor("B", "bf16", (512, 1024), "input", chip=1)
    p.add_tensor("C", "fp32", (512, 512), "output")
    p.add_group("g", [0, 1])
    p.add_group("all", [0, 1, 2, 3])
    return p


def fields_at(problems: list[Problem], index: int | None) -> set[str]:
    return {p.field for p in problems if p.index == index}


# ---- legal programs ------------------------------------------------------------------------------

def gemm_program() -> Program:
    """C[128, 1024] = A[0:128, 0:256]^T-tiles ... : a K-tiled GEMM with double-buffered DMA and evictions."""
    p = new_program()
    bf = DType.bf16
    kt = 2  # K tiles of 128
    for n in range(2):  # N tiles of 512
        for k in range(kt):
            buf = (n * kt + k) % 2
            p.append(make("dma_copy", sbuf(128, 128, bf, offset=buf * 256), hbm("A", 128, 128, bf, row_stride=1024,
                                                                                  offset=k * 128 * 1024 * 2),
                          queue=buf, signals=[("ld", 1)]))
            p.append(make("dma_copy", sbuf(128, 512, bf, offset=4096 + buf * 1024),
                          hbm("A", 128, 512, bf, row_stride=1024, offset=(k * 128 * 1024 + n * 512) * 2),
                          queue=2 + buf, signals=[("ld", 1)]))
            step = n * kt + k + 1
            p.append(make("matmul", psum(128, 512, offset=n * BANK), sbuf(128, 128, bf, offset=buf * 256),
                          sbuf(128, 512, bf, offset=4096 + buf * 1024), accumulate=k > 0,
                          waits=[("ld", 2 * step)], signals=[("mm", 1)]))
        p.append(make("tensor_copy", sbuf(128, 512, DType.fp32, offset=8192), psum(128, 512, offset=n * BANK),
                      waits=[("mm", (n + 1) * kt)], signals=[("cp", 1)]))
        p.append(make("dma_copy", hbm("C", 128, 512, DType.fp32, row_stride=512, offset=0),
                      sbuf(128, 512, DType.fp32, offset=8192), queue=5, waits=[("cp", n + 1)]))
    return p


def softmax_program() -> Program:
    """Row softmax of a [128, 256] fp32 tile: max, subtract, exp with sum, reciprocal, scale."""
    p = new_program()
    f32 = DType.fp32
    x = sbuf(128, 256, f32)
    mx = sbuf(128, 1, f32, offset=2048)
    sm = sbuf(128, 1, f32, offset=2052)
    e = sbuf(128, 256, f32, offset=4096)
    p.append(make("dma_copy", sbuf(128, 256, DType.bf16, offset=16384), hbm("A", 128, 256, DType.bf16,
                                                                            row_stride=1024), signals=[("in", 1)]))
    p.append(make("tensor_copy", x, sbuf(128, 256, DType.bf16, offset=16384), waits=[("in", 1)]))
    p.append(ins("tensor_reduce", mx, x, op="max", axes=1))
    p.append(ins("tensor_scalar", x, x, mx, op0="sub", signals=(("v", 1),)))
    p.append(make("activate", e, x, None, None, sm, func="exp", waits=[("v", 1)], signals=[("s", 1)]))
    p.append(make("activate", sm, sm, func="reciprocal", waits=[("s", 1)], signals=[("s2", 1)]))
    p.append(ins("tensor_scalar", e, e, sm, op0="mul", engine="vector", waits=(("s2", 1),)))
    p.append(make("iota", sbuf(32, (4, 8), DType.int32, start=96, offset=8192), engine="gpsimd",
                  multipliers=(8, 1), channel_multiplier=1))
    p.append(ins("tensor_tensor", sbuf(64, 16, f32, start=64, offset=9000), sbuf(64, 16, f32, start=64),
                 psum(64, 16, start=64), op="add"))
    p.append(ins("select", sbuf(32, 8, f32, start=32), sbuf(32, 8, DType.uint8, start=32, offset=100),
                 sbuf(32, 8, f32, start=32, offset=200), sbuf(32, 8, f32, start=32, offset=300)))
    p.append(make("transpose", psum(64, 128, offset=BANK), sbuf(128, 64, DType.bf16, offset=20000)))
    p.append(make("memset", psum(128, 512, offset=7 * BANK), value=1.0))
    return p


def collective_program() -> Program:
    p = new_program()
    for c in range(4):
        p.append(make("all_reduce", sbuf(128, 64, DType.fp32), sbuf(128, 64, DType.fp32, offset=256), group="all",
                      core=c))
        p.append(make("all_gather", sbuf(128, 256, DType.fp32), sbuf(128, 64, DType.fp32, offset=1024),
                      group="all", core=c, queue=1))
        p.append(make("reduce_scatter", sbuf(128, 16, DType.fp32), sbuf(128, 64, DType.fp32, offset=2048),
                      group="all", core=c, queue=2))
        p.append(make("barrier", sem="bar", count=4, core=c))
        p.append(make("barrier", sem="bar", count=4, core=c))
    p.append(make("send", sbuf(1, 16, DType.fp32), peer=1, core=0))
    p.append(make("recv", sbuf(1, 16, DType.fp32), peer=0, core=1))
    tb = "B"
    p.append(make("dma_copy", sbuf(128, 128, DType.bf16), hbm(tb, 128, 128, DType.bf16, row_stride=1024), core=2))
    return p


@pytest.mark.parametrize("build", [gemm_program, softmax_program, collective_program])
def test_legal_programs_pass(build: Callable[[], Program]) -> None:
    p = build()
    assert check(p, CHIP) == []
    validate(p, CHIP)  # does not raise


def test_empty_program() -> None:
    assert check(Program(2, 2), CHIP) == []


# ---- problems and their messages -----------------------------------------------------------------

def test_problem_str_and_validation_error() -> None:
    p = new_program()
    p.append(make("nop", engine="sync"))
    p.append(make("matmul", psum(128, 128), sbuf(128, 128, DType.bf16), sbuf(128, 128, DType.bf16)))
    # K = 129 partitions (the AP itself allows it; the chip does not)
    p.append(make("matmul", psum(128, 128), AccessPattern(Space.sbuf, DType.bf16, 0, 129, 0, ((1, 128),)),
                  AccessPattern(Space.sbuf, DType.bf16, 0, 129, 0, ((1, 128),))))
    probs = check(p, CHIP)
    assert probs and all(q.index == 2 for q in probs)
    texts = [str(q) for q in probs]
    assert "instruction 2 (matmul, c0.tensor): stationary.partitions: K=129 exceeds tensor_engine.rows 128" in texts
    assert "instruction 2 (matmul, c0.tensor): stationary.partitions: 129 exceeds sbuf.partitions 128" in texts
    with pytest.raises(ValidationError) as ei:
        validate(p, CHIP)
    assert ei.value.problems == texts
    assert ei.value.items == probs
    assert str(ei.value).startswith(texts[0])


def test_program_level_problems() -> None:
    p = Program(4, 4)
    p.add_tensor("huge", "fp32", (9 * 2**30,))  # 36 GiB > 32 GiB
    p.add_tensor("far", "fp32", (4,), chip=3)
    p.add_group("g", [0, 7])
    probs = check(p, CHIP)
    assert all(q.index is None for q in probs)
    by = {q.field: q.message for q in probs}
    assert "exceeds hbm.capacity_gib 32" in by["chip 0 hbm"]
    assert "cores per chip" in by["cores_per_chip"]
    assert by["tensor far"].startswith("chip 3 not in [0, 1)")
    assert "member core 7" in by["group g"]
    assert str(next(q for q in probs if q.field == "tensor far")).startswith("tensor far: chip 3")


@pytest.mark.parametrize(("cores", "per_chip", "ok"), [(1, 1, True), (2, 2, True), (2, 1, False), (4, 4, False),
                                                     (48, 2, True), (3, 3, False)])
def test_cores_per_chip(cores: int, per_chip: int, ok: bool) -> None:
    probs = check(Program(cores, per_chip), CHIP)
    assert (probs == []) == ok
    assert all(q.field == "cores_per_chip" for q in probs)


def test_multichip_program_is_legal() -> None:
    p = Program(48, 2)  # more cores than one chip holds: fine
    p.add_tensor("w", "bf16", (128, 128), chip=23)
    p.append(make("dma_copy", sbuf(128, 128, DType.bf16), hbm("w", 128, 128, DType.bf16), core=47))
    assert check(p, CHIP) == []


def test_messages() -> None:
    p = new_program()
    p.append(make("matmul", psum(128, 513), sbuf(128, 128, DType.bf16), sbuf(128, 513, DType.bf16)))
    p.append(make("dma_copy", sbuf(128, 128, DType.bf16), hbm("A", 128, 128, DType.bf16, offset=2 * 512 * 1024 - 2),
                  queue=16))
    p.append(make("tensor_copy", sbuf(32, 8, DType.fp32, start=16), sbuf(32, 8, DType.fp32, start=32)))
    p.append(make("memset", sbuf(1, 4, DType.fp32, offset=SBUF_BPP - 8)))
    p.append(make("tensor_copy", psum(128, 4097 // 4 * 4 + 4), sbuf(128, 4100, DType.fp32)))
    p.append(make("nop", waits=[("never", 1)]))
    got = {(q.index, q.field): q.message for q in check(p, CHIP)}
    assert got[(0, "moving.free_size")] == "N=513 exceeds tensor_engine.moving_free_max 512"
    assert "cross a PSUM bank boundary" in got[(0, "dst.extent")]
    assert got[(1, "queue")] == "16 exceeds dma.queues_per_core 16 (queues 0..15)"
    assert got[(1, "src.extent")].endswith("outside tensor A [0, 1048576)")
    assert got[(2, "dst.partition_start")] == "16 not a multiple of 32 for 32 partitions (sbuf.partition_start_rules)"
    assert (2, "src.partition_start") not in got
    assert got[(3, "dst.extent")] == f"bytes [{SBUF_BPP - 8}, {SBUF_BPP + 8}) of each partition outside [0, " \
                                     f"{SBUF_BPP}) (sbuf.bytes_per_partition)"
    assert got[(4, "dst.free_size")] == "4100 elements per partition exceed psum.max_free_elements 4096"
    assert "can never be satisfied (deadlock)" in got[(5, "wait[0]")]
    assert "never >= 1" in got[(5, "wait[0]")]


def test_dma_is_exempt_from_partition_start_rule() -> None:
    p = new_program()
    p.append(make("dma_copy", sbuf(5, 16, DType.bf16, start=3), hbm("A", 5, 16, DType.bf16)))
    assert check(p, CHIP) == []


def test_semaphore_totals_and_barriers() -> None:
    p = new_program()
    p.append(make("nop", signals=[("s", 2)], core=0))
    p.append(make("nop", signals=[("s", 1)], core=1, engine="vector"))
    p.append(make("nop", waits=[("s", 3)], core=2))  # satisfiable: total 3
    p.append(make("nop", waits=[("s", 4)], core=3))  # never
    p.append(make("barrier", sem="b", count=2, core=0))
    p.append(make("barrier", sem="b", count=2, core=1))
    p.append(make("barrier", sem="b", count=3, core=2))  # inconsistent count
    p.append(make("barrier", sem="c", count=2, core=0))
    p.append(make("barrier", sem="c", count=2, core=0))  # 2nd barrier of stream needs 4 arrivals, only 2
    p.append(make("barrier", sem="d", count=0, core=0))
    probs = check(p, CHIP)
    got = {(q.index, q.field) for q in probs}
    assert got == {(3, "wait[0]"), (6, "count"), (8, "count"), (9, "count")}, probs


def test_collective_checks() -> None:
    p = new_program()
    p.append(make("all_gather", sbuf(1, 64, DType.fp32), sbuf(1, 16, DType.fp32, offset=512), group="g", core=0))
    p.append(make("all_gather", sbuf(1, 64, DType.fp32), sbuf(1, 32, DType.fp32, offset=512), group="g", core=2))
    p.append(make("reduce_scatter", sbuf(1, 64, DType.fp32), sbuf(1, 64, DType.fp32, offset=512), group="g"))
    p.append(make("all_reduce", sbuf(1, 64, DType.fp32), sbuf(1, 63, DType.fp32, offset=512), group="g"))
    p.append(make("send", sbuf(1, 64, DType.fp32), peer=4))
    p.append(make("recv", sbuf(1, 64, DType.fp32), peer=3))
    got = {(q.index, q.field): q.message for q in check(p, CHIP)}
    assert got[(0, "dst.num_elements")] == "64 != 2 members x src elements 16"
    assert got[(1, "group")] == "core 2 is not a member of group g [0, 1]"
    assert (1, "dst.num_elements") not in got
    assert got[(2, "src.num_elements")] == "64 != 2 members x dst elements 64"
    assert got[(3, "dst.num_elements")] == "64 != src elements 63"
    assert got[(4, "peer")] == "4 not in [0, 4) (num_cores)"
    assert (5, "peer") not in got


def test_reduce_iota_transpose_rules() -> None:
    p = new_program()
    f32 = DType.fp32
    p.append(ins("tensor_reduce", sbuf(4, 3, f32), sbuf(4, (3, 5), f32, offset=64), op="add", axes=1))  # ok
    p.append(ins("tensor_reduce", sbuf(4, 1, f32), sbuf(4, (3, 5), f32, offset=64), op="add", axes=2))  # ok
    p.append(ins("tensor_reduce", sbuf(4, 1, f32), sbuf(4, (3, 5), f32, offset=64), op="add", axes=3))
    p.append(ins("tensor_reduce", sbuf(4, 5, f32), sbuf(4, (3, 5), f32, offset=64), op="add", axes=1))
    p.append(make("iota", sbuf(4, (3, 5), f32), multipliers=(1,)))
    p.append(make("transpose", psum(64, 128), sbuf(64, 128, DType.bf16)))
    p.append(make("transpose", psum(128, 64), sbuf(64, 129, DType.bf16)))
    got = {(q.index, q.field) for q in check(p, CHIP)}
    assert got == {(2, "axes"), (3, "dst.shape"), (4, "multipliers"), (5, "dst.partitions"), (5, "dst.free_size"),
                   (6, "src.free_size"), (6, "dst.partitions")}


def test_tensor_engine_dtype_support() -> None:
    chip = load_chip("inf2", {"tensor_engine.macs_per_pe_per_cycle": {"bf16": 1.0}})
    p = new_program()
    p.append(make("matmul", psum(16, 16), sbuf(16, 16, DType.fp16), sbuf(16, 16, DType.fp16, offset=64)))
    got = {(q.index, q.field): q.message for q in check(p, chip)}
    assert got[(0, "stationary.dtype")].startswith("fp16 not supported by the tensor engine")
    assert check(p, CHIP) == []


# ---- hypothesis: a legal instruction with exactly one rule broken --------------------------------

def _parts(draw: st.DrawFn, max_p: int = 128) -> tuple[int, int]:
    """A legal (partitions, start) pair under the NC-v2 partition-start rules."""
    n = draw(st.integers(1, max_p))
    if n > 64:
        return n, 0
    if n > 32:
        return n, draw(st.sampled_from([0, 64]))
    return n, draw(st.sampled_from([0, 32, 64, 96]))


KINDS = ("matmul", "transpose", "tensor_tensor", "tensor_scalar", "tensor_copy", "activate", "dma_copy", "memset")
_ONCHIP_KINDS = tuple(k for k in KINDS if k != "dma_copy")
# rule to break -> opcodes it applies to
RULES: dict[str, tuple[str, ...]] = {
    "engine": KINDS,
    "unsatisfiable_wait": KINDS,
    "queue": ("dma_copy",),
    "hbm_extent": ("dma_copy",),
    "other_chip": ("dma_copy",),
    "sbuf_extent": ("dma_copy",),
    "too_many_partitions": _ONCHIP_KINDS,
    "misaligned_start": _ONCHIP_KINDS,
    "extent": _ONCHIP_KINDS,
    "wrong_space": _ONCHIP_KINDS,
    "psum_dtype": ("matmul", "transpose"),
    "K": ("matmul",),
    "M": ("matmul",),
    "N": ("matmul",),
    "shape": ("tensor_tensor", "tensor_copy", "activate", "tensor_scalar"),
}


@st.composite
def legal_instruction(draw: st.DrawFn, kinds: tuple[str, ...] = ()) -> tuple[Instruction, dict[str, str]]:
    """A legal instruction (opcode drawn from ``kinds``, default all) and its compute-engine on-chip slots."""
    kind = draw(st.sampled_from(kinds or KINDS))
    f = draw(st.integers(1, 256))
    if kind == "matmul":
        k, _ = _parts(draw)
        m = draw(st.integers(1, 128))
        n = draw(st.integers(1, 512))
        dt = draw(st.sampled_from([DType.bf16, DType.fp16, DType.fp8_e4m3, DType.int8, DType.fp32]))
        bank = draw(st.integers(0, CHIP.psum.banks - 1))
        return make("matmul", psum(m, n, offset=bank * BANK), sbuf(k, m, dt), sbuf(k, n, dt, offset=4096),
                    accumulate=draw(st.booleans())), {"dst": "psum", "stationary": "sbuf", "moving": "sbuf"}
    if kind == "transpose":
        pp, start = _parts(draw)
        ff = draw(st.integers(1, 128))
        return (make("transpose", psum(ff, pp), sbuf(pp, ff, DType.bf16, start=start)),
                {"dst": "psum", "src": "sbuf"})
    pp, start = _parts(draw)
    dt = draw(st.sampled_from(list(DType)))
    if kind == "tensor_tensor":
        in0_psum = draw(st.booleans())
        a = psum(pp, f, start=start) if in0_psum else sbuf(pp, f, dt, start=start, offset=2048)
        return (ins("tensor_tensor", sbuf(pp, f, dt, start=start), a, sbuf(pp, f, dt, start=start, offset=4096),
                    op="add", engine=draw(st.sampled_from(["vector"] if in0_psum else ["vector", "gpsimd"]))),
                {"dst": "sbuf", "in0": "psum" if in0_psum else "sbuf", "in1": "sbuf"})
    if kind == "tensor_scalar":
        return (ins("tensor_scalar", sbuf(pp, f, dt, start=start), sbuf(pp, f, dt, start=start, offset=2048),
                    sbuf(pp, 1, DType.fp32, start=start, offset=8192), op0="mul",
                    engine=draw(st.sampled_from(["vector", "gpsimd", "scalar"]))),
                {"dst": "sbuf", "src": "sbuf", "scalar0": "sbuf"})
    if kind == "tensor_copy":
        return (make("tensor_copy", sbuf(pp, f, dt, start=start), psum(pp, f, start=start)),
                {"dst": "sbuf", "src": "psum"})
    if kind == "activate":
        return (make("activate", sbuf(pp, f, dt, start=start), sbuf(pp, f, DType.bf16, start=start, offset=2048),
                     sbuf(pp, 1, DType.fp32, start=start, offset=8192), func="gelu"),
                {"dst": "sbuf", "src": "sbuf", "bias": "sbuf"})
    if kind == "memset":
        return make("memset", sbuf(pp, f, dt, start=start), value=2.0), {"dst": "sbuf"}
    # dma_copy HBM -> SBUF (no partition-start rule for DMA)
    rows = draw(st.integers(1, 128))
    return (make("dma_copy", sbuf(rows, f, DType.bf16, start=draw(st.integers(0, 128 - rows))),
                 hbm("A", rows, f, DType.bf16, row_stride=1024, offset=2 * draw(st.integers(0, 1024 - f))),
                 queue=draw(st.integers(0, 15))), {})


def _replace(i: Instruction, slot: str, ap: AccessPattern) -> Instruction:
    names = [s.name for s in i.spec.slots]
    ops = list(i.operands)
    ops[names.index(slot)] = ap
    return Instruction(i.op, tuple(ops), i.imms, i.engine, i.core, i.queue, i.waits, i.signals)


Mutation = tuple[Instruction, str, Callable[[Program, int], None] | None]


@st.composite
def broken_instruction(draw: st.DrawFn, rule: str) -> Mutation:
    """(instruction, expected field, optional post-append record patch) with exactly ``rule`` broken."""
    i, slots = draw(legal_instruction(RULES[rule]))
    slot = draw(st.sampled_from(sorted(slots))) if slots else ""
    ap = i.operand(slot) if slot else None
    if rule == "engine":
        bad = draw(st.sampled_from([e for e in Engine if e not in i.spec.engines]))

        def patch(p: Program, k: int, bad: Engine = bad) -> None:
            p._instr["engine"][k] = int(bad)

        return i, "engine", patch
    if rule == "unsatisfiable_wait":
        v = draw(st.integers(4, 2**32 - 1))  # the prefix signals 'pre' at most 3 times
        return Instruction(i.op, i.operands, i.imms, i.engine, i.core, i.queue, (("pre", v),), i.signals), \
            "wait[0]", None
    if rule == "queue":
        return make("dma_copy", *i.operands, queue=draw(st.integers(16, 255))), "queue", None
    if rule == "hbm_extent":
        src = i.operand("src")
        assert src is not None
        t_bytes = 512 * 1024 * 2
        lo, hi = src.byte_extent()
        off = src.offset + t_bytes - hi + 2 * draw(st.integers(1, 1000))
        return _replace(i, "src", src.with_(offset=off)), "src.extent", None
    if rule == "other_chip":
        src = i.operand("src")
        assert src is not None
        return _replace(i, "src", src.with_(tensor="B")), "src.tensor", None
    if rule == "sbuf_extent":
        dst = i.operand("dst")
        assert dst is not None
        lo, hi = dst.byte_extent()
        return _replace(i, "dst", dst.with_(offset=SBUF_BPP - (hi - lo) + draw(st.integers(1, 4096)))), \
            "dst.extent", None
    assert ap is not None
    if rule == "too_many_partitions":
        n = draw(st.integers(129, 1000))
        return _replace(i, slot, ap.with_(partitions=n, partition_start=0)), f"{slot}.partitions", None
    if rule == "misaligned_start":
        n = ap.partitions
        if n > 64 and n < 128:
            start = draw(st.integers(1, 128 - n))
        elif n == 128:
            start = draw(st.integers(1, 127))  # also runs past the end: same field
        else:
            align = 64 if n > 32 else 32
            start = draw(st.integers(0, 128 - n).filter(lambda s: s % align != 0))
        return _replace(i, slot, ap.with_(partition_start=start)), f"{slot}.partition_start", None
    if rule == "extent":
        bpp = SBUF_BPP if ap.space == Space.sbuf else PSUM_BPP
        lo, hi = ap.byte_extent()
        off = ap.offset + bpp - hi + ap.dtype.itemsize * draw(st.integers(1, 64))
        return _replace(i, slot, ap.with_(offset=off)), f"{slot}.extent", None
    if rule == "wrong_space":
        allowed = i.spec.slot(slot).spaces
        sp = draw(st.sampled_from(sorted(set(Space) - allowed)))
        if sp == Space.hbm:
            new = hbm("A", ap.partitions, ap.sizes, ap.dtype, row_stride=1)
        else:
            new = ap.with_(space=sp, offset=0)
        return _replace(i, slot, new), f"{slot}.space", None
    if rule == "psum_dtype":
        dst = i.operand("dst")
        assert dst is not None
        return _replace(i, "dst", dst.with_(dtype=draw(st.sampled_from([d for d in DType if d != DType.fp32])))), \
            "dst.dtype", None
    if rule == "K":
        s, m = i.operand("stationary"), i.operand("moving")
        assert s is not None and m is not None
        k = draw(st.integers(129, 4096))
        return _replace(_replace(i, "stationary", s.with_(partitions=k)), "moving", m.with_(partitions=k)), \
            "stationary.partitions", None
    if rule == "M":
        s = i.operand("stationary")
        assert s is not None
        return _replace(i, "stationary", s.with_(dims=((1, draw(st.integers(129, 4096))),))), \
            "stationary.free_size", None
    if rule == "N":
        m = i.operand("moving")
        assert m is not None
        return _replace(i, "moving", m.with_(dims=((1, draw(st.integers(513, 8192))),))), "moving.free_size", None
    # shape: change the free size of the second data operand
    other = {"tensor_tensor": "in1", "tensor_copy": "src", "activate": "src", "tensor_scalar": "src"}[i.op.name]
    o = i.operand(other)
    assert o is not None
    nf = draw(st.integers(1, 256).filter(lambda x: x != o.free_size))
    return _replace(i, other, o.with_(dims=((1, nf),))), f"{other}.shape", None


@given(legal=legal_instruction(), prefix=st.integers(0, 3))
def test_generated_legal_instructions_pass(legal: tuple[Instruction, dict[str, str]], prefix: int) -> None:
    p = new_program()
    for _ in range(prefix):
        p.append(make("nop", signals=[("pre", 1)]))
    p.append(legal[0])
    assert check(p, CHIP) == []


@pytest.mark.parametrize("rule", sorted(RULES))
@given(data=st.data(), prefix=st.integers(0, 3), suffix=st.integers(0, 2))
def test_generated_illegal_operands_are_reported(rule: str, data: st.DataObject, prefix: int, suffix: int) -> None:
    inst, field, patch = data.draw(broken_instruction(rule))
    p = new_program()
    for _ in range(prefix):
        p.append(make("nop", signals=[("pre", 1)]))
    k = p.append(inst)
    if patch is not None:
        patch(p, k)
    for _ in range(suffix):
        p.append(make("nop", engine="vector", waits=[("pre", prefix)]))
    probs = check(p, CHIP)
    assert field in fields_at(probs, k), (field, [str(q) for q in probs])
    assert all(q.index == k for q in probs), [str(q) for q in probs]
    with pytest.raises(ValidationError):
        validate(p, CHIP)


# ---- scale -----------------------------------------------------------------------------------------

def test_large_program_is_fast() -> None:
    p = gemm_program()
    base = p.instr.copy()
    reps = 200_000 // len(base)
    p.append_records(np.tile(base, reps - 1))
    t0 = time.perf_counter()
    probs = check(p, CHIP)
    dt = time.perf_counter() - t0
    # the tiled program repeats waits without more signals -> none beyond the totals; still legal
    assert probs == []
    assert dt < 10.0


def test_chip_config_defaults_keep_rules_off() -> None:
    data = CHIP.model_dump()
    for mem in ("sbuf", "psum"):
        for f in ("partition_start_rules", "max_free_elements", "no_access_engines"):
            data[mem].pop(f)
    chip = ChipConfig.model_validate(data)
    p = new_program()
    p.append(make("tensor_copy", sbuf(32, 8, DType.fp32, start=5), sbuf(32, 8, DType.fp32, start=7)))
    p.append(ins("tensor_tensor", sbuf(4, 4, DType.fp32), psum(4, 4), sbuf(4, 4, DType.fp32), op="add",
                 engine="gpsimd"))
    assert check(p, chip) == []
    assert {q.index for q in check(p, CHIP)} == {0, 1}


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), naps=st.integers(1, 20))
def test_corrupt_records_give_problems_not_crashes(seed: int, n: int, naps: int) -> None:
    """Records filled by a generator (append_records) may hold any bits: check reports, never raises."""
    rng = np.random.default_rng(seed)
    p = new_program()
    for k in range(naps):
        p.ap_id(sbuf(1 + k, 1 + k, DType.fp32))
    raw = rng.integers(0, 256, naps * AP_DTYPE.itemsize, dtype=np.uint8)
    aps = np.frombuffer(raw.tobytes(), AP_DTYPE).copy()
    aps["ndims"] %= 6
    p._aps[:naps] = aps
    recs = np.frombuffer(rng.integers(0, 256, n * INSTR_DTYPE.itemsize, dtype=np.uint8).tobytes(), INSTR_DTYPE).copy()
    small = rng.random(n) < 0.7  # mostly plausible opcodes, engines and operand indices
    recs["op"][small] %= len(Op)
    recs["engine"][small] %= len(Engine)
    recs["opnd"][small] %= naps + 1
    recs["wsem"][small] %= 3
    p.append_records(recs)
    probs = check(p, CHIP)
    assert all(isinstance(q, Problem) and str(q) for q in probs)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), naps=st.integers(1, 20), chunk=st.integers(1, 7))
def test_chunked_check_reports_the_same_problems(seed: int, n: int, naps: int, chunk: int) -> None:
    """Checking in chunks of instructions (bounded memory) gives the same problems, at the same instruction
    indices, in the same order, as one pass; on corrupt records (many problems of every kind) and on legal
    programs."""
    rng = np.random.default_rng(seed)
    p = new_program()
    for k in range(naps):
        p.ap_id(sbuf(1 + k, 1 + k, DType.fp32))
    recs = np.frombuffer(rng.integers(0, 256, n * INSTR_DTYPE.itemsize, dtype=np.uint8).tobytes(), INSTR_DTYPE).copy()
    small = rng.random(n) < 0.7
    recs["op"][small] %= len(Op)
    recs["engine"][small] %= len(Engine)
    recs["opnd"][small] %= naps + 1
    recs["wsem"][small] %= 3
    p.append_records(recs)
    one = check(p, CHIP, chunk=10**9)
    assert one  # random records break rules
    assert check(p, CHIP, chunk=chunk) == one
    for build in (gemm_program, softmax_program, collective_program):
        q = build()
        assert check(q, CHIP, chunk=chunk) == check(q, CHIP, chunk=10**9) == []


def test_chunk_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk"):
        check(gemm_program(), CHIP, chunk=0)


def _screen_cases() -> list[Instruction]:
    return [ins("tensor_copy", sbuf(32, 8, DType.fp32), sbuf(32, 8, DType.fp32, offset=64), engine="vector"),
            ins("tensor_copy", sbuf(32, 8, DType.fp32), psum(32, 8), engine="vector"),
            make("matmul", psum(16, 16), sbuf(16, 16, DType.fp16), sbuf(16, 16, DType.fp16, offset=64))]


def test_screened_check_engine_and_chip_rules() -> None:
    """Rules that depend on the engine or the chip config give the same problems screened or not: gpsimd
    reading PSUM, fp16 on a bf16-only tensor engine, an HBM tensor of another chip (single-chip group); and
    int32 extremes in an optional slot (out of range is reported, any negative index is absent)."""
    p = new_program()
    for q in _screen_cases():
        p.append(q)
    p.append(ins("tensor_copy", sbuf(32, 8, DType.fp32), psum(32, 8), engine="gpsimd"))
    p.append(make("dma_copy", sbuf(128, 128, DType.bf16), hbm("B", 128, 128, DType.bf16, row_stride=1024)))
    act = make("activate", sbuf(128, 64, DType.fp32), sbuf(128, 64, DType.fp32, offset=256), func="exp")
    p.append(act)
    p.append(act)
    recs = p.instr[-2:].copy()
    recs["opnd"][:, 2] = (2**31 - 1, -(2**31))  # optional bias: far out of range; absent (any negative)
    p.append_records(recs)
    for chip, fields in ((CHIP, {(3, "src.space"), (4, "src.tensor"), (7, "bias")}),
                         (CHIP_BF16_TE, {(2, "stationary.dtype"), (2, "moving.dtype"), (3, "src.space"),
                                         (4, "src.tensor"), (7, "bias")})):
        got = check(p, chip, screen=True)
        assert got == check(p, chip, screen=False)
        assert {(q.index, q.field) for q in got} == fields


#: inf2 whose tensor engine takes bf16 only (fp16/fp32/fp8/int8 operands break the tensor-engine dtype rule)
CHIP_BF16_TE = load_chip("inf2", {"tensor_engine.macs_per_pe_per_cycle": {"bf16": 1.0}})


@given(seed=st.integers(0, 2**32 - 1), build=st.sampled_from([gemm_program, softmax_program, collective_program]),
       reps=st.integers(1, 3), edits=st.integers(0, 12), bf16_te=st.booleans())
def test_screened_check_equals_every_rule_on_every_row(seed: int, build: Callable[[], Program], reps: int,
                                                       edits: int, bf16_te: bool) -> None:
    """The screen (operand-slot rules only on rows a table lookup cannot clear) finds exactly the problems of
    running every rule on every row, on legal programs with a few fields broken: an operand index (mostly an
    AP that breaks a rule: extent, partition start, dtype, chip; else any AP, absent, out of range), the engine
    (mostly another the opcode allows, e.g. gpsimd reading PSUM), the core (another chip: its HBM tensors on
    the wrong chip), the opcode; an operand in a slot the opcode does not have."""
    rng = np.random.default_rng(seed)
    p = build()
    for q in _screen_cases():  # legal on CHIP; edits of their engine or operands break engine-dependent rules
        p.append(q)
    recs = np.tile(p.instr.copy(), reps)
    naps0 = len(p.aps)
    for bad in (sbuf(128, 100_000, DType.fp32), sbuf(32, 8, DType.fp32, start=5), psum(128, 512, offset=BANK - 4),
                hbm("A", 128, 128, DType.bf16, row_stride=1024, offset=2**30), hbm("B", 128, 128, DType.bf16),
                hbm("A", 128, 128, DType.bf16), sbuf(128, 8, DType.int32), sbuf(128, 128, DType.fp16),
                psum(128, 8, dtype=DType.fp8_e5m2), psum(128, 64)):
        p.ap_id(bad)
    naps = len(p.aps)
    for _ in range(edits):
        r = int(rng.integers(len(recs)))
        kind = int(rng.integers(5))
        if kind <= 1:
            nslots = len(OPSPECS[Op(int(recs["op"][r]))].slots) if recs["op"][r] < len(Op) else 5
            k = int(rng.integers(nslots)) if kind == 0 and nslots else int(rng.integers(5))
            far = (2**31 - 1, -(2**31), naps + 1000)  # (int32 extremes: no overflow in the screen's indexing)
            recs["opnd"][r, k] = int(rng.integers(naps0, naps) if rng.random() < 0.6 else
                                     rng.integers(-2, naps + 2) if rng.random() < 0.8 else far[int(rng.integers(3))])
        elif kind == 2:
            allowed = OPSPECS[Op(int(recs["op"][r]))].engines if recs["op"][r] < len(Op) else ()
            pick = rng.random() < 0.7 and allowed
            recs["engine"][r] = int(allowed[int(rng.integers(len(allowed)))] if pick else rng.integers(len(Engine) + 1))
        elif kind == 3:
            recs["core"][r] = int(rng.integers(p.num_cores + 1))
        else:
            recs["op"][r] = int(rng.integers(len(Op)))
    p.append_records(recs)
    chip = CHIP_BF16_TE if bf16_te else CHIP
    assert check(p, chip, screen=True) == check(p, chip, screen=False)
