"""Every option and argument of every infsim command has help text."""

from __future__ import annotations

import argparse

from infsim.cli import build_parser


def _parsers(p: argparse.ArgumentParser, name: str = "infsim"):  # noqa: ANN202
    yield name, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub, sp in a.choices.items():
                yield from _parsers(sp, f"{name} {sub}")


def test_every_option_has_help() -> None:
    missing = []
    for name, p in _parsers(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (a.help or "").strip():
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}")
    assert not missing, "options without help: " + ", ".join(missing)
