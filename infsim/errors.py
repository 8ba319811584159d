"""Error base class of infsim. Every error raised on bad user input derives from :class:`InfsimError`;
the CLI prints its message on one line and exits 1 (``--debug`` shows the traceback)."""

from __future__ import annotations


class InfsimError(Exception):
    """Bad input (config, program, model, option): the message names what is wrong and where."""


class ConfigError(InfsimError):
    """A chip configuration is invalid; the message is ``file: field: message``."""
