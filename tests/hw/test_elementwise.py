"""Vector / scalar / gpsimd cost model: the vectorised closed form equals the element-by-element reference,
and the published NeuronCore-v2 rules hold on the inf2 preset."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from infsim.config import load_chip
from infsim.config.schema import ElementwiseEngineConfig
from infsim.hw.elementwise import elementwise_cycles, elementwise_cycles_reference

configs = st.builds(
    ElementwiseEngineConfig,
    lanes=st.sampled_from([16, 32, 128]),
    clock_ghz=st.just(1.0),
    elems_per_cycle_per_lane=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    two_input_factor=st.sampled_from([1.0, 1.5, 2.0]),
    fixed_overhead_cycles=st.integers(0, 128),
    strided_penalty=st.sampled_from([1.0, 2.0]),
    reduce_extra_cycles=st.integers(0, 64),
)


@given(configs, st.integers(1, 300), st.integers(1, 300), st.integers(0, 3), st.sampled_from([0.5, 1.0, 1.25, 3.0]),
       st.booleans(), st.booleans())
def test_fast_equals_reference(cfg, parts, free, n_in, func, strided, reduce) -> None:
    fast = elementwise_cycles(cfg, parts, free, n_in, func, strided, reduce)
    assert int(fast) == elementwise_cycles_reference(cfg, parts, free, n_in, func, strided, reduce)


def test_vectorised_over_arrays() -> None:
    cfg = load_chip("inf2").vector_engine
    parts = np.array([1, 128, 129, 256])
    out = elementwise_cycles(cfg, parts, 512, 1)
    assert out.tolist() == [elementwise_cycles_reference(cfg, int(p), 512, 1) for p in parts]


def test_published_rules_inf2() -> None:
    ve = load_chip("inf2").vector_engine
    ovh = ve.fixed_overhead_cycles
    assert elementwise_cycles(ve, 128, 512, 1) == ovh + 512        # ~N cycles, one input
    assert elementwise_cycles(ve, 128, 512, 2) == ovh + 1024       # ~2N cycles, two inputs
    assert elementwise_cycles(ve, 1, 512, 1) == elementwise_cycles(ve, 128, 512, 1)  # fewer partitions: same
    assert elementwise_cycles(ve, 128, 512, 1, strided=True) == ovh + 1024  # >16 B stride: half bandwidth
    se = load_chip("inf2").scalar_engine
    assert elementwise_cycles(se, 128, 512, 1, reduce=True) == elementwise_cycles(se, 128, 512, 1) + 64
