"""Test configuration: the hypothesis profiles (``ci`` keeps property tests bounded, ``dev`` is the default,
``thorough`` runs many more examples), chosen with ``HYPOTHESIS_PROFILE``. There are no shared fixtures yet:
helpers shared by several test modules are plain modules beside them (``strategies.py``, ``engine_programs.py``,
``preset_sources.py``, ``cli_harness.py``: the command line in a forked child with a time limit and a memory cap)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

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
