"""``parse_yaml``'s libyaml fast path gives the reference loader's values, and its errors stay the reference's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infsim.config.loader import _UniqueKeyCLoader, _UniqueKeyLoader
from infsim.errors import InfsimError
from infsim.userfiles import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted(p for p in ROOT.glob("infsim/**/*.yaml")) + sorted(ROOT.glob("examples/**/*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_fast_and_reference_loaders_agree_on_shipped_yaml(path: Path) -> None:
    text = path.read_text()
    ref = yaml.load(text, Loader=_UniqueKeyLoader)
    assert yaml.load(text, Loader=_UniqueKeyCLoader) == ref
    assert parse_yaml(text, str(path), _UniqueKeyLoader, fast_loader=_UniqueKeyCLoader) == ref
    assert parse_yaml(text, str(path)) == yaml.load(text, Loader=yaml.SafeLoader)


def test_errors_are_the_reference_loaders() -> None:
    text = "a: 1\nb:\n  c: 2\na: 3\n"
    with pytest.raises(InfsimError, match=r"^f.yaml:4: invalid YAML: duplicate key 'a' \(first on line 1\)"):
        parse_yaml(text, "f.yaml", _UniqueKeyLoader, fast_loader=_UniqueKeyCLoader)
    with pytest.raises(InfsimError, match=r"^g.yaml:1: invalid YAML: unacceptable character #x0001"):
        parse_yaml("a: \x01\n", "g.yaml")
