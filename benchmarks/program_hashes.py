"""Hashes of lowered programs: the regression net for refactors of the lowering.

Lowers a fixed set of (model, workload, chip) cases and writes a SHA-256 of each program (instruction
and access-pattern tables, tensors, semaphores, groups) and one of its instruction tags (op class and
layer of every instruction, :mod:`infsim.models.lower.tags`) to ``tests/golden/program_hashes.json``
(``--write``) or checks the current code against that file (default). A change that is meant to alter
emitted programs rewrites the file in the same commit and says why in the commit message.

``python benchmarks/program_hashes.py [--write] [--quick]`` (``--quick``: the small cases only, the
ones ``tests/models/test_program_hashes.py`` checks in CI).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "program_hashes.json"

# name: (model, layers or None for all, phase, batch, context, tp, dtype, chip, quick)
CASES: dict[str, tuple[str, int | None, str, int, int, int, str, str, bool]] = {
    "gpt2-l2-prefill-b2-c128-tp1-inf2": ("gpt2", 2, "prefill", 2, 128, 1, "bf16", "inf2", True),
    "gpt2-l2-decode-b1-c128-tp2-inf2": ("gpt2", 2, "decode", 1, 128, 2, "bf16", "inf2", True),
    "bert-base-l2-prefill-b4-c128-tp1-inf2": ("bert-base-uncased", 2, "prefill", 4, 128, 1, "bf16", "inf2", True),
    "vit-b16-l2-prefill-b1-tp1-inf2": ("vit-b-16", 2, "prefill", 1, 197, 1, "bf16", "inf2", True),
    "llama-2-7b-l2-decode-b1-c2048-tp2-inf2": ("llama-2-7b", 2, "decode", 1, 2048, 2, "bf16", "inf2", True),
    "llama-2-7b-l2-decode-b8-c512-tp2-fp8-inf2": ("llama-2-7b", 2, "decode", 8, 512, 2, "fp8_e4m3", "inf2", True),
    "llama-2-7b-l2-decode-b1-c512-tp2-int8-inf2": ("llama-2-7b", 2, "decode", 1, 512, 2, "int8", "inf2", True),
    "llama-3-8b-l2-prefill-b1-c512-tp2-inf2": ("llama-3-8b", 2, "prefill", 1, 512, 2, "bf16", "inf2", True),
    "llama-3-8b-l2-decode-b4-c1024-tp4-trn2": ("llama-3-8b", 2, "decode", 4, 1024, 4, "bf16", "trn2", True),
    "mixtral-l2-decode-b2-c256-tp8-trn2": ("mixtral-8x7b", 2, "decode", 2, 256, 8, "bf16", "trn2", True),
    "llama-2-7b-l2-decode-b1-c2048-tp4-nextgen-hbm3e": ("llama-2-7b", 2, "decode", 1, 2048, 4, "bf16",
                                                        "nextgen-hbm3e", True),
    "llama-2-7b-l2-prefill-b1-c2048-tp2-nextgen-decode": ("llama-2-7b", 2, "prefill", 1, 2048, 2, "bf16",
                                                           "nextgen-decode", True),
    "llama-2-7b-decode-b1-c2048-tp2-inf2": ("llama-2-7b", None, "decode", 1, 2048, 2, "bf16", "inf2", False),
    "llama-2-7b-prefill-b1-c2048-tp2-inf2": ("llama-2-7b", None, "prefill", 1, 2048, 2, "bf16", "inf2", False),
}


def program_hash(program: object) -> str:
    """SHA-256 over everything that defines a program's behaviour."""
    p = program
    h = hashlib.sha256()
    h.update(repr((p.num_cores, p.cores_per_chip)).encode())
    h.update(repr(sorted((k, repr(v)) for k, v in p.tensors.items())).encode())
    h.update(repr(list(p.semaphores)).encode())
    h.update(repr(sorted(p.groups.items())).encode())
    h.update(p.instr.tobytes())
    h.update(p.aps.tobytes())
    return h.hexdigest()


def tags_hash(lowered: object) -> str:
    """SHA-256 of the instruction tags of a lowered program."""
    h = hashlib.sha256()
    h.update(lowered.op_class.tobytes())  # type: ignore[attr-defined]
    h.update(lowered.layer.tobytes())  # type: ignore[attr-defined]
    return h.hexdigest()


def record(lowered: object) -> dict[str, object]:
    """The golden entry of a lowered program."""
    p = lowered.program  # type: ignore[attr-defined]
    return {"sha256": program_hash(p), "tags_sha256": tags_hash(lowered), "instructions": len(p)}


def lower_case(case: tuple) -> object:
    from infsim.config import load_chip
    from infsim.models.graph import Workload
    from infsim.models.lower import lower
    from infsim.models.spec import load_model

    model, layers, phase, batch, context, tp, dtype, chip, _ = case
    spec = load_model(model)
    if layers is not None:
        spec = dataclasses.replace(spec, layers=layers)
    wl = Workload.make(phase, batch=batch, context=context, tp=tp, dtype=dtype)
    return lower(spec, wl, load_chip(chip))


def compute(quick: bool) -> dict[str, dict[str, object]]:
    out = {}
    for name, case in CASES.items():
        if quick and not case[-1]:
            continue
        t0 = time.perf_counter()
        lw = lower_case(case)
        out[name] = record(lw)
        print(f"{name}: {out[name]['instructions']} instructions, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        del lw
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the golden file")
    ap.add_argument("--quick", action="store_true", help="small cases only")
    args = ap.parse_args()
    got = compute(args.quick)
    if args.write:
        old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        old.update(got)
        GOLDEN.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
        return 0
    want = json.loads(GOLDEN.read_text())
    bad = [k for k, v in got.items() if want.get(k) != v]
    for k in bad:
        print(f"CHANGED {k}: {want.get(k)} -> {got[k]}")
    print("all identical" if not bad else f"{len(bad)} of {len(got)} changed")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
