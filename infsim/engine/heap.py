"""Hand the C heap's free pages back to the operating system between the large phases of a run.

numpy takes arrays of up to a few tens of MB from the C heap (glibc ``malloc``; larger ones are mapped and
unmapped on their own). Freed there, their pages stay in the process: after costing a 70B program ~250 MB of
freed temporaries still count towards its resident size while the engine allocates its own tables. glibc's
``malloc_trim(0)`` returns every free page of the heap; the engine calls :func:`release_free_heap` where a
phase's temporaries are gone and the next phase's large arrays are about to be touched. Elsewhere (no glibc) it
does nothing. What it leaves out: memory fragmented inside pages that still hold live objects.
"""

from __future__ import annotations

import ctypes
from typing import Any

_trim: Any = None


def _find_trim() -> Any:
    """glibc's ``malloc_trim``, or False. The C library is linked into the interpreter itself, so its symbols
    are looked up there first; ``ctypes.util.find_library`` (which runs ``ldconfig``, a child process) only
    when that fails."""
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        if trim is not None:
            return trim
        from ctypes.util import find_library

        return getattr(ctypes.CDLL(find_library("c") or "libc.so.6"), "malloc_trim", False)
    except OSError:
        return False


def release_free_heap() -> None:
    """``malloc_trim(0)`` where the C library has it (glibc), else nothing."""
    global _trim
    if _trim is None:
        _trim = _find_trim()
    if _trim:
        _trim(0)
