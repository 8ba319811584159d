"""``njit_cached``: numba's ``njit(cache=True)`` whose loads from the on-disk cache skip numba's compiler set-up.

numba prepares its compiler before it even looks in its cache: every first cache load in a process calls
``target_context.refresh()``, which imports and installs every typing and lowering registry numba has (numpy
linalg, random, polynomial, typed containers, jitclass, ...; about 0.13 s of CPU, a tenth of a cached
``infsim run``). A function rebuilt from the cache needs none of that: its machine code is in the cache file and
only has to be linked, which needs the numba runtime's C symbols (``rtsys.initialize``, what ``refresh`` also
does first) and nothing else. So a dispatcher made here loads cached overloads after initialising the runtime
only. Anything else falls back to numba's own path, which then does the full set-up: a cache miss (the compiler
refreshes the context itself before compiling), any error while loading (numba's own load then reports or
swallows it as it always does), and a numba whose cache object lacks the internals used here (the dispatcher is
left as numba made it).

The machine code that runs is the same either way (the cache file is the one numba wrote); tests in
``tests/test_jit.py`` check that a fresh process loads a kernel from the cache without the full set-up and gets
the same results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numba import njit


def _light_loads(dispatcher: Any) -> None:
    """Make ``dispatcher``'s cache loads initialise only the numba runtime (see the module docstring)."""
    cache: Any = getattr(dispatcher, "_cache", None)
    load = getattr(cache, "_load_overload", None)
    full = getattr(cache, "load_overload", None)
    if load is None or full is None:  # no cache, or a numba without these internals: numba's own loads
        return

    def load_overload(sig: Any, target_context: Any) -> Any:
        from numba.core.runtime import rtsys

        try:
            rtsys.initialize(target_context)  # the runtime's C symbols, which cached code links against
            cres = load(sig, target_context)
        except Exception:  # noqa: BLE001 -- numba's own path below reports (or ignores) it as it always does
            cres = None
        return cres if cres is not None else full(sig, target_context)

    cache.load_overload = load_overload


def njit_cached(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True, **options)`` with light cache loads (see the module docstring)."""

    def decorate(fn: Callable[..., Any]) -> Any:
        dispatcher = njit(cache=True, **options)(fn)
        _light_loads(dispatcher)
        return dispatcher

    return decorate
