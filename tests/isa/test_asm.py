"""Text assembly: print/parse round trips for every opcode, error messages, and fuzzing the parser."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from infsim.isa import AsmParseError, DType, Op, Program, hbm, make, psum, sbuf
from infsim.isa.asm import format_operand, parse, parse_file, parse_with_lines, print_program
from infsim.isa.opcodes import Space
from infsim.isa.operand import AccessPattern
from infsim.isa.strategies import access_patterns, programs

_FEW = settings(max_examples=min(settings.default.max_examples, 15), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

EXAMPLE = """\
# a tiny GEMM tile
.program cores=2 cores_per_chip=2
.tensor A bf16[128,128] input
.tensor C fp32[128,128] output
.sem ld, mm   # two semaphores
.group all 0,1
.stream c0.dma0
dma_copy dst=sbuf[0:128 +0 (1,128) bf16] src=hbm.A[128@128 +0 (1,128) bf16] signal=ld+1
.stream c0.tensor
matmul dst=psum[0:128 +0 (1,128) fp32] stationary=sbuf[0:128 +0 (1,128) bf16] \
moving=sbuf[0:128 +0 (1,128) bf16] accumulate=false wait=ld>=1 signal=mm+1

.stream c0.scalar
activate dst=sbuf[0:128 +256 (1,128) fp32] src=psum[0:128 +0 (1,128) fp32] func=exp wait=mm>=1
.stream c1.cc2
all_reduce dst=hbm.C[128@128 +0 (1,128) fp32] src=hbm.C[128@128 +0 (1,128) fp32] group=all
"""


def test_example_parses_and_round_trips() -> None:
    p, lines = parse_with_lines(EXAMPLE, "ex.s")
    assert len(p) == 4 and lines == [8, 10, 13, 15]
    assert p.num_cores == 2 and list(p.tensors) == ["A", "C"] and p.semaphores == ["ld", "mm"]
    mm = p[1]
    assert mm.op == Op.matmul and mm.waits == (("ld", 1),) and mm.signals == (("mm", 1),)
    assert mm.operand("stationary") == sbuf(128, 128, DType.bf16)
    assert p[0].operand("src") == hbm("A", 128, 128, DType.bf16)
    act = p[2]
    assert act.imms["scale_imm"] == 1.0 and act.operand("bias") is None
    cc = p[3]
    assert (cc.core, int(cc.engine), cc.queue, cc.imms["group"]) == (1, 5, 2, "all")
    text = print_program(p)
    assert parse(text) == p
    assert print_program(parse(text)) == text


def test_builder_program_round_trips() -> None:
    p = Program()
    p.add_tensor("x.in", "fp32", [4, 8], "input")
    p.append(make("dma_copy", sbuf(4, 8, DType.fp32), hbm("x.in", 4, 8, DType.fp32), engine="dma", queue=1,
                  signals=[("s", 1)]))
    p.append(make("iota", sbuf(4, (2, 4), DType.int32), engine="gpsimd", base=-3, multipliers=(4, 1),
                  waits=[("s", 1)]))
    p.append(make("iota", AccessPattern(Space.sbuf, DType.int32, 0, 4, 0, ()), engine="gpsimd"))
    p.append(make("tensor_scalar", sbuf(4, 8, DType.fp32), sbuf(4, 8, DType.fp32), None,
                  sbuf(4, 1, DType.fp32), op0="mul", imm0=float("-inf"), imm1=1e-300))
    p.append(make("memset", psum(4, 8), value=float("nan")))
    p.append(make("barrier", sem="s", count=3))
    p.append(make("nop", engine="vector", signals=[("s", 2**32 - 1), ("s", 0)]))
    text = print_program(p)
    assert "multipliers=()" in text and "imm0=-inf" in text and "value=nan" in text
    assert ".stream c0.dma1" in text and "hbm.x.in[4@8 +0 (1,8) fp32]" in text
    assert parse(text) == p


def test_format_operand_matches_printer() -> None:
    ap = AccessPattern(Space.psum, DType.fp32, 32, 16, 64, ((-1, 4), (0, 2)))
    assert format_operand(ap) == "psum[32:48 +64 (-1,4) (0,2) fp32]"
    assert format_operand(hbm("w", 8, 16, DType.bf16, row_stride=-16)) == "hbm.w[8@-16 +0 (1,16) bf16]"


def test_flexible_whitespace_and_crlf() -> None:
    text = (".tensor   T  fp16[2,3]   weight chip=0\r\n.sem a,b , c\r\n.stream   c0.vector\r\n"
            "tensor_copy   src=sbuf[ 0:2  +8  ( 1 , 3 )  fp16 ]\tdst=sbuf[0:2 +0 (1,3) fp32]   # trailing\r\n")
    p = parse(text)
    assert p.semaphores == ["a", "b", "c"]
    assert p[0].operand("src") == sbuf(2, 3, DType.fp16, offset=8)


def test_parse_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "k.s"
    f.write_text(EXAMPLE)
    assert parse_file(f) == parse(EXAMPLE)
    f.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(AsmParseError, match="k.s:0:0: not UTF-8"):
        parse_file(f)


@given(programs(max_instructions=10))
def test_round_trip_property(p: Program) -> None:
    text = print_program(p)
    q = parse(text, "rt.s")
    assert q == p
    assert print_program(q) == text


@pytest.mark.parametrize("op", list(Op), ids=lambda o: o.name)
@_FEW
@given(data=st.data())
def test_round_trip_every_opcode(op: Op, data: st.DataObject) -> None:
    p = data.draw(programs(max_instructions=4, ops=[op]))
    assume(len(p) > 0)
    assert all(ins.op == op for ins in p)
    assert parse(print_program(p)) == p


@given(access_patterns(tensors=("t",)))
def test_operand_text_round_trip(ap: AccessPattern) -> None:
    p = Program()
    p.add_tensor("t", "fp32", [1])
    p.append(make("dma_copy", ap, ap))
    assert parse(print_program(p))[0].operands == (ap, ap)


# ---- errors ----------------------------------------------------------------------------------------

HDR = ".tensor A bf16[128,128] input\n.sem s\n.group g 0\n.stream c0.vector\n"
OK_OP = "tensor_copy dst=sbuf[0:128 +0 (1,128) fp32] src=sbuf[0:128 +0 (1,128) bf16]"

BAD = [
    # (text, line, column, fragment of the message)
    (HDR + "tensor_copy dst=sbuf[0:128 +0 (1,128) fp33] src=x", 5, 39, "expected a dtype"),
    (HDR + "tensor_copy dst=sbuf[0:128 0 (1,128) fp32]", 5, 28, "expected '+OFFSET'"),
    (HDR + "tensor_copy dst=sbuf[0:128 +0 (1,128) fp32] src=dram[0:1 +0 fp32]", 5, 49, "expected an operand"),
    (HDR + "tensor_copy dst=sbuf[0:128 +0 (1,128) fp32]", 5, 44, "missing operand 'src='"),
    (HDR + OK_OP + " bogus=1", 5, len(OK_OP) + 2, "has no field 'bogus'"),
    (HDR + OK_OP + " dst=sbuf[0:1 +0 fp32]", 5, len(OK_OP) + 2, "field 'dst' given twice"),
    (HDR + OK_OP + " wait=s>1", 5, len(OK_OP) + 7, "expected 'SEM>=VALUE', found 's>1'"),
    (HDR + OK_OP + " wait=s>=1x", 5, len(OK_OP) + 11, "expected ',', white space or end of line"),
    (HDR + OK_OP + " wait=t>=1", 5, len(OK_OP) + 7, "undeclared semaphore 't'"),
    (HDR + OK_OP + " signal=s+1,s+1,s+1", 5, len(OK_OP) + 17, "at most 2 signals"),
    (HDR + "tensor_copy dst=sbuf[0:70000 +0 fp32] src=sbuf[0:1 +0 fp32]", 5, 17, "'partitions': 70000"),
    (HDR + "tensor_copy dst=sbuf[5:5 +0 fp32] src=sbuf[0:1 +0 fp32]", 5, 22, "partition range 5:5 is empty"),
    (HDR + "tensor_copy dst=sbuf[0:1 +0 (2147483648,1) fp32] src=sbuf[0:1 +0 fp32]", 5, 17, "dims[0].stride"),
    (HDR + "tensor_copy dst=hbm.B[1@1 +0 fp32] src=sbuf[0:1 +0 fp32]", 5, 21, "undeclared tensor 'B'"),
    (HDR + "matmul dst=psum[0:1 +0 fp32] stationary=sbuf[0:1 +0 fp32] moving=sbuf[0:1 +0 fp32]", 5, 1,
     "cannot run on engine 'vector'"),
    (HDR + "tensor_tensor dst=sbuf[0:1 +0 fp32] in0=sbuf[0:1 +0 fp32] in1=sbuf[0:1 +0 fp32]", 5, 80,
     "missing immediate 'op='"),
    (HDR + "tensor_tensor op=plus", 5, 18, "unknown AluOp 'plus' (expected one of add, sub"),
    (HDR + "memset value=1.2.3", 5, 14, "expected a number"),
    (HDR + "nop wait=s>=4294967296", 5, 1, "wait value 4294967296"),
    (HDR + "frobnicate x=1", 5, 1, "expected an opcode or a directive, found 'frobnicate'"),
    (".stream c0.vector\n.tensor A bf16[1] input\n.program cores=2", 3, 1, ".program must come first"),
    ("nop", 1, 1, "instruction before any '.stream"),
    (".stream c0.warp", 1, 9, "unknown engine 'warp'"),
    (".stream c70000.dma0", 1, 9, "core 70000 not in [0, 65535]"),
    (".stream c0", 1, 9, "expected a stream 'cC.ENGINE[Q]'"),
    (".frob x", 1, 1, "unknown directive '.frob'"),
    (".tensor A bf16[128,0] input", 1, 9, "must be non-empty with positive sizes"),
    (".tensor A bf16[128 input", 1, 19, "expected ',' or ']'"),
    (".sem a, a", 1, 9, "semaphore 'a' declared twice"),
    (".sem 9x", 1, 6, "is not an identifier"),
    (".group g 0,0", 1, 8, "must be distinct"),
    (".program cores=0", 1, 1, "must be >= 1"),
    (".program cores=2 cores=3", 1, 18, "field 'cores' given twice"),
    (HDR + "iota dst=sbuf[0:1 +0 int32] multipliers=1,x", 5, 41, "expected up to 4 comma-separated integers"),
    (HDR + "barrier sem=q count=1", 5, 13, "undeclared semaphore 'q'"),
]


@pytest.mark.parametrize(("text", "line", "col", "frag"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_parse_errors_name_file_line_column(text: str, line: int, col: int, frag: str) -> None:
    with pytest.raises(AsmParseError) as ei:
        parse(text, "bad.s")
    e = ei.value
    assert (e.file, e.line, e.column) == ("bad.s", line, col), str(e)
    assert frag in e.message, str(e)
    assert str(e).startswith(f"bad.s:{line}:{col}: ")


# ---- fuzz --------------------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("abcdhmpst.0123456789[]():+@,=#>-_ \t\n") + ["\x00", "é", "\u2028", "\r"])
_TOKENS = st.sampled_from([
    ".program", ".tensor", ".sem", ".group", ".stream", " c0.vector", " c1.dma3", "matmul", "memset", "iota",
    "barrier", "all_reduce", " dst=", " src=", " value=", " op=add", " sem=s", " group=g", "sbuf[", "psum[",
    "hbm.A[", "0:128", " +0", " (1,128)", " fp32", "]", " wait=s>=1", " signal=s+1", "\n", " ",
    "99999999999999999999999", "-1", "nan", ",", "=", "#",
])


def _check_only_parse_errors(text: str) -> None:
    try:
        parse(text, "fuzz.s")
    except AsmParseError as e:
        assert e.file == "fuzz.s" and e.line >= 1 and e.column >= 1, str(e)


@given(st.text())
def test_fuzz_random_text(text: str) -> None:
    _check_only_parse_errors(text)


@given(st.text(_ALPHABET, max_size=200))
def test_fuzz_grammar_alphabet(text: str) -> None:
    _check_only_parse_errors(text)


@given(st.lists(_TOKENS, max_size=40).map("".join))
def test_fuzz_token_soup(text: str) -> None:
    _check_only_parse_errors(HDR.replace(".tensor A bf16[128,128] input\n", "") + text)


@given(programs(max_instructions=6), st.data())
def test_fuzz_mutated_programs(p: Program, data: st.DataObject) -> None:
    text = print_program(p)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, max(0, len(text) - 1)))
        kind = data.draw(st.sampled_from(["delete", "duplicate", "swap", "insert"]))
        if kind == "delete":
            text = text[:i] + text[i + 1 :]
        elif kind == "duplicate":
            text = text[:i] + text[i : i + 1] + text[i:]
        elif kind == "swap" and i + 1 < len(text):
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        elif kind == "insert":
            text = text[:i] + data.draw(st.sampled_from(list(" =[]():,+@#\n-9x."))) + text[i:]
    _check_only_parse_errors(text)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(AsmParseError, match="expected text"):
        parse(b".sem a")  # type: ignore[arg-type]
