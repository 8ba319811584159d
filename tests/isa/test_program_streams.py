"""``Program.streams``: every stream's instructions in program order, streams in ``(core, engine, queue)`` order,
the same whether the stream ids fit the 16-bit radix path or need the wide keys."""

from __future__ import annotations

import numpy as np
import pytest

from infsim.isa.program import Program
from infsim.isa.records import AP_DTYPE, INSTR_DTYPE


def _reference(ins: np.ndarray) -> dict[tuple[int, int, int], list[int]]:
    out: dict[tuple[int, int, int], list[int]] = {}
    for i, r in enumerate(ins):
        out.setdefault((int(r["core"]), int(r["engine"]), int(r["queue"])), []).append(i)
    return dict(sorted(out.items()))


@pytest.mark.parametrize("cores,queues,n", [(1, 1, 0), (2, 3, 500), (4, 40, 3000), (300, 250, 4000)])
def test_streams_are_program_order_per_core_engine_queue(cores: int, queues: int, n: int) -> None:
    # the last case has more (core, engine, queue) ids than 16 bits hold: the wide-key path
    rng = np.random.default_rng(cores + n)
    ins = np.zeros(n, INSTR_DTYPE)
    ins["core"] = rng.integers(0, cores, n)
    ins["engine"] = rng.integers(0, 7, n)
    ins["queue"] = rng.integers(0, queues, n)
    p = Program(num_cores=cores, cores_per_chip=cores)
    p.install_tables(ins, np.zeros(1, AP_DTYPE))
    got = p.streams()
    want = _reference(p.instr)
    assert list(got) == list(want)
    assert all(got[k].tolist() == v for k, v in want.items())
    np.testing.assert_array_equal(p.stream_order(), np.concatenate([*got.values(), np.zeros(0, np.int64)]))
