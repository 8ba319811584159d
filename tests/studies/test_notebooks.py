"""Every notebook in notebooks/ executes without error (so they never rot), every cell that draws a figure
shows it, and the copy in the repository is an executed one that contains its figures.

Re-execute a notebook after editing it: ``python tests/studies/test_notebooks.py --write`` (writes the outputs
in place).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def _plots(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and ("plt.subplots" in cell.source or "plt.figure" in cell.source)


def _images(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def _execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


@pytest.mark.slow  # each notebook starts a kernel and runs studies
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_and_shows_its_figures(path: Path) -> None:
    nb = _execute(path)
    plotting = [i for i, c in enumerate(nb.cells) if _plots(c)]
    assert plotting, "a notebook of figures without a plotting cell"
    assert [i for i in plotting if _images(nb.cells[i]) == 0] == [], "plotting cells without an image"
    assert "matplotlib.use(" not in "".join(c.source for c in nb.cells)  # no backend switch: inline figures


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_copy_is_executed_with_figures(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    missing = [i for i, c in enumerate(nb.cells) if _plots(c) and _images(c) == 0]
    assert missing == [], f"cells {missing} have no figure: re-run python tests/studies/test_notebooks.py --write"


if __name__ == "__main__" and "--write" in sys.argv:
    for p in NOTEBOOKS:
        nbformat.write(_execute(p), p)
        print(f"executed {p}")
