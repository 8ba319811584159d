"""Provenance of a result: what produced it, so a figure can be reproduced. ``provenance(chips)`` gives the
infsim version, the git commit of the source tree when it is a git checkout (and whether it had uncommitted
changes), the Python version, the command line, and the resolved configuration of every chip involved.
Written into ``results.json`` of the studies, sweep Parquet metadata and ``--json`` output."""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": bool(status.strip())} if commit else {}


def version() -> str:
    """The installed infsim version (``0+unknown`` when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v("infsim")
    except PackageNotFoundError:
        return "0+unknown"


def provenance(chips: list[Any] | None = None) -> dict[str, Any]:
    """What produced a result (see the module docstring); ``chips``: ChipConfigs to record resolved."""
    out: dict[str, Any] = {"infsim_version": version(), **_git(), "python": sys.version.split()[0],
                           "argv": list(sys.argv)}
    if chips:
        out["chips"] = {c.name: c.model_dump(mode="json") for c in chips}
    return out
