"""Progress bars of long commands (tqdm on stderr), shown only on a terminal: in a pipe or a log file
stderr carries nothing but the one-line error of a failed command (``infsim: error: ...``)."""

from __future__ import annotations

import sys
from typing import Any


class _Hidden:
    """A bar that shows nothing: the part of tqdm's interface the commands use."""

    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, **kwargs: Any) -> Any:
    """A tqdm bar when ``enabled`` and stderr is a terminal, else a hidden one (``update``, ``close``; tqdm, with
    its multiprocessing lock, is then not even imported)."""
    if not show_progress(enabled):
        return _Hidden()
    from tqdm import tqdm

    return tqdm(**kwargs)


def show_progress(enabled: bool) -> bool:
    """Whether a library's own progress bar should show (``enabled`` and stderr is a terminal)."""
    return enabled and sys.stderr.isatty()


def end_progress_bars() -> None:
    """Close the bars still open (before an error message, so that it starts on a line of its own)."""
    mod = sys.modules.get("tqdm")
    if mod is None:
        return
    for bar in list(getattr(mod.tqdm, "_instances", ())):
        bar.close()
