"""What a plain cycle-fidelity ``infsim run`` leaves unimported: plotting, data-frame and progress-bar libraries
that only other commands (or a terminal) need, ``subprocess`` (the heap trim finds glibc without running
``ldconfig``) and the analytical fidelity's compiled scoreboard."""

from __future__ import annotations

import os
import subprocess
import sys


def test_run_imports_no_plotting_or_progress_libraries(tmp_path) -> None:
    code = (
        "import sys\n"
        "from infsim.cli import main\n"
        "rc = main(['--lowering-cache', 'off', 'run', '--model', 'gpt2', '--context', '64', '--tp', '1'])\n"
        "print(sorted(m for m in ('tqdm', 'matplotlib', 'pandas', 'scipy', 'multiprocessing', 'subprocess',\n"
        "                         'infsim.fidelity.program')\n"
        "             if m in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_run_starts_no_blas_threads(tmp_path) -> None:
    """numpy's OpenBLAS would start a spinning worker thread per core at import (``infsim.cli`` sets
    ``OPENBLAS_NUM_THREADS=1`` first); a setting of the user's is kept. The command also collects the older
    garbage-collector generations rarely (``infsim.cli``'s docstring)."""
    code = (
        "import os, sys\n"
        "from infsim.cli import main\n"
        "rc = main(['--lowering-cache', 'off', 'run', '--model', 'gpt2', '--context', '64', '--tp', '1'])\n"
        "tasks = len(os.listdir('/proc/self/task')) if os.path.isdir('/proc/self/task') else 1\n"
        "import gc\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'], tasks, gc.get_threshold()[1:])\n"
        "sys.exit(rc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "1 1 (1000, 1000)"  # (and older GC generations rarely)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "OPENBLAS_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1].split()[0] == "2"
