"""A disk cache of DRAM-level probe results, shared by processes (the streaming probe of a preset takes
0.5-1.5 s of command-level simulation; a sweep worker or a CLI call should not pay it again).

One JSON file per (HBM preset content, stacks, probe version) in ``$INFSIM_CACHE_DIR/hbm`` (default
``~/.cache/infsim/hbm``); ``INFSIM_CACHE_DIR=off`` disables it. Values are floats keyed by a probe name.
Writes go to a temporary file renamed over the old one (atomic on POSIX), after merging what another
process wrote meanwhile; a concurrent writer can drop the other's newest entries, which are then simply
computed again. An unreadable or damaged file counts as empty. Results do not depend on the cache: a
cached value is the float the probe returned (JSON round-trips doubles exactly).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

#: bump when a probe's definition changes (older files are then ignored)
VERSION = 1


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    root = os.environ.get("INFSIM_CACHE_DIR")
    if root is not None and root.strip().lower() in ("", "off", "0", "none"):
        return None
    base = Path(root) if root else Path.home() / ".cache" / "infsim"
    return base / "hbm"


class ProbeCache:
    """Probe results of one HBM preset (identified by its full JSON content) and stack count."""

    def __init__(self, preset_json: str, stacks: int):
        digest = hashlib.sha256(f"{VERSION}:{stacks}:{preset_json}".encode()).hexdigest()[:24]
        folder = cache_dir()
        self.path = None if folder is None else folder / f"{digest}.json"
        self._data: dict[str, float] | None = None

    def _load(self) -> dict[str, float]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}

    def get(self, key: str) -> float | None:
        if self._data is None:
            self._data = self._load()
        return self._data.get(key)

    def put(self, key: str, value: float) -> None:
        if self._data is None:
            self._data = self._load()
        self._data[key] = value
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            merged = {**self._load(), **self._data}
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".probe-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only or full disk only costs the recomputation
