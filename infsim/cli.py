"""The ``infsim`` command line.

Subcommands live in ``infsim/commands/<name>.py``; each module defines ``register(subparsers)`` which
adds its parser(s) and sets ``func`` (called with the parsed args, returning an exit code or None).
Modules are discovered in sorted order, so adding a command never touches this file.

Exit status: 0 success; 1 bad input or an environment error such as a full disk or an unwritable output
path (one line ``infsim: error: ...`` on stderr, a traceback only with ``--debug``); 2 usage error
(argparse). Something recovered from (a damaged sweep part moved aside) is one ``infsim: warning: ...``
line, logged on the ``infsim`` logger.

numpy's BLAS runs single-threaded in the command (``OPENBLAS_NUM_THREADS=1`` unless the environment sets it,
before numpy is imported): the simulator makes no BLAS calls worth a thread, and OpenBLAS starts a worker thread
per core at import that spins for ~0.05-0.1 s of CPU, a tenth of a cached ``infsim run`` on a 2-core machine
(sweep workers inherit the setting, so parallel workers do not oversubscribe the cores either).

The command collects the garbage collector's older generations 100x less often than Python's default (young
objects as usual): its imports create ~100k long-lived objects (modules, classes, numba and pydantic types) that
every gen-1/gen-2 collection re-traverses, ~40 ms of a ~0.8 s cached ``infsim run`` (16 such collections), for
nothing to free. Cyclic garbage that outlives a young collection waits longer (~700k allocations) to be freed.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

from infsim.errors import InfsimError
from infsim.progress import end_progress_bars

# before numpy's first import (the imports above do not import it): see the module docstring
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infsim",
        description="Cycle-level simulator of an Inferentia/Trainium-style inference chip.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--lowering-cache", metavar="DIR|off", default=None,
                        help="directory of cached lowered programs (default: $INFSIM_LOWERING_CACHE, else "
                             "~/.cache/infsim/lowered); 'off' lowers every time")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import infsim.commands as cmds

    for mod in sorted(pkgutil.iter_modules(cmds.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"infsim.commands.{mod.name}")
        module.register(sub)
    return parser


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"infsim: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging() -> None:
    """Warnings of the ``infsim`` logger as ``infsim: warning: ...`` lines on stderr."""
    log = logging.getLogger("infsim")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLine())
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.WARNING)


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error: ``PATH: reason`` (``out/x.bin: No space left on device``)."""
    where = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    reason = e.strerror or str(e)
    return f"{where}: {reason}" if where else reason


def main(argv: Sequence[str] | None = None) -> int:
    gc.set_threshold(gc.get_threshold()[0], 1000, 1000)  # older generations rarely: see the module docstring
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    if args.lowering_cache is not None:  # an environment variable, so that sweep worker processes see it too
        os.environ["INFSIM_LOWERING_CACHE"] = args.lowering_cache
    try:
        rc = args.func(args)
        return int(rc or 0)
    except BrokenPipeError:
        return _broken_pipe()
    except (InfsimError, OSError) as e:
        end_progress_bars()
        if args.debug:
            raise
        msg = os_error_message(e) if isinstance(e, OSError) else str(e)
        print(f"infsim: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _broken_pipe() -> int:
    """Output piped into a reader that closed early (e.g. ``| head``): stop quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
