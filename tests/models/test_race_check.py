"""The lowering's race checker on hand-made programs: which waits order which instructions under the ISA's
semaphore rules (a stream's signals are applied in program order)."""

from __future__ import annotations

from infsim.isa import AccessPattern, DType, Program, sbuf
from infsim.isa import make as mk
from infsim.models.lower.check import find_races

F32 = DType.fp32


def t(k: int) -> AccessPattern:
    """Tile k: 4 partitions x 8 fp32 at byte 64 k (disjoint for different k)."""
    return sbuf(4, 8, F32, offset=64 * k)


def producer(p: Program, n: int, inc: int = 1, sem: str = "g") -> None:
    """n gpsimd memsets of tiles 0..n-1, each signalling ``sem`` by ``inc``."""
    for k in range(n):
        p.append(mk("memset", t(k), value=float(k), engine="gpsimd", signals=[(sem, inc)]))


def test_wait_orders_the_instruction_that_reaches_the_value_and_earlier_ones() -> None:
    for inc in (1, 16):  # DMA-style +16 per transfer as well as +1
        p = Program()
        producer(p, 3, inc)
        p.append(mk("tensor_copy", t(10), t(1), engine="vector", waits=[("g", 2 * inc)]))
        p.append(mk("tensor_copy", t(11), t(0), engine="vector"))  # implied by the earlier wait of its stream
        assert find_races(p) == []
        p.append(mk("tensor_copy", t(12), t(2), engine="vector"))  # the third memset is not waited for
        races = find_races(p)
        assert len(races) == 1 and "instruction 2 (memset) and 5 (tensor_copy)" in races[0]


def test_wait_value_between_totals_names_the_instruction_that_crosses_it() -> None:
    p = Program()
    producer(p, 3, 16)
    p.append(mk("tensor_copy", t(10), t(1), engine="vector", waits=[("g", 17)]))  # 17 needs the second (32)
    assert find_races(p) == []


def test_semaphore_with_two_signalling_streams_orders_nothing() -> None:
    p = Program()
    p.append(mk("memset", t(0), value=1.0, engine="gpsimd", signals=[("g", 1)]))
    p.append(mk("tensor_copy", t(1), t(5), engine="scalar", signals=[("g", 1)]))
    p.append(mk("tensor_copy", t(10), t(0), engine="vector", waits=[("g", 2)]))
    assert len(find_races(p)) == 1  # counter 2 does not name one instruction; the checker does not guess


def test_ordering_is_transitive_through_other_streams() -> None:
    p = Program()
    producer(p, 1)
    p.append(mk("tensor_copy", t(1), t(0), engine="scalar", waits=[("g", 1)], signals=[("s", 1)]))
    p.append(mk("tensor_tensor", t(2), t(0), t(1), engine="vector", op="add", waits=[("s", 1)]))
    assert find_races(p) == []


def test_wait_on_a_later_instruction_gives_no_ordering() -> None:
    p = Program()
    p.append(mk("tensor_copy", t(10), t(0), engine="vector", waits=[("g", 1)]))
    producer(p, 1)
    assert len(find_races(p)) == 1  # program order cannot express it: reported, conservatively
