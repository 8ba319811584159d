"""Property tests of the reference interpreter, opcode by opcode: the specification of the ISA semantics.

Every test generates random legal operands (partition ranges, strided / broadcast / negative-stride
free patterns, dtypes) and compares :func:`infsim.isa.interp.run` with an independent numpy
formulation: operand tiles are gathered from the loaded SBUF regions with explicit index arithmetic
(not the interpreter's strided views), conversions use ``ml_dtypes``/numpy ``astype`` plus explicit
saturation, matmul uses ``np.matmul`` in float64, activations use ``math`` formulas.
"""

from __future__ import annotations

import math
from collections import defaultdict

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infsim.isa import AccessPattern, DType, Program, Space, hbm, sbuf
from infsim.isa import make as mk
from infsim.isa.interp import InterpError, run
from infsim.isa.opcodes import ActFunc, AluOp, ReduceOp

FLOATS = [DType.fp32, DType.bf16, DType.fp16, DType.fp8_e4m3, DType.fp8_e5m2]
INTS = [DType.int8, DType.uint8, DType.int32]
ALL = FLOATS + INTS
MATMUL_IN = [DType.fp32, DType.bf16, DType.fp16, DType.fp8_e4m3, DType.fp8_e5m2, DType.int8]


# ---- independent reference numerics -------------------------------------------------------------

def ref_cast(x: np.ndarray, dt: DType) -> np.ndarray:
    """The documented conversion rule, written directly with numpy / ml_dtypes."""
    x = np.asarray(x, np.float64)
    if dt.is_float:
        mx = float(ml_dtypes.finfo(dt.np).max)
        y = np.where(np.isnan(x), np.nan, np.clip(x, -mx, mx))
        return y.astype(np.float32).astype(dt.np)
    ii = np.iinfo(dt.np)
    y = np.where(np.isnan(x), 0.0, np.rint(x))
    return np.clip(y, ii.min, ii.max).astype(dt.np)


def random_values(rng: np.random.Generator, shape: tuple[int, ...], dt: DType, scale: float = 4.0,
                  special: bool = False) -> np.ndarray:
    """Random values representable in ``dt`` (optionally with inf/nan/extremes mixed in)."""
    if dt.is_float:
        x = rng.standard_normal(shape) * scale
        if special:
            mask = rng.random(shape) < 0.1
            pool = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30, 1e-30])
            x = np.where(mask, pool[rng.integers(0, len(pool), shape)], x)
        return ref_cast(x, dt)
    ii = np.iinfo(dt.np)
    lo, hi = max(ii.min, -100), min(ii.max, 100)
    return rng.integers(lo, hi + 1, shape).astype(dt.np)


def bytes_of(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x).tobytes()


def to64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


# ---- building programs ---------------------------------------------------------------------------

