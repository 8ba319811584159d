"""``infsim.jit.njit_cached``: a cache miss compiles as numba does; a cache hit in a fresh process loads the
machine code without numba's full compiler set-up and computes the same; code that needs no runtime
(``NO_NRT``) loads without initialising numba's runtime, code that does (or calls code that does) with it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

MODULE = textwrap.dedent('''
    import numpy as np

    from infsim.jit import NO_NRT, njit_cached


    @njit_cached()
    def affine(a):
        out = np.empty_like(a)  # allocates: the cached code needs the numba runtime
        for i in range(a.shape[0]):
            out[i] = a[i] * 2 + 1
        return out


    @njit_cached(**NO_NRT)
    def affine_into(a, out):  # allocates nothing
        for i in range(a.shape[0]):
            out[i] = a[i] * 2 + 1
''')

SCRIPT = textwrap.dedent('''
    import sys

    import numpy as np

    from numba.core.runtime import rtsys

    import jitmod

    if sys.argv[1] == "into":
        out = np.zeros(5, np.int64)
        jitmod.affine_into(np.arange(5), out)
        out, stats = out.tolist(), jitmod.affine_into.stats
    else:
        out, stats = jitmod.affine(np.arange(5)).tolist(), jitmod.affine.stats
    # numba.np.linalg is one of the modules only numba's full compiler set-up imports
    print(out, sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), "numba.np.linalg" in sys.modules,
          rtsys._init)
''')


def _run(tmp_path, which: str = "affine") -> str:
    res = subprocess.run([sys.executable, "-c", SCRIPT, which], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def test_cache_miss_compiles_then_hit_loads_without_full_setup(tmp_path) -> None:
    (tmp_path / "jitmod.py").write_text(MODULE)
    assert _run(tmp_path) == "[1, 3, 5, 7, 9] 0 1 True True"  # compiled (the compiler set itself up) and cached
    assert _run(tmp_path) == "[1, 3, 5, 7, 9] 1 0 False True"  # loaded from the cache, light, with the runtime


def test_code_without_runtime_loads_without_initialising_it(tmp_path) -> None:
    (tmp_path / "jitmod.py").write_text(MODULE)
    assert _run(tmp_path, "into") == "[1, 3, 5, 7, 9] 0 1 True True"  # compiled
    assert _run(tmp_path, "into") == "[1, 3, 5, 7, 9] 1 0 False False"  # loaded: neither set-up nor runtime


def test_needs_runtime_reads_the_object_code() -> None:
    from infsim.jit import _needs_runtime

    assert _needs_runtime((("f", "object", (b"\x7fELF...NRT_decref...", b"")),))
    assert not _needs_runtime((("f", "object", (b"\x7fELF...plain...", b"")),))
    assert _needs_runtime((("f", "bitcode", b"BC..."),))  # not object code: assume it does
    assert _needs_runtime(None)
