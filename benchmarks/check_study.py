"""Compare a generation-study ``results.json`` with the recorded one (``tests/golden/generation_speedup.json``).

``python benchmarks/check_study.py [results/generation_speedup/results.json] [--write]``: exit 0 when every
value except wall-clock time is identical, else list the differing keys (exit 1). ``--write`` records the given
file as the new reference (for a change that is meant to move the study's figures; say why in the commit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "generation_speedup.json"
IGNORED = {"wall_s", "provenance"}  # wall-clock time; the commit, argv and versions that produced it


def _diff(a: object, b: object, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED:
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'new' if k in a else 'reference'}")
            else:
                _diff(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: {b!r} -> {a!r}")


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    path = Path(args[0]) if args else ROOT / "results" / "generation_speedup" / "results.json"
    new = json.loads(path.read_text())
    if "--write" in argv:
        new = {k: v for k, v in new.items() if k not in IGNORED}
        GOLDEN.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
        return 0
    out: list[str] = []
    _diff(new, json.loads(GOLDEN.read_text()), "", out)
    print("\n".join(out[:50]) if out else "identical")
    return 1 if out else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
