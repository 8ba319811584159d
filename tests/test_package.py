"""Packaging: every subpackage on disk is listed in pyproject (a non-editable install would miss it),
and no generic top-level names (``models``, ``isa``) are importable from site-packages."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _packages_on_disk() -> set[str]:
    mapping = {"infsim": "infsim", "isa": "infsim.isa", "models": "infsim.models"}
    out = set()
    for top, pkg in mapping.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            out.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    return out


def test_every_subpackage_is_listed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    missing = _packages_on_disk() - listed
    assert not missing, f"add to [tool.setuptools].packages: {sorted(missing)}"


def test_namespaced_imports() -> None:
    code = "import infsim.isa, infsim.models, infsim.config; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "ok", out.stderr


def test_cli_usage_error_exits_2() -> None:
    out = subprocess.run([sys.executable, "-m", "infsim", "no-such-command"], capture_output=True, text=True)
    assert out.returncode == 2
