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

Code compiled without the reference-counting runtime (:data:`NO_NRT`: it allocates nothing) does not even need
the runtime: ``rtsys.initialize`` compiles the runtime's own functions with LLVM (~20 ms) and a function that
creates arrays links numba's array implementation, whose module import costs ~35 ms more. So the runtime is
initialised only when the cached machine code names one of its symbols (``NRT_...``; the test is on the object
code itself, so a kernel that calls a runtime-using function is caught too; linking such code without the
runtime would crash the process).

The machine code that runs is the same either way (the cache file is the one numba wrote); tests in
``tests/test_jit.py`` check that a fresh process loads a kernel from the cache without the full set-up and gets
the same results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numba import njit

#: numba options of a function compiled without the reference-counting runtime (numba's ``_nrt=False``): it may
#: allocate nothing (no array creation, no returned arrays). Its cached code loads without the runtime (module
#: docstring). The flag is private and absent from numba's type stubs, hence passed as keyword options.
NO_NRT: dict[str, Any] = {"_nrt": False}


def _needs_runtime(payload: Any) -> bool:
    """True unless ``payload`` (a cache entry: a serialised compile result) is object code naming no symbol of
    numba's runtime. Anything unexpected counts as needing it."""
    try:
        _name, kind, (object_code, _bitcode) = payload[0]
    except (TypeError, ValueError, IndexError):
        return True
    return kind != "object" or not isinstance(object_code, bytes) or b"NRT_" in object_code or b"nrt_" in object_code


def _light_loads(dispatcher: Any) -> None:
    """Make ``dispatcher``'s cache loads initialise at most the numba runtime (see the module docstring)."""
    cache: Any = getattr(dispatcher, "_cache", None)
    full = getattr(cache, "load_overload", None)
    index_key = getattr(cache, "_index_key", None)
    cache_file = getattr(cache, "_cache_file", None)
    impl = getattr(cache, "_impl", None)
    if full is None or index_key is None or cache_file is None or impl is None or not getattr(cache, "_enabled", 0):
        return  # no cache, or a numba without these internals: numba's own loads

    def load_overload(sig: Any, target_context: Any) -> Any:
        from numba.core.runtime import rtsys

        try:
            payload = cache_file.load(index_key(sig, target_context.codegen()))
            cres = None
            if payload is not None:
                if _needs_runtime(payload):
                    rtsys.initialize(target_context)  # the runtime's symbols, which this code links against
                cres = impl.rebuild(target_context, payload)
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