class Bench:
    """Builds a program: operands live in SBUF regions loaded by DMA from input tensors; the op under test
    waits for every load (semaphore ``ld<core>``)."""

    def __init__(self, cores: int = 1, cores_per_chip: int = 1):
        self.p = Program(cores, cores_per_chip)
        self.inputs: dict[str, np.ndarray] = {}
        self.next = defaultdict(int)  # (core, space) -> next free byte
        self.loads = defaultdict(int)

    def alloc(self, core: int, space: Space, nbytes: int) -> int:
        b = self.next[(core, space)]
        self.next[(core, space)] = b + ((nbytes + 63) // 64) * 64
        return b

    def region(self, core: int, p0: int, values: np.ndarray, dt: DType, space: Space = Space.sbuf) -> int:
        """Load ``values`` [P, n] (dtype ``dt``) contiguously into partitions p0.. of ``space``; returns byte start."""
        P, n = values.shape
        start = self.alloc(core, space, n * dt.itemsize)
        name = f"in{len(self.inputs)}"
        self.p.add_tensor(name, dt, (P, n), "input", chip=self.p.chip_of_core(core))
        self.inputs[name] = np.ascontiguousarray(values)
        dst = sbuf(P, n, dt, start=p0, offset=start, space=space)
        self.p.append(mk("dma_copy", dst, hbm(name, P, n, dt), core=core, signals=[(f"ld{core}", 1)]))
        self.loads[core] += 1
        return start

    def operand(self, rng: np.random.Generator, core: int, p0: int, dims: tuple[tuple[int, int], ...], dt: DType,
                space: Space = Space.sbuf, values: np.ndarray | None = None, **kw: object
                ) -> tuple[AccessPattern, np.ndarray]:
        """An input operand with free pattern ``dims`` over a freshly loaded region; returns (ap, expected tile)."""
        P = len(values) if values is not None else kw.pop("partitions")  # type: ignore[arg-type]
        lo = sum(min(0, st * (sz - 1)) for st, sz in dims)
        hi = sum(max(0, st * (sz - 1)) for st, sz in dims)
        n = hi - lo + 1
        region = values if values is not None else random_values(rng, (P, n), dt, **kw)  # type: ignore[arg-type]
        start = self.region(core, p0, region, dt, space)
        ap = AccessPattern(space, dt, p0, P, start + (-lo) * dt.itemsize, dims)
        return ap, gather(region, -lo, dims)

    def out(self, core: int, p0: int, P: int, dims: tuple[tuple[int, int], ...], dt: DType,
            space: Space = Space.sbuf) -> AccessPattern:
        lo = sum(min(0, st * (sz - 1)) for st, sz in dims)
        hi = sum(max(0, st * (sz - 1)) for st, sz in dims)
        start = self.alloc(core, space, (hi - lo + 1) * dt.itemsize)
        return AccessPattern(space, dt, p0, P, start + (-lo) * dt.itemsize, dims)

    def op(self, name: str, *operands: AccessPattern | None, core: int = 0, **kw: object) -> None:
        self.p.append(mk(name, *operands, core=core, waits=[(f"ld{core}", self.loads[core])] if
                           self.loads[core] else [], **kw))

    def run(self, **kw: object):  # noqa: ANN201
        return run(self.p, self.inputs, **kw)  # type: ignore[arg-type]


def gather(region: np.ndarray, base: int, dims: tuple[tuple[int, int], ...]) -> np.ndarray:
    """tile[p, i0, i1..] = region[p, base + sum(i_k * stride_k)] (explicit index arithmetic)."""
    sizes = [sz for _, sz in dims]
    idx = np.full(sizes, base, np.int64)
    for k, (stride, sz) in enumerate(dims):
        shp = [1] * len(dims)
        shp[k] = sz
        idx = idx + (np.arange(sz) * stride).reshape(shp)
    return region[:, idx]


# ---- strategies ----------------------------------------------------------------------------------

@st.composite
def read_dims(draw: st.DrawFn, max_dims: int = 3, max_size: int = 6, broadcast: bool = True,
              sizes: tuple[int, ...] | None = None) -> tuple[tuple[int, int], ...]:
    """Free dims for a read: any strides (zero = broadcast, negative = reversed)."""
    if sizes is None:
        nd = draw(st.integers(1, max_dims))
        sizes = tuple(draw(st.lists(st.integers(1, max_size), min_size=nd, max_size=nd)))
    nd = len(sizes)
    lo = -6 if broadcast else 1
    strides = draw(st.lists(st.integers(lo, 9).filter(lambda s: broadcast or s != 0), min_size=nd, max_size=nd))
    return tuple(zip(strides, sizes))


@st.composite
def write_dims(draw: st.DrawFn, sizes: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Non-aliasing free dims for a write with the given sizes: a permuted dense layout, maybe gapped/reversed."""
    nd = len(sizes)
    perm = draw(st.permutations(range(nd)))
    gap = draw(st.integers(1, 2))
    strides = [0] * nd
    s = gap
    for k in reversed(perm):  # perm[-1] is the fastest-moving memory dim
        strides[k] = s
        s *= sizes[k]
    signs = draw(st.lists(st.sampled_from([1, 1, -1]), min_size=nd, max_size=nd))
    return tuple((st_ * sg, sz) for st_, sz, sg in zip(strides, sizes, signs))


partitions = st.integers(1, 128)
seeds = st.integers(0, 2**32 - 1)


def p0_for(draw: st.DrawFn, P: int) -> int:
    return draw(st.integers(0, 128 - P))


# ---- dma_copy and addressing ---------------------------------------------------------------------

@given(st.data(), st.sampled_from(ALL), seeds)
def test_dma_copy_round_trip_is_bit_exact(data: st.DataObject, dt: DType, seed: int) -> None:
    """HBM -> SBUF (strided/broadcast read, permuted write) -> HBM keeps every byte (NaN payloads too)."""
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 64))
    dims = data.draw(read_dims())
    b = Bench()
    lo = sum(min(0, s * (z - 1)) for s, z in dims)
    hi = sum(max(0, s * (z - 1)) for s, z in dims)
    n = hi - lo + 1
    raw = rng.integers(0, 256, (P, n * dt.itemsize), dtype=np.uint8).view(dt.np)  # arbitrary bit patterns
    rstride = data.draw(st.integers(n, n + 3))
    b.p.add_tensor("X", dt, (P * rstride,), "input")
    padded = np.zeros((P, rstride), dt.np)
    padded[:, :n] = raw
    b.inputs["X"] = padded.reshape(-1)
    src = AccessPattern(Space.hbm, dt, 0, P, (-lo) * dt.itemsize, dims, "X", rstride)
    sizes = tuple(z for _, z in dims)
    p0 = p0_for(data.draw, P)
    mid = b.out(0, p0, P, data.draw(write_dims(sizes)), dt)
    b.p.add_tensor("Y", dt, (P, *sizes), "output")
    b.p.append(mk("dma_copy", mid, src, queue=0, signals=[("a", 1)]))
    b.p.append(mk("dma_copy", hbm("Y", P, sizes, dt), mid, queue=1, waits=[("a", 1)]))
    r = b.run()
    expect = gather(raw, -lo, dims)
    assert bytes_of(r.hbm("Y")) == bytes_of(expect)


@given(st.data(), st.sampled_from(ALL), seeds)
def test_sbuf_addressing_matches_byte_formula(data: st.DataObject, dt: DType, seed: int) -> None:
    """Element (p, i..) of an SBUF AP lives at byte offset + itemsize * sum(i_k * stride_k) of partition start+p."""
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 32))
    sizes = tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    dims = data.draw(write_dims(sizes))
    p0 = p0_for(data.draw, P)
    lo = sum(min(0, s * (z - 1)) for s, z in dims)
    base = data.draw(st.integers(0, 40)) + (-lo) * dt.itemsize  # unaligned offsets are legal
    b = Bench()
    vals = random_values(rng, (P, *sizes), dt)
    b.p.add_tensor("X", dt, vals.shape, "input")
    b.inputs["X"] = vals
    dst = AccessPattern(Space.sbuf, dt, p0, P, base, dims)
    b.p.append(mk("dma_copy", dst, hbm("X", P, sizes, dt)))
    r = b.run()
    mem = r.sbuf(0)
    isz = dt.itemsize
    for idx in np.ndindex(*vals.shape):
        p, rest = idx[0], idx[1:]
        off = base + isz * sum(i * s for i, (s, _) in zip(rest, dims))
        assert mem[p0 + p, off:off + isz].tobytes() == vals[idx].tobytes()
    assert bytes_of(r.read(dst)) == bytes_of(vals)


@given(st.data(), st.sampled_from(ALL), st.sampled_from(ALL), seeds)
def test_dma_copy_cast(data: st.DataObject, sdt: DType, ddt: DType, seed: int) -> None:
    """dma_copy between dtypes converts through fp32 with RNE and saturation; element order is AP order."""
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 16))
    b = Bench()
    src, tile = b.operand(rng, 0, 0, data.draw(read_dims()), sdt, partitions=P, special=True)
    n = tile[0].size
    dst = b.out(0, data.draw(st.integers(0, 128 - P)), P, ((1, n),), ddt)
    b.op("dma_copy", dst, src, engine="dma")
    r = b.run()
    got = r.read(dst)
    if sdt == ddt:
        assert bytes_of(got) == bytes_of(tile)
    else:
        exp = ref_cast(tile.astype(np.float32).reshape(P, n), ddt)
        assert bytes_of(got) == bytes_of(exp)


# ---- tensor_copy: the conversion rules -----------------------------------------------------------

@given(st.data(), st.sampled_from(ALL), st.sampled_from(ALL), seeds)
def test_tensor_copy_cast_matches_ml_dtypes(data: st.DataObject, sdt: DType, ddt: DType, seed: int) -> None:
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 128))
    b = Bench()
    src, tile = b.operand(rng, 0, 0, data.draw(read_dims(max_dims=2)), sdt, partitions=P, special=True,
                          scale=float(data.draw(st.sampled_from([1.0, 100.0, 1e5]))))
    dst = b.out(0, 128 - P, P, ((1, tile[0].size),), ddt)
    b.op("tensor_copy", dst, src, engine=data.draw(st.sampled_from(["vector", "gpsimd", "scalar"])))
    got = b.run().read(dst).reshape(tile.shape)
    if sdt == ddt:  # bit-exact
        assert bytes_of(got) == bytes_of(tile)
        return
    x = tile.astype(np.float32)
    if ddt.is_float:
        mx = float(ml_dtypes.finfo(ddt.np).max)
        with np.errstate(invalid="ignore", over="ignore"):
            direct = x.astype(ddt.np)  # ml_dtypes RNE
        exp = np.where(np.abs(x.astype(np.float64)) > mx, np.sign(x) * mx, direct.astype(np.float64))
        exp = np.where(np.isnan(x), np.nan, exp)
        np.testing.assert_array_equal(got.astype(np.float64), exp)
    else:
        ii = np.iinfo(ddt.np)
        exp = np.clip(np.rint(np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)),
                      ii.min, ii.max)
        np.testing.assert_array_equal(got.astype(np.float64), exp)


# ---- matmul and transpose ------------------------------------------------------------------------

@given(st.data(), st.sampled_from(MATMUL_IN), seeds, st.booleans())
def test_matmul_matches_numpy(data: st.DataObject, dt: DType, seed: int, accumulate: bool) -> None:
    rng = np.random.default_rng(seed)
    K = data.draw(st.integers(1, 128))
    M = data.draw(st.integers(1, 128))
    N = data.draw(st.integers(1, 64))
    b = Bench()
    a_ap, a = b.operand(rng, 0, data.draw(st.integers(0, 128 - K)), ((1, M),), dt, partitions=K)
    m_dims = data.draw(st.sampled_from([((1, N),), ((-1, N),), ((2, N),)]))
    b_ap, bm = b.operand(rng, 0, data.draw(st.integers(0, 128 - K)), m_dims, dt, partitions=K)
    init = rng.standard_normal((M, N)).astype(np.float32)
    start = b.region(0, 0, init, DType.fp32, space=Space.psum)
    dst = AccessPattern(Space.psum, DType.fp32, 0, M, start, ((1, N),))
    b.op("matmul", dst, a_ap, b_ap, accumulate=accumulate)
    got = b.run().read(dst).astype(np.float64)
    prod = np.matmul(to64(a).T, to64(bm)).astype(np.float32)
    exp = (init + prod if accumulate else prod).astype(np.float64)
    bound = np.matmul(np.abs(to64(a)).T, np.abs(to64(bm))) + (np.abs(init) if accumulate else 0)
    assert np.all(np.abs(got - exp) <= 1e-6 * bound + 1e-30)


@given(st.data(), seeds)
def test_matmul_accumulation_is_linear(data: st.DataObject, seed: int) -> None:
    """matmul(A, B1) then accumulate matmul(A, B2) == matmul(A, B1 + B2) within fp32 rounding."""
    rng = np.random.default_rng(seed)
    K, M, N = data.draw(st.integers(1, 128)), data.draw(st.integers(1, 64)), data.draw(st.integers(1, 64))
    dt = DType.fp32
    b = Bench()
    a_ap, a = b.operand(rng, 0, 0, ((1, M),), dt, partitions=K)
    b1_ap, b1 = b.operand(rng, 0, 0, ((1, N),), dt, partitions=K)
    b2_ap, b2 = b.operand(rng, 0, 0, ((1, N),), dt, partitions=K)
    bs = (b1 + b2).astype(np.float32)
    bs_ap, _ = b.operand(rng, 0, 0, ((1, N),), dt, values=bs)
    d1 = b.out(0, 0, M, ((1, N),), dt, Space.psum)
    d2 = b.out(0, 0, M, ((1, N),), dt, Space.psum)
    b.op("matmul", d1, a_ap, b1_ap, accumulate=False)
    b.op("matmul", d1, a_ap, b2_ap, accumulate=True)
    b.op("matmul", d2, a_ap, bs_ap, accumulate=False)
    r = b.run()
    x, y = r.read(d1).astype(np.float64), r.read(d2).astype(np.float64)
    bound = np.abs(to64(a)).T @ (np.abs(to64(b1)) + np.abs(to64(b2)))
    assert np.all(np.abs(x - y) <= 3e-7 * 4 * bound + 1e-30)


@given(st.data(), st.sampled_from(MATMUL_IN), seeds)
def test_transpose_and_twice_is_identity(data: st.DataObject, dt: DType, seed: int) -> None:
    rng = np.random.default_rng(seed)
    P, F = data.draw(st.integers(1, 128)), data.draw(st.integers(1, 128))
    b = Bench()
    src, tile = b.operand(rng, 0, data.draw(st.integers(0, 128 - P)), ((1, F),), dt, partitions=P)
    t1 = b.out(0, 0, F, ((1, P),), DType.fp32, Space.psum)
    mid = b.out(0, 0, F, ((1, P),), DType.fp32)
    t2 = b.out(0, 0, P, ((1, F),), DType.fp32, Space.psum)
    b.op("transpose", t1, src, signals=[("t", 1)])
    b.p.append(mk("tensor_copy", mid, t1, engine="vector", waits=[("t", 1)], signals=[("c", 1)]))
    b.p.append(mk("transpose", t2, mid, waits=[("c", 1)]))
    r = b.run()
    np.testing.assert_array_equal(r.read(t1), to64(tile).T.astype(np.float32))
    np.testing.assert_array_equal(r.read(t2), to64(tile).astype(np.float32))


# ---- vector engine -------------------------------------------------------------------------------

def ref_alu(op: AluOp, a: np.ndarray, b: np.ndarray | np.float32) -> np.ndarray:
    with np.errstate(all="ignore"):
        f = {AluOp.add: np.add, AluOp.sub: np.subtract, AluOp.mul: np.multiply, AluOp.div: np.divide,
             AluOp.max: np.maximum, AluOp.min: np.minimum}
        if op in f:
            return f[op](a, b).astype(np.float32)
        if op == AluOp.bypass:
            return a
        c = {AluOp.eq: np.equal, AluOp.ne: np.not_equal, AluOp.lt: np.less, AluOp.le: np.less_equal,
             AluOp.gt: np.greater, AluOp.ge: np.greater_equal}[op]
        return np.where(c(a, b), np.float32(1), np.float32(0))


def assert_same(got: np.ndarray, exp: np.ndarray) -> None:
    """Equal values (NaN == NaN), compared as float64."""
    np.testing.assert_array_equal(got.astype(np.float64), exp.astype(np.float64))


@given(st.data(), st.sampled_from(list(AluOp)), st.sampled_from(ALL), st.sampled_from(ALL), st.sampled_from(ALL),
       seeds)
def test_tensor_tensor(data: st.DataObject, op: AluOp, d0: DType, d1: DType, dd: DType, seed: int) -> None:
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 128))
    sizes = tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    b = Bench()
    in0_dims = data.draw(read_dims(sizes=sizes))
    in0, a = b.operand(rng, 0, 0, in0_dims, d0, partitions=P, special=True)
    in1, c = b.operand(rng, 0, 128 - P, data.draw(write_dims(sizes)), d1, partitions=P)
    space = data.draw(st.sampled_from([Space.sbuf, Space.psum]))
    dst = b.out(0, data.draw(st.integers(0, 128 - P)), P, data.draw(write_dims(sizes)), dd, space)
    b.op("tensor_tensor", dst, in0, in1, op=op, engine=data.draw(st.sampled_from(["vector", "gpsimd"])))
    got = b.run().read(dst)
    exp = ref_cast(ref_alu(op, a.astype(np.float32), c.astype(np.float32)), dd)
    assert_same(got, exp)


def test_div_by_zero_saturates() -> None:
    rng = np.random.default_rng(0)
    b = Bench()
    a_ap, _ = b.operand(rng, 0, 0, ((1, 4),), DType.fp32, values=np.array([[1.0, -1.0, 0.0, 2.0]], np.float32))
    z_ap, _ = b.operand(rng, 0, 0, ((1, 4),), DType.fp32, values=np.zeros((1, 4), np.float32))
    d32 = b.out(0, 0, 1, ((1, 4),), DType.fp32)
    d8 = b.out(0, 0, 1, ((1, 4),), DType.int8)
    b.op("tensor_tensor", d32, a_ap, z_ap, op="div", engine="vector")
    b.op("tensor_tensor", d8, a_ap, z_ap, op="div", engine="vector")
    r = b.run()
    fmax = float(np.finfo(np.float32).max)
    got = r.read(d32)[0]
    assert got[0] == fmax and got[1] == -fmax and np.isnan(got[2]) and got[3] == fmax
    assert r.read(d8)[0].tolist() == [127, -128, 0, 127]


@given(st.data(), st.sampled_from(list(AluOp)), st.sampled_from(list(AluOp)), st.sampled_from(ALL),
       st.sampled_from(ALL), seeds, st.booleans(), st.booleans())
def test_tensor_scalar(data: st.DataObject, op0: AluOp, op1: AluOp, sdt: DType, ddt: DType, seed: int,
                       per_part0: bool, per_part1: bool) -> None:
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 128))
    b = Bench()
    src, x = b.operand(rng, 0, 0, data.draw(read_dims()), sdt, partitions=P)
    x32 = x.astype(np.float32).reshape(P, -1)
    kw: dict[str, object] = {"op0": op0, "op1": op1}
    ops: list[AccessPattern | None] = [None, None]
    svals = []
    for k, per in enumerate((per_part0, per_part1)):
        if per:
            sdt_k = data.draw(st.sampled_from(ALL))
            ap, v = b.operand(rng, 0, 0, ((1, 1),), sdt_k, partitions=P)
            ops[k] = ap
            svals.append(v.astype(np.float32).reshape(P, 1))
        else:
            imm = data.draw(st.floats(-10, 10, allow_nan=False, width=32))
            kw[f"imm{k}"] = imm
            svals.append(np.float32(imm))
    dst = b.out(0, 0, P, ((1, x32.shape[1]),), ddt)
    b.op("tensor_scalar", dst, src, *ops, engine=data.draw(st.sampled_from(["vector", "gpsimd", "scalar"])), **kw)
    got = b.run().read(dst)
    exp = ref_cast(ref_alu(op1, ref_alu(op0, x32, svals[0]), svals[1]), ddt)
    assert_same(got, exp)


@given(st.data(), st.sampled_from(list(ReduceOp)), st.sampled_from(ALL), st.sampled_from(FLOATS + [DType.int32]),
       seeds)
def test_tensor_reduce(data: st.DataObject, op: ReduceOp, sdt: DType, ddt: DType, seed: int) -> None:
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 128))
    dims = data.draw(read_dims(max_dims=4, max_size=5))
    axes = data.draw(st.integers(1, len(dims)))
    b = Bench()
    src, x = b.operand(rng, 0, 0, dims, sdt, partitions=P)
    outer = dims[: len(dims) - axes]
    osz = int(np.prod([z for _, z in outer])) if outer else 1
    dst = b.out(0, 0, P, ((1, osz),), ddt)
    b.op("tensor_reduce", dst, src, op=op, axes=axes, engine="vector")
    got = b.run().read(dst)
    x64 = to64(x).reshape(P, osz, -1)
    red = {ReduceOp.add: np.sum, ReduceOp.max: np.max, ReduceOp.min: np.min}[op](x64, axis=2)
    assert_same(got, ref_cast(red.astype(np.float32), ddt))


@given(st.sampled_from(ALL), st.floats(allow_nan=True, allow_infinity=True), partitions, st.integers(1, 40))
def test_memset(dt: DType, value: float, P: int, n: int) -> None:
    b = Bench()
    dst = b.out(0, 128 - P, P, ((1, n),), dt)
    b.op("memset", dst, value=value, engine="vector")
    with np.errstate(over="ignore"):
        exp = ref_cast(np.full((P, n), np.float32(value)), dt)
    assert_same(b.run().read(dst), exp)


@given(st.data(), st.sampled_from([DType.int32, DType.fp32, DType.bf16, DType.int8, DType.fp16]))
def test_iota(data: st.DataObject, dt: DType) -> None:
    P = data.draw(st.integers(1, 128))
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    base = data.draw(st.integers(-1000, 1000))
    cm = data.draw(st.integers(-50, 50))
    mult = data.draw(st.lists(st.integers(-100, 100), min_size=len(sizes), max_size=len(sizes)))
    b = Bench()
    dst = sbuf(P, tuple(sizes), dt, offset=b.alloc(0, Space.sbuf, int(np.prod(sizes)) * dt.itemsize))
    b.op("iota", dst, base=base, channel_multiplier=cm, multipliers=mult, engine="gpsimd")
    grids = np.indices((P, *sizes))
    exact = base + cm * grids[0] + sum(m * g for m, g in zip(mult, grids[1:]))
    assert_same(b.run().read(dst), ref_cast(exact.astype(np.int32), dt))


def test_iota_wraps_int32() -> None:
    b = Bench()
    dst = b.out(0, 0, 1, ((1, 2),), DType.int32)
    b.op("iota", dst, base=2**31 - 1, multipliers=[1], engine="gpsimd")
    assert b.run().read(dst)[0].tolist() == [2**31 - 1, -(2**31)]


@given(st.data(), st.sampled_from(ALL), st.sampled_from(ALL), seeds)
def test_select(data: st.DataObject, pdt: DType, vdt: DType, seed: int) -> None:
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 128))
    dims = data.draw(read_dims(max_dims=2))
    sizes = tuple(z for _, z in dims)
    b = Bench()
    pvals = (rng.random((P, *sizes)) < 0.5).astype(np.float64) * rng.integers(-3, 4, (P, *sizes))
    pred, pv = b.operand(rng, 0, 0, ((1, int(np.prod(sizes))),), pdt,
                         values=ref_cast(pvals.reshape(P, -1), pdt))
    t_ap, t = b.operand(rng, 0, 0, dims, vdt, partitions=P)
    f_ap, f = b.operand(rng, 0, 0, data.draw(write_dims(sizes)), vdt, partitions=P)
    ddt = data.draw(st.sampled_from(ALL))
    dst = b.out(0, 0, P, data.draw(write_dims(sizes)), ddt)
    b.op("select", dst, pred, t_ap, f_ap, engine="vector")
    exp = np.where(to64(pv).reshape(P, *sizes) != 0, t.astype(np.float32), f.astype(np.float32))
    assert_same(b.run().read(dst), ref_cast(exp, ddt))


# ---- scalar engine -------------------------------------------------------------------------------

def ref_func(func: ActFunc, x: float) -> float:
    """Scalar math-module formulation of each activation function (float64)."""
    try:
        if func == ActFunc.identity:
            return x
        if func == ActFunc.relu:
            return max(x, 0.0)
        if func == ActFunc.exp:
            return math.exp(x)
        if func == ActFunc.tanh:
            return math.tanh(x)
        if func == ActFunc.sigmoid:
            return 1.0 / (1.0 + math.exp(-x))
        if func == ActFunc.silu:
            return x / (1.0 + math.exp(-x))
        if func == ActFunc.gelu:
            return 0.5 * x * math.erfc(-x / math.sqrt(2.0))  # == 0.5x(1 + erf(x/sqrt 2)), stable tail
        if func == ActFunc.gelu_tanh:  # == 0.5x(1 + tanh(u)), stable tail
            return x / (1.0 + math.exp(-2.0 * math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        if func == ActFunc.rsqrt:
            if x == 0:
                return math.copysign(math.inf, x)  # IEEE 754: rsqrt(-0) = -inf
            return 1.0 / math.sqrt(x) if x > 0 else math.nan
        if func == ActFunc.sqrt:
            return math.sqrt(x) if x >= 0 else math.nan
        if func == ActFunc.square:
            return x * x
        if func == ActFunc.reciprocal:
            return 1.0 / x if x != 0 else math.copysign(math.inf, x)
    except OverflowError:
        return math.inf if func in (ActFunc.exp, ActFunc.square) else (0.0 if func == ActFunc.sigmoid else -0.0)
    raise AssertionError(func)


def close_in(got: np.ndarray, exp32: np.ndarray, dt: DType) -> None:
    """got (dtype dt) equals cast(exp32) up to one ulp of fp32 in the pre-cast value (float64 evaluation may
    differ from the reference in the last bit)."""
    lo = ref_cast(np.nextafter(exp32, np.float32(-np.inf)), dt).astype(np.float64)
    hi = ref_cast(np.nextafter(exp32, np.float32(np.inf)), dt).astype(np.float64)
    g = got.astype(np.float64)
    both_nan = np.isnan(g) & np.isnan(exp32)
    ok = both_nan | ((g >= np.minimum(lo, hi)) & (g <= np.maximum(lo, hi)))
    assert ok.all(), (g[~ok], exp32[~ok])


@given(st.data(), st.sampled_from(list(ActFunc)), st.sampled_from(FLOATS), st.sampled_from(FLOATS), seeds,
       st.booleans(), st.booleans(), st.booleans())
def test_activate(data: st.DataObject, func: ActFunc, sdt: DType, ddt: DType, seed: int, per_scale: bool,
                  per_bias: bool, with_reduce: bool) -> None:
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 128))
    b = Bench()
    src, x = b.operand(rng, 0, 0, data.draw(read_dims(max_dims=2)), sdt, partitions=P, scale=2.0)
    x32 = x.astype(np.float32).reshape(P, -1)
    F = x32.shape[1]
    kw: dict[str, object] = {"func": func}
    if per_scale:
        scale_ap, sv = b.operand(rng, 0, 0, ((1, 1),), DType.fp32, partitions=P, scale=1.0)
        scale = sv.reshape(P, 1).astype(np.float32)
    else:
        scale_ap = None
        kw["scale_imm"] = data.draw(st.floats(-2, 2, width=32))
        scale = np.float32(kw["scale_imm"])
    if per_bias:
        bias_ap, bv = b.operand(rng, 0, 0, ((1, 1),), DType.bf16, partitions=P, scale=1.0)
        bias = bv.reshape(P, 1).astype(np.float32)
    else:
        bias_ap = None
        kw["bias_imm"] = data.draw(st.floats(-2, 2, width=32))
        bias = np.float32(kw["bias_imm"])
    dst = b.out(0, 0, P, ((1, F),), ddt)
    red = b.out(0, 0, P, ((1, 1),), DType.fp32) if with_reduce else None
    b.op("activate", dst, src, bias_ap, scale_ap, red, engine="scalar", **kw)
    r = b.run()
    pre = (x32 * scale + bias).astype(np.float32)
    exp32 = np.array([[ref_func(func, float(v)) for v in row] for row in pre], np.float64).astype(np.float32)
    close_in(r.read(dst), exp32, ddt)
    if red is not None:
        y = np.array([[ref_func(func, float(v)) for v in row] for row in pre], np.float64)
        tot = y.astype(np.float32).astype(np.float64).sum(axis=1, keepdims=True)
        g = r.read(red).astype(np.float64)
        finite = np.isfinite(tot)
        mag = np.abs(y.astype(np.float32).astype(np.float64)).sum(axis=1, keepdims=True)
        assert np.all(np.abs(g[finite] - tot[finite]) <= 1e-6 * mag[finite] + 1e-30)


@given(st.data(), st.sampled_from(FLOATS), seeds)
def test_activate_identity_is_a_copy(data: st.DataObject, dt: DType, seed: int) -> None:
    rng = np.random.default_rng(seed)
    P = data.draw(st.integers(1, 128))
    b = Bench()
    src, x = b.operand(rng, 0, 0, data.draw(read_dims()), dt, partitions=P)
    dst = b.out(0, 0, P, data.draw(write_dims(x.shape[1:])), dt)
    b.op("activate", dst, src, func="identity", scale_imm=1.0, bias_imm=0.0, engine="scalar")
    got = b.run().read(dst)
    assert bytes_of(got) == bytes_of(x) or \
        np.array_equal(got.astype(np.float64), x.astype(np.float64))  # -0.0 + 0.0 = +0.0


# ---- errors --------------------------------------------------------------------------------------

def test_out_of_bounds_names_instruction_slot_and_overflow() -> None:
    b = Bench()
    b.p.append(mk("memset", sbuf(128, 8, DType.fp32, offset=196608 - 16), engine="vector"))
    with pytest.raises(InterpError, match=r"instruction 0 \(memset.*operand 'dst'.*16 bytes past the end"):
        b.run()
    b = Bench()
    b.p.append(mk("memset", sbuf(64, 8, DType.fp32, start=96), engine="vector"))
    with pytest.raises(InterpError, match=r"operand 'dst'.*partitions \[96, 160\) exceed the 128 partitions by 32"):
        b.run()
    b = Bench()
    b.p.add_tensor("X", DType.fp32, (4, 4), "input")
    b.inputs["X"] = np.zeros((4, 4), np.float32)
    b.p.append(mk("dma_copy", sbuf(4, 8, DType.fp32), hbm("X", 4, 8, DType.fp32, row_stride=4)))
    with pytest.raises(InterpError, match=r"operand 'src'.*hbm.X bytes \[0, 80\) run 16 bytes past the end"):
        b.run()


def test_bad_inputs() -> None:
    p = Program()
    p.add_tensor("A", DType.bf16, (2, 3), "input")
    p.add_tensor("C", DType.fp32, (2, 3), "output")
    ok = np.zeros((2, 3), ml_dtypes.bfloat16)
    with pytest.raises(InterpError, match=r"missing input for tensor 'A' \(input bf16\[2,3\]\)"):
        run(p, {})
    with pytest.raises(InterpError, match="shape"):
        run(p, {"A": np.zeros((3, 2), ml_dtypes.bfloat16)})
    with pytest.raises(InterpError, match="dtype float32"):
        run(p, {"A": np.zeros((2, 3), np.float32)})
    with pytest.raises(InterpError, match="'B' is not a declared tensor"):
        run(p, {"A": ok, "B": ok})
    with pytest.raises(InterpError, match="only input and weight"):
        run(p, {"A": ok, "C": np.zeros((2, 3), np.float32)})


def test_shape_mismatch_is_an_error() -> None:
    b = Bench()
    b.p.append(mk("tensor_tensor", sbuf(4, 8, DType.fp32), sbuf(4, 8, DType.fp32), sbuf(4, 7, DType.fp32),
                    op="add"))
    with pytest.raises(InterpError, match="operand 'in1' is 4 partitions x 7 elements"):
        b.run()


def test_aliased_write_keeps_last_element_in_ap_order() -> None:
    """A destination whose elements share addresses (zero stride) holds the last one in row-major AP order."""
    rng = np.random.default_rng(1)
    b = Bench()
    vals = np.arange(12, dtype=np.float32).reshape(2, 6)
    src, _ = b.operand(rng, 0, 0, ((1, 6),), DType.fp32, values=vals)
    dst = AccessPattern(Space.sbuf, DType.fp32, 0, 2, 1024, ((1, 2), (0, 3)))  # [2, 3] onto 2 addresses
    b.op("tensor_copy", dst, src, engine="vector")
    got = b.run().read(AccessPattern(Space.sbuf, DType.fp32, 0, 2, 1024, ((1, 2),)))
    np.testing.assert_array_equal(got, [[2, 5], [8, 11]])


def test_in_place_reads_before_writes() -> None:
    """src and dst overlap shifted by one element: the instruction reads everything before writing."""
    rng = np.random.default_rng(2)
    b = Bench()
    vals = np.arange(8, dtype=np.float32).reshape(1, 8)
    src, _ = b.operand(rng, 0, 0, ((1, 7),), DType.fp32, values=vals)
    dst = src.with_(offset=src.offset + 4)
    b.op("tensor_scalar", dst, src, op0="add", imm0=100.0, engine="vector")
    got = b.run().read(src.with_(dims=((1, 8),)))
    np.testing.assert_array_equal(got, [[0, 100, 101, 102, 103, 104, 105, 106]])


@given(st.data(), st.sampled_from(ALL), st.sampled_from([Space.sbuf, Space.psum]))
def test_bounds_are_checked_exactly(data: st.DataObject, dt: DType, space: Space) -> None:
    """Any on-chip AP either runs (every byte inside the memory) or raises InterpError, never a numpy error."""
    nbytes = 196608 if space == Space.sbuf else 16384
    P = data.draw(st.integers(1, 140))
    start = data.draw(st.integers(0, 140))
    dims = data.draw(read_dims(max_size=40, broadcast=False))
    dims = tuple((s * data.draw(st.sampled_from([1, -1, 100, 1000])), z) for s, z in dims)
    offset = data.draw(st.one_of(st.integers(0, 64), st.integers(nbytes - 4096, nbytes + 64)))
    ap = AccessPattern(space, dt, start, P, offset, dims)
    lo = offset + dt.itemsize * sum(min(0, s * (z - 1)) for s, z in dims)
    hi = offset + dt.itemsize * (sum(max(0, s * (z - 1)) for s, z in dims) + 1)
    inside = start + P <= 128 and lo >= 0 and hi <= nbytes
    b = Bench()
    b.p.add_tensor("S", dt, (1,), "input")
    b.inputs["S"] = np.zeros(1, dt.np)
    src = AccessPattern(Space.hbm, dt, 0, P, 0, tuple((0, z) for _, z in dims), "S", 0)  # broadcast one element
    b.p.append(mk("nop", engine="dma"))
    b.p.append(mk("dma_copy", ap, src, queue=1))
    if inside:
        b.run()
    else:
        with pytest.raises(InterpError, match=r"instruction 1 \(dma_copy.*operand 'dst'"):
            b.run()


def test_dtype_sizes_and_kinds_without_ml_dtypes_agree_with_the_numpy_dtypes() -> None:
    """itemsize and is_float come from static tables (no ml_dtypes import); they must be the numpy dtypes'."""
    for dt in DType:
        assert dt.itemsize == dt.np.itemsize
        assert dt.is_float == (dt.np.kind not in "iu")
    import subprocess
    import sys

    code = ("import sys, infsim.engine.costs, infsim.isa.dtypes as d; "
            "print(d.DType.bf16.itemsize, 'ml_dtypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"]
