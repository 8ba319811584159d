"""``infsim.jit.njit_cached``: a cache miss compiles as numba does; a cache hit in a fresh process loads the
machine code without numba's full compiler set-up and computes the same."""

from __future__ import annotations

import subprocess
import sys
import textwrap

MODULE = textwrap.dedent('''
    import numpy as np

    from infsim.jit import njit_cached


    @njit_cached()
    def affine(a):
        out = np.empty_like(a)  # allocates: the cached code needs the numba runtime
        for i in range(a.shape[0]):
            out[i] = a[i] * 2 + 1
        return out
''')

SCRIPT = textwrap.dedent('''
    import sys

    import numpy as np

    import jitmod

    out = jitmod.affine(np.arange(5)).tolist()
    stats = jitmod.affine.stats
    # numba.np.linalg is one of the modules only numba's full compiler set-up imports
    print(out, sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), "numba.np.linalg" in sys.modules)
''')


def _run(tmp_path) -> str:
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def test_cache_miss_compiles_then_hit_loads_without_full_setup(tmp_path) -> None:
    (tmp_path / "jitmod.py").write_text(MODULE)
    assert _run(tmp_path) == "[1, 3, 5, 7, 9] 0 1 True"  # compiled (the compiler set itself up) and cached
    assert _run(tmp_path) == "[1, 3, 5, 7, 9] 1 0 False"  # loaded from the cache, light
