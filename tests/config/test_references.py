"""The project's references live inside the repository: every citation tag of a preset is defined in
``docs/references.md``, and no tracked file points at source notes outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from preset_sources import TAG

from infsim.config.loader import PRESET_DIR
from infsim.hw.hbm.config import PRESET_DIR as HBM_PRESET_DIR

ROOT = Path(__file__).resolve().parents[2]
REFERENCES = ROOT / "docs" / "references.md"
PRESET_FILES = sorted(PRESET_DIR.glob("*.yaml")) + sorted(HBM_PRESET_DIR.glob("*.yaml"))

# Pointers at the project's notes outside the repository (the shared folder beside it and the files in it).
# Spelled in pieces so that this file does not match itself.
_OUTSIDE = re.compile("|".join([
    r"shared" + r"/docs", r"\.\./" + r"shared",
    r"\b(?:hardware|energy)-" + r"facts\.md", r"\bhbm-" + r"params\.md", r"lessons-from-" + r"peers\.md",
    r"\bdram_" + r"reference\.md",
]))
_ALLOWED = {"docs/references.md"}  # the one place that may say where the references came from


def defined_tags(text: str) -> list[str]:
    """Tags defined in references.md: headings ``### [TAG] title``, in order."""
    return re.findall(r"^###\s+(\[[A-Z][A-Za-z0-9-]*\])\s", text, re.MULTILINE)


def outside_pointers(files: dict[str, str]) -> list[str]:
    """``path:line: text`` of every line of ``files`` (path -> text) that points outside the repository."""
    hits = []
    for path, text in sorted(files.items()):
        if path in _ALLOWED:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                hits.append(f"{path}:{n}: {line.strip()[:120]}")
    return hits


def _tracked_files() -> dict[str, str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = {}
    for name in out.decode().split("\0"):
        p = ROOT / name
        if name and p.is_file():
            files[name] = p.read_bytes().decode("utf-8", errors="replace")
    return files


def test_references_define_each_tag_once() -> None:
    tags = defined_tags(REFERENCES.read_text())
    assert len(tags) > 40
    dup = sorted({t for t in tags if tags.count(t) > 1})
    assert not dup, f"docs/references.md defines these tags more than once: {dup}"


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_preset_tag_is_defined_in_references(path: Path) -> None:
    defined = set(defined_tags(REFERENCES.read_text()))
    used = set(TAG.findall(path.read_text()))
    assert used, f"{path.name} cites no source tag"
    missing = sorted(used - defined)
    assert not missing, f"{path.name}: tags not defined in docs/references.md: {missing}"


def test_presets_point_at_references() -> None:
    for path in PRESET_FILES:
        header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
        assert "docs/references.md" in header, f"{path.name}: header does not point at docs/references.md"


def test_no_tracked_file_points_outside_the_repository() -> None:
    hits = outside_pointers(_tracked_files())
    assert not hits, "files that point outside the repository for their sources:\n" + "\n".join(hits)


def test_the_checks_catch_what_they_look_for() -> None:
    bad = {
        "a.py": "x = 1  # see " + "shared" + "/docs/design.md\n",
        "b.yaml": "y: 2  # " + "../" + "shared/notes\n",
        "c.md": "from hbm-" + "params.md, column X\n",
        "docs/references.md": "shared" + "/docs is where these came from\n",
        "d.py": "no pointer here: shared memory, docs/references.md\n",
    }
    assert [h.split(":")[0] for h in outside_pointers(bad)] == ["a.py", "b.yaml", "c.md"]
    assert defined_tags("### [A-1] one\ntext [B]\n### [C] two\n## [D] not a tag heading\n") == ["[A-1]", "[C]"]
