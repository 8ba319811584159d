"""Helpers shared by CLI subcommands: JSON output and number formatting."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    json.dump(obj, sys.stdout, default=_default, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def add_chip_args(parser: Any, default: str | None = "inf2") -> None:
    """Add ``--chip NAME|PATH`` and repeatable ``--set FIELD=VALUE`` to a subcommand parser."""
    parser.add_argument("--chip", default=default, required=default is None,
                        help="chip preset name or path to a chip YAML (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one config field, e.g. --set hbm.bandwidth_gbps=1600 (repeatable)")


def chip_from_args(args: Any) -> Any:
    """The validated ChipConfig named by ``--chip`` with ``--set`` overrides applied."""
    from infsim.config import load_chip

    return load_chip(args.chip, list(args.overrides or []))
