"""isa/records.py: read_fields gives exactly numpy's per-field copies, on any record bytes and any subset of
fields, for contiguous, offset and strided record arrays."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from infsim.isa.records import AP_DTYPE, INSTR_DTYPE, read_fields


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
