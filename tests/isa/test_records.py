"""isa/records.py: read_fields gives exactly numpy's per-field copies, on any record bytes and any subset of
fields, for contiguous, offset and strided record arrays; copy_records gives numpy's record assignment. The AP
table's bulk deduplication (Program.intern_aps, append_aps, the index rebuilt after install_tables) gives the
table and indices that adding the rows one at a time gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from infsim.isa.program import Program
from infsim.isa.records import AP_DTYPE, INSTR_DTYPE, copy_records, read_fields


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 50), table=st.sampled_from([INSTR_DTYPE, AP_DTYPE]),
       data=st.data())
def test_read_fields_equals_numpy_fields(seed: int, n: int, table: np.dtype, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    recs = np.frombuffer(rng.integers(0, 256, n * table.itemsize, dtype=np.uint8).tobytes(), table).copy()
    names = data.draw(st.lists(st.sampled_from(list(table.names)), min_size=1, max_size=5, unique=True))
    view = data.draw(st.sampled_from(["all", "offset", "strided"]))
    sub = {"all": recs, "offset": recs[1:], "strided": recs[::2]}[view]
    for name, got in zip(names, read_fields(sub, *names), strict=True):
        want = sub[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), name


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 30), table=st.sampled_from([INSTR_DTYPE, AP_DTYPE]),
       view=st.sampled_from(["all", "offset", "strided"]))
def test_copy_records_equals_numpy_assignment(seed: int, n: int, table: np.dtype, view: str) -> None:
    rng = np.random.default_rng(seed)
    recs = np.frombuffer(rng.integers(0, 256, 2 * n * table.itemsize, dtype=np.uint8).tobytes(), table).copy()
    src = {"all": recs[:n], "offset": recs[1 : n + 1], "strided": recs[: 2 * n : 2]}[view]
    got, want = np.zeros(len(src) + 2, table), np.zeros(len(src) + 2, table)
    copy_records(got[1 : len(src) + 1], src)
    want[1 : len(src) + 1] = src
    assert got.tobytes() == want.tobytes()


def _one_by_one(known: np.ndarray, rows: np.ndarray) -> tuple[list[int], bytes]:
    """(indices, table bytes) of interning ``rows`` after ``known`` one row at a time (the reference)."""
    table = [r.tobytes() for r in known]
    first: dict[bytes, int] = {}
    for i, r in enumerate(table):
        first.setdefault(r, i)
    out = []
    for r in rows:
        key = r.tobytes()
        if key not in first:
            first[key] = len(table)
            table.append(key)
        out.append(first[key])
    return out, b"".join(table)


@given(seed=st.integers(0, 2**32 - 1), n_known=st.integers(0, 20), n=st.integers(0, 40),
       distinct=st.integers(1, 8), installed=st.booleans())
def test_intern_aps_equals_one_by_one(seed: int, n_known: int, n: int, distinct: int, installed: bool) -> None:
    rng = np.random.default_rng(seed)
    pool = np.zeros(distinct, AP_DTYPE)  # few distinct rows: repeats within a batch and against the table
    pool["offset"] = rng.integers(0, 1000, distinct)
    pool["tensor"] = rng.integers(-1, 3, distinct)
    known, rows = pool[rng.integers(0, distinct, n_known)], pool[rng.integers(0, distinct, n)]
    p = Program()
    if installed:  # the deduplication index rebuilt from an installed table (duplicates in it: first one wins)
        p.install_tables(np.zeros(0, INSTR_DTYPE), known)
    else:
        p.append_aps(known)
    want_ids, want_table = _one_by_one(known, rows)
    got = p.intern_aps(rows)
    assert got.dtype == np.int64 and got.tolist() == want_ids
    assert p.aps.tobytes() == want_table
    assert p.intern_aps(rows).tolist() == want_ids  # all known now: nothing added
    assert p.aps.tobytes() == want_table
