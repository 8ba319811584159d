"""Lowered programs (and their instruction tags) are byte-identical to the recorded ones
(tests/golden/program_hashes.json).

A change meant to alter emitted programs re-records them with ``python benchmarks/program_hashes.py --write``
and says why in its commit message; any other change to a hash is a regression.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("program_hashes", ROOT / "benchmarks" / "program_hashes.py")
assert _spec and _spec.loader
ph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ph)

CI_CASES = [
    "gpt2-l2-prefill-b2-c128-tp1-inf2",
    "gpt2-l2-decode-b1-c128-tp2-inf2",
    "bert-base-l2-prefill-b4-c128-tp1-inf2",
    "vit-b16-l2-prefill-b1-tp1-inf2",
    "llama-2-7b-l2-decode-b1-c2048-tp2-inf2",
    "llama-2-7b-l2-decode-b1-c512-tp2-int8-inf2",
]


@pytest.mark.parametrize("name", CI_CASES)
def test_program_hash_unchanged(name: str) -> None:
    want = json.loads(ph.GOLDEN.read_text())[name]
    assert ph.record(ph.lower_case(ph.CASES[name])) == want
