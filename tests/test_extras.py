"""Optional extras: a core install (no pyarrow, distributed, optuna) imports every module and runs the CLI,
and a feature that needs an extra fails with one line naming it (``pip install -e ".[sweep]"``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infsim.errors import InfsimError
from infsim.extras import EXTRAS, require

# hide the extras (a None entry in sys.modules makes their import fail), then use everything else
_CORE = """
import sys
for m in {extras!r}:
    sys.modules[m] = None
import infsim.studies.compare, infsim.studies.inverse, infsim.studies.plots, infsim.studies.search
import infsim.studies.sweep
from infsim.cli import build_parser, main
build_parser()
rc = main(sys.argv[1:])
print("rc", rc)
"""


@pytest.mark.parametrize(("argv", "extra"), [
    (["sweep", "{spec}", "--out", "{out}"], "sweep"),
    (["search", "{spec}", "--trials", "1", "--out", "{out}"], "search"),
])
def test_missing_extra_is_one_line_naming_it(tmp_path: Path, argv: list[str], extra: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": "inf2", "axes": {"hbm.bandwidth_gbps": [800]},
                                    "workloads": [{"model": "gpt2", "context": 64}]}))
    args = [a.format(spec=spec, out=tmp_path / "out") for a in argv]
    out = subprocess.run([sys.executable, "-c", _CORE.format(extras=list(EXTRAS)), *args],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "rc 1", out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"infsim: error: infsim {extra} needs ")
    assert f'pip install -e ".[{extra}]"' in out.stderr


def test_require(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("optuna", "x").__name__ == "optuna"  # installed here (.[dev] pulls in every extra)
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(InfsimError, match=r'^infsim sweep --scheduler needs distributed, which is not installed: '
                                          r'pip install -e "\.\[sweep\]"'):
        require("distributed", "infsim sweep --scheduler")


def test_dev_extra_pulls_in_every_extra() -> None:
    import tomllib

    cfg = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = cfg["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(extras)
    assert "infsim[" + ",".join(sorted(set(EXTRAS.values()))) + "]" in extras["dev"]
    core = " ".join(cfg["dependencies"])
    assert not any(m in core for m in EXTRAS)
