"""What a plain cycle-fidelity ``infsim run`` leaves unimported: plotting, data-frame and progress-bar libraries
that only other commands (or a terminal) need."""

from __future__ import annotations

import subprocess
import sys


def test_run_imports_no_plotting_or_progress_libraries(tmp_path) -> None:
    code = (
        "import sys\n"
        "from infsim.cli import main\n"
        "rc = main(['--lowering-cache', 'off', 'run', '--model', 'gpt2', '--context', '64', '--tp', '1'])\n"
        "print(sorted(m for m in ('tqdm', 'matplotlib', 'pandas', 'scipy', 'multiprocessing') if m in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
