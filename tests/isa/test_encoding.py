"""Binary encoding: round trips, corrupt input and out-of-range refusals (when building and decoding)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infsim.isa import DType, EncodingError, OperandError, Program, hbm, make, psum, sbuf
from infsim.isa.encoding import MAGIC, decode, encode, load, save
from infsim.isa.opcodes import Space
from infsim.isa.operand import AccessPattern
from infsim.isa.program import AP_DTYPE, INSTR_DTYPE
from infsim.isa.strategies import programs


def _sample() -> Program:
    p = Program(2, 2)
    p.add_tensor("A", "bf16", [128, 64], "input")
    p.add_semaphore("ld")
    p.add_group("g", [0, 1])
    p.append(make("dma_copy", sbuf(128, 64, DType.bf16), hbm("A", 128, 64, DType.bf16), signals=[("ld", 1)]))
    p.append(make("matmul", psum(64, 64), sbuf(128, 64, DType.bf16), sbuf(128, 64, DType.bf16),
                  accumulate=True, waits=[("ld", 1)]))
    p.append(make("all_reduce", hbm("A", 128, 64, DType.bf16), hbm("A", 128, 64, DType.bf16), group="g", core=1))
    p.append(make("iota", sbuf(4, (2, 4), DType.int32), engine="gpsimd", multipliers=(4, 1)))
    return p


@given(programs(max_instructions=12))
def test_round_trip_property(p: Program) -> None:
    data = encode(p)
    q = decode(data)
    assert q == p
    assert encode(q) == data


def test_round_trip_file_and_append_after_decode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = _sample()
    f = tmp_path / "p.bin"
    save(p, f)
    q = load(f)
    assert q == p and len(q) == 4
    assert q[1].imms["accumulate"] is True
    # appending to a decoded program deduplicates against the decoded AP table, like the original
    extra = make("tensor_copy", sbuf(128, 64, DType.fp32), sbuf(128, 64, DType.bf16))
    p.append(extra)
    q.append(extra)
    assert q == p and len(q.aps) == len(p.aps)
    empty = decode(encode(Program()))
    assert empty == Program()
    empty.append(make("nop"))
    assert len(empty) == 1


def test_layout_is_magic_header_then_raw_records() -> None:
    p = _sample()
    data = encode(p)
    assert data[:8] == MAGIC
    (n,) = struct.unpack_from("<I", data, 8)
    hdr = json.loads(data[12 : 12 + n])
    assert hdr["num_instructions"] == 4 and hdr["semaphores"] == ["ld"]
    body = data[12 + n :]
    assert len(body) == len(p.aps) * AP_DTYPE.itemsize + len(p) * INSTR_DTYPE.itemsize
    assert body[len(p.aps) * AP_DTYPE.itemsize :] == p.instr.tobytes()


# ---- corrupt input -----------------------------------------------------------------------------------

def _parts(p: Program) -> tuple[dict, np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    data = encode(p)
    (n,) = struct.unpack_from("<I", data, 8)
    hdr = json.loads(data[12 : 12 + n])
    return hdr, p.aps.copy(), p.instr.copy()


def _join(hdr: dict, aps: np.ndarray, ins: np.ndarray) -> bytes:  # type: ignore[type-arg]
    h = json.dumps(hdr).encode()
    return MAGIC + struct.pack("<I", len(h)) + h + aps.tobytes() + ins.tobytes()


@pytest.mark.parametrize(("data", "frag"), [
    (b"", "truncated input"),
    (b"INFSIM", "truncated input"),
    (b"NOTMAGIC" + b"\0" * 20, "not an infsim program"),
    (MAGIC + b"\1", "header length missing"),
    (MAGIC + struct.pack("<I", 100) + b"{}", "header of 100 bytes announced"),
    (MAGIC + struct.pack("<I", 3) + b"{x}", "corrupt header"),
    (MAGIC + struct.pack("<I", 2) + b"[]", "expected a JSON object"),
    (MAGIC + struct.pack("<I", 2) + b"{}", "'version'"),
])
def test_corrupt_input(data: bytes, frag: str) -> None:
    with pytest.raises(EncodingError, match=frag):
        decode(data)


def test_truncated_and_trailing() -> None:
    data = encode(_sample())
    with pytest.raises(EncodingError, match="truncated input"):
        decode(data[:-1])
    with pytest.raises(EncodingError, match="trailing bytes"):
        decode(data + b"\0")
    for cut in range(0, len(data), 37):
        with pytest.raises(EncodingError):
            decode(data[:cut])


def test_load_names_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "x.bin"
    f.write_bytes(b"garbage!")
    with pytest.raises(EncodingError, match="x.bin: not an infsim program"):
        load(f)


@pytest.mark.parametrize(("mutate", "frag"), [
    (lambda h: h.update(instr_descr=[["op", "<u2"]]), "record layout"),
    (lambda h: h.update(num_cores=0), "'num_cores'"),
    (lambda h: h.update(num_cores="2"), "'num_cores'"),
    (lambda h: h.update(tensors=[["A", "bf17", [1], "input", 0]]), "unknown dtype 'bf17'"),
    (lambda h: h.update(tensors=[["A", "bf16", [1], "inputs", 0]]), r"'tensors\[0\]'"),
    (lambda h: h.update(semaphores=["ld", "ld"]), "declared twice"),
    (lambda h: h.update(semaphores=[3]), r"'semaphores\[0\]'"),
    (lambda h: h.update(groups=[["g", [0, 0]]]), "distinct"),
    (lambda h: h.update(groups="g"), "'groups': expected a list"),
    (lambda h: h.update(num_instructions=3), "truncated|trailing"),
])
def test_bad_header(mutate, frag: str) -> None:  # type: ignore[no-untyped-def]
    hdr, aps, ins = _parts(_sample())
    mutate(hdr)
    with pytest.raises(EncodingError, match=frag):
        decode(_join(hdr, aps, ins))


def _set(arr: np.ndarray, i: int, field: str, value: object, k: int | None = None) -> None:
    if k is None:
        arr[i][field] = value
    else:
        arr[i][field][k] = value


@pytest.mark.parametrize(("table", "i", "field", "k", "value", "frag"), [
    ("ins", 1, "op", None, 200, "instruction record 1: field 'op' value 200"),
    ("ins", 0, "engine", None, 9, "instruction record 0: field 'engine' value 9"),
    ("ins", 1, "engine", None, 2, "an engine that runs matmul"),
    ("ins", 0, "opnd", 0, 99, "field 'opnd'"),
    ("ins", 0, "opnd", 3, 0, r"field 'opnd\[3\]'"),
    ("ins", 1, "opnd", 1, -1, "operand 'stationary' of matmul is required"),
    ("ins", 0, "wsem", 0, 5, "field 'wsem'"),
    ("ins", 2, "ssem", 1, 0, "field 'ssem'.*used entries first"),
    ("ins", 0, "wval", 0, 7, "field 'wval'"),
    ("ins", 2, "i0", None, 3, r"field 'i0 \(group\)'"),
    ("ins", 2, "e0", None, 3, r"field 'e0 \(op\)'"),
    ("ins", 1, "flags", None, 2, "field 'flags'"),
    ("ins", 0, "f0", None, 1.5, "field 'f0'"),
    ("ins", 0, "ints", 0, 5, "field 'ints'"),
    ("ins", 3, "ints", 0, -(2**31), r"field 'ints \(multipliers\)'"),
    ("aps", 0, "space", None, 3, "AP record 0: field 'space'"),
    ("aps", 0, "dtype", None, 8, "field 'dtype'"),
    ("aps", 0, "ndims", None, 5, "field 'ndims'"),
    ("aps", 0, "pcount", None, 0, "field 'pcount'"),
    ("aps", 0, "offset", None, -1, "field 'offset'"),
    ("aps", 1, "tensor", None, 1, "a tensor index in"),
    ("aps", 0, "tensor", None, 0, "-1 for an on-chip operand"),
    ("aps", 0, "pstride", None, 4, "field 'pstride'"),
    ("aps", 1, "pstart", None, 4, "field 'pstart'"),
    ("aps", 0, "sizes", 0, 0, "field 'sizes'"),
    ("aps", 0, "sizes", 3, 7, "0 beyond ndims"),
])
def test_out_of_range_records_refused(table: str, i: int, field: str, k: int | None, value: object,
                                      frag: str) -> None:
    hdr, aps, ins = _parts(_sample())
    _set(ins if table == "ins" else aps, i, field, value, k)
    with pytest.raises(EncodingError, match=frag):
        decode(_join(hdr, aps, ins))


@given(st.binary(max_size=64), st.integers(0, 10_000))
def test_random_byte_flips_raise_only_encoding_error(junk: bytes, pos: int) -> None:
    data = bytearray(encode(_sample()))
    pos %= len(data)
    data[pos : pos + len(junk)] = junk
    try:
        decode(bytes(data))
    except EncodingError:
        pass


# ---- out-of-range values are refused when building ------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"partitions": 70000}, "partitions"),
    ({"partitions": 0}, "partitions"),
    ({"partition_start": -1}, "partition_start"),
    ({"offset": -1}, "offset"),
    ({"offset": 2**63}, "offset"),
    ({"dims": ((2**31, 4),)}, r"dims\[0\].stride"),
    ({"dims": ((1, 2**32),)}, r"dims\[0\].size"),
    ({"dims": ((1, 0),)}, r"dims\[0\].size"),
    ({"dims": ((1, 1),) * 5}, "dims"),
])
def test_access_pattern_range_refused(kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    base = {"space": Space.sbuf, "dtype": DType.fp32}
    with pytest.raises(OperandError, match=f"'{field}'"):
        AccessPattern(**{**base, **kwargs})


def test_hbm_row_stride_range_refused() -> None:
    with pytest.raises(OperandError, match="partition_stride"):
        hbm("A", 2, 4, DType.fp32, row_stride=2**31)


@pytest.mark.parametrize(("ins", "frag"), [
    (make("nop", core=70000), "core 70000"),
    (make("nop", engine="dma", queue=256), "queue 256"),
    (make("nop", waits=[("s", 2**32)]), "wait value 4294967296"),
    (make("nop", signals=[("s", -1)]), "signal increment -1"),
    (make("nop", waits=[("s", 1)] * 3), "at most 2 waits"),
    (make("send", sbuf(1, 1, DType.fp32), peer=2**63), "int64 range"),
    (make("iota", sbuf(1, 1, DType.int32), engine="gpsimd", multipliers=(2**31,)), "int32 range"),
    (make("dma_copy", sbuf(1, 1, DType.fp32), hbm("nope", 1, 1, DType.fp32)), "undeclared HBM tensor"),
])
def test_instruction_range_refused(ins, frag: str) -> None:  # type: ignore[no-untyped-def]
    p = Program()
    p.add_semaphore("s")
    with pytest.raises(OperandError, match=frag):
        p.append(ins)
    assert len(p) == 0


def test_append_like_equals_append_of_the_same_instruction() -> None:
    """``append_like`` (a copy of an earlier record with operands and waits replaced) gives the record ``append``
    gives for that instruction; it refuses more waits than the ISA holds and wait values out of range."""
    a, b = Program(1, 1), Program(1, 1)
    for p in (a, b):
        p.add_semaphore("ld")
        p.add_semaphore("mm")
    x, y = sbuf(128, 64, DType.bf16), sbuf(128, 64, DType.bf16, offset=256)
    first = make("activate", x, y, func="exp", scale_imm=0.5, waits=[("ld", 3)], signals=[("mm", 1)])
    for p in (a, b):
        p.append(first)
    a.append(make("activate", y, x, func="exp", scale_imm=0.5, waits=[("mm", 1), ("ld", 7)], signals=[("mm", 1)]))
    b.append_like(0, [b.ap_id(y), b.ap_id(x)], [(b.sem_id("mm"), 1), (b.sem_id("ld"), 7)])
    a.append(make("activate", x, y, func="exp", scale_imm=0.5, signals=[("mm", 1)]))
    b.append_like(0, [b.ap_id(x), b.ap_id(y)], [])
    assert a.instr.tobytes() == b.instr.tobytes() and a.aps.tobytes() == b.aps.tobytes()
    with pytest.raises(OperandError):
        b.append_like(0, [0, 1], [(0, 1), (1, 1), (0, 2)])
    with pytest.raises(OperandError):
        b.append_like(0, [0, 1], [(0, 2**32)])
    assert len(b) == 3
