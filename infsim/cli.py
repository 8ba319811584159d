"""The ``infsim`` command line.

Subcommands live in ``infsim/commands/<name>.py``; each module defines ``register(subparsers)`` which
adds its parser(s) and sets ``func`` (called with the parsed args, returning an exit code or None).
Modules are discovered in sorted order, so adding a command never touches this file.

Exit status: 0 success; 1 bad input (one line ``infsim: error: ...`` on stderr, a traceback only with
``--debug``); 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from infsim.errors import InfsimError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infsim",
        description="Cycle-level simulator of an Inferentia/Trainium-style inference chip.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import infsim.commands as cmds

    for mod in sorted(pkgutil.iter_modules(cmds.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"infsim.commands.{mod.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
        return int(rc or 0)
    except (InfsimError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        if args.debug:
            raise
        msg = str(e) if not isinstance(e, OSError) else f"{e.filename}: {e.strerror}"
        print(f"infsim: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into a reader that closed early (e.g. `| head`)
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
