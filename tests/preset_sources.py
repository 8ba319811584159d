"""The source check of preset YAML files (chip presets and HBM presets), shared by their tests.

Every numeric leaf of a preset must carry a ``[TAG]``, ``assumed`` or ``inferred`` in its own comment or in
the comment of an enclosing block key; a ``[TAG]`` used in a value's comment must be defined in the file's
leading comment block (a header line that starts with ``# [TAG]``). The tags themselves are defined, with
their sources, in ``docs/references.md`` (``tests/config/test_references.py``).
"""

from __future__ import annotations

import re

TAG = re.compile(r"\[[A-Z][A-Za-z0-9-]*\]")
_SOURCED = re.compile(r"\[[A-Z][A-Za-z0-9-]*\]|\bassumed\b|\binferred\b", re.IGNORECASE)
_NUM = r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z0-9_.-]+):(?P<value>[^#]*?)\s*(?:#(?P<comment>.*))?$")
_NUMERIC = re.compile(rf"^(?:{_NUM}|\[[\d\s,.\[\]eE+-]*\])$")


def header_tags(lines: list[str]) -> set[str]:
    """Tags defined in the leading comment block: lines that start with one or more ``[TAG]``."""
    tags: set[str] = set()
    for line in lines:
        if not line.startswith("#"):
            break
        m = re.match(r"^#\s*((?:\[[A-Z][A-Za-z0-9-]*\]\s*)+)", line)
        if m:
            tags |= set(TAG.findall(m.group(1)))
    return tags


def unsourced(text: str) -> tuple[list[str], set[str]]:
    """Numeric leaves whose own comment, or the comment of an enclosing block key, has no ``[TAG]`` /
    ``assumed`` / ``inferred``; and the tags used but not defined in the header."""
    lines = text.splitlines()
    defined = header_tags(lines)
    bad: list[str] = []
    used: set[str] = set()
    stack: list[tuple[int, bool]] = []  # (indent, sourced) of the enclosing block keys
    for n, line in enumerate(lines, 1):
        m = _LINE.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, value, comment = len(m["indent"]), m["value"].strip(), m["comment"] or ""
        used |= set(TAG.findall(comment))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        sourced = bool(_SOURCED.search(comment))
        if not value:  # a block key: its comment covers the leaves under it
            stack.append((indent, sourced))
        elif _NUMERIC.match(value) and not (sourced or any(s for _, s in stack)):
            bad.append(f"line {n}: {line.strip()}")
    return bad, used - defined
