"""Optional dependencies: the ``pyproject.toml`` extras ``sweep`` (pyarrow for the parquet results, dask
``distributed`` for cluster runs), ``search`` (optuna) and ``perfetto`` (traces in Perfetto's protobuf format,
:mod:`infsim.trace_perfetto`). A core install (``pip install -e .``)
leaves them out; they are imported only when a feature needs them, and a missing one is a one-line error
naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from infsim.errors import InfsimError

#: top-level module -> the extra that installs it
EXTRAS: dict[str, str] = {"pyarrow": "sweep", "distributed": "sweep", "optuna": "search", "perfetto": "perfetto"}


class MissingExtraError(InfsimError):
    """A feature's optional dependency is not installed."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (one of :data:`EXTRAS`) for ``feature`` (e.g. ``'infsim search'``), or raise
    ``MissingExtraError('infsim search needs optuna, which is not installed: pip install -e ".[search]"')``."""
    top = module.split(".")[0]
    extra = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != top:
            raise  # the module is there but one of its own imports failed: show that
        raise MissingExtraError(
            f"{feature} needs {top}, which is not installed: pip install -e \".[{extra}]\" "
            f"(or pip install \"infsim[{extra}]\")"
        ) from None
