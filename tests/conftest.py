"""Test configuration: the hypothesis profiles (``ci`` keeps property tests bounded, ``dev`` is the default,
``thorough`` runs many more examples), chosen with ``HYPOTHESIS_PROFILE``; the ``slow`` marker; shared chip
fixtures.

Fixture: ``inf2`` (the inf2 preset, loaded once per session; chip configs are frozen, so sharing it is
safe). Helpers shared by several test modules that are not fixtures are plain modules beside
them (``engine_programs.py``, ``preset_sources.py``, ``cli_harness.py``: the command line in a forked child
with a time limit and a memory cap); the hypothesis strategies for ISA programs are part of
the library (``infsim.isa.strategies``).

The ``slow`` marker tags the tests that take tens of seconds (full-size models, the notebooks, the study):
CI still runs them; ``pytest -m "not slow"`` is the quick loop while editing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

from infsim.config import ChipConfig, load_chip

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Lowered-program cache (infsim.models.lower.cache): one fresh directory per test process, removed at exit, so
# tests exercise the cache without reading or filling the user's.
_CACHE = tempfile.mkdtemp(prefix="infsim-lowering-")
os.environ["INFSIM_LOWERING_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(scope="session")
def inf2() -> ChipConfig:
    """The inf2 preset (the baseline chip of most tests)."""
    return load_chip("inf2")
