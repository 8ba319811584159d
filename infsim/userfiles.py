"""The files a user names: inputs (chip and HBM presets, sweep specs, model configs, assembly and binary
programs) read bounded, decoded and parsed, and outputs (``-o``, ``--trace``, ``--plot``) written whole or
not at all, every failure one :class:`~infsim.errors.InfsimError` that names the file (and the flag).

Inputs:

* :func:`read_bytes` reads a regular file or a pipe (``<(...)``), never a device (``/dev/zero`` would be
  read forever), and refuses more than ``limit`` bytes (a regular file before reading it, a pipe once
  ``limit`` bytes have arrived).
* :func:`read_text` decodes UTF-8 (a binary file is "not UTF-8 text", not a ``UnicodeDecodeError``).
* :func:`parse_json` and :func:`parse_yaml` turn the parsers' errors, nesting too deep for the parser's
  recursion (``RecursionError``) and integers too long for Python's conversion limit (``ValueError``) into
  one line with ``file:line`` where the parser knows it.

The caller chooses the error class (``ConfigError``, ``ModelError``, ...), so its callers catch what they
did before.

Outputs: :func:`write_output` writes to a temporary file beside the target and renames it into place
(:func:`atomic_write`), so a full disk or a kill never leaves a truncated file under the target's name;
a target that exists and is not a regular file (``/dev/stdout``, a pipe) is written directly. An output
path that is a folder, lies under a file, or cannot be written is ``FLAG PATH: reason``.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from infsim.errors import InfsimError

#: largest configuration file (chip or HBM preset, sweep spec, model config.json): they are a few kB
MAX_CONFIG_BYTES = 16 * 2**20
#: largest program file (assembly text or binary encoding)
MAX_PROGRAM_BYTES = 1 * 2**30


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def read_bytes(path: str | Path, what: str = "file", limit: int = MAX_CONFIG_BYTES,
               error: type[InfsimError] = InfsimError) -> bytes:
    """The bytes of the file (or pipe) at ``path``; ``error`` naming ``path`` when it cannot be read, is a
    device or a folder, or holds more than ``limit`` bytes (``what`` names the kind of file)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        raise error(f"{p}: no such file") from None
    except OSError as e:
        raise error(f"{p}: cannot read the {what}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{p}: is a folder (expected the {what})")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise error(f"{p}: is a device, not a regular file or a pipe (expected the {what})")
        if stat.S_ISREG(st.st_mode) and st.st_size > limit:
            raise error(f"{p}: {_size(st.st_size)}, larger than any {what} infsim reads ({_size(limit)})")
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(2**20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise error(f"{p}: cannot read the {what}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{p}: more than {_size(limit)}, larger than any {what} infsim reads")
    return data


def read_text(path: str | Path, what: str = "file", limit: int = MAX_CONFIG_BYTES,
              error: type[InfsimError] = InfsimError) -> str:
    """:func:`read_bytes` decoded as UTF-8; a file that is not UTF-8 text is ``error`` naming the byte."""
    data = read_bytes(path, what, limit, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}): is it a binary file?") from None


def _value_error(e: ValueError) -> str:
    text = str(e)
    if "integer string conversion" in text:
        return "a number of more digits than any configuration needs"
    return text


def parse_json(text: str, source: str, error: type[InfsimError] = InfsimError) -> Any:
    """``json.loads(text)``; errors are ``error('SOURCE:LINE:COL: invalid JSON: ...')``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{source}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:
        raise error(f"{source}: invalid JSON: nested too deeply") from None
    except ValueError as e:  # an integer beyond Python's digit limit
        raise error(f"{source}: invalid JSON: {_value_error(e)}") from None


def parse_yaml(text: str, source: str, loader: Any = None, error: type[InfsimError] = InfsimError,
               fast_loader: Any = None) -> Any:
    """``yaml.load(text, loader)`` (default ``yaml.SafeLoader``); errors are ``error('SOURCE:LINE: invalid
    YAML: ...')``.

    ``fast_loader``: the same loader on libyaml's C parser (default: ``yaml.CSafeLoader`` for the default
    loader, where PyYAML has it; the same constructors and resolver, so the same values, ~8x faster). It is
    tried first; on any failure the text is parsed again with ``loader``, whose errors are the ones reported
    (the same message and line whether or not PyYAML has libyaml)."""
    import yaml

    fast = fast_loader if fast_loader is not None else None if loader is not None else getattr(yaml, "CSafeLoader",
                                                                                                None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)
        except Exception:  # noqa: BLE001 -- reported by the reference parser below
            pass
    try:
        return yaml.load(text, Loader=loader or yaml.SafeLoader)
    except yaml.reader.ReaderError as e:  # a character YAML does not allow: its line, one line of message
        line = text.count("\n", 0, max(e.position, 0)) + 1
        what = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise error(f"{source}:{line}: invalid YAML: unacceptable character {what}: {e.reason}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise error(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise error(f"{source}: invalid YAML: nested too deeply") from None
    except ValueError as e:  # an integer beyond Python's digit limit
        raise error(f"{source}: invalid YAML: {_value_error(e)}") from None


# ---- outputs ------------------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a temporary file beside ``path`` (a name unique to this process), flush it to disk and
    rename it to ``path`` (atomic on POSIX: readers see the old file or the whole new one). OS errors
    propagate; the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _reason(e: OSError) -> str:
    import errno

    return {errno.ENOTDIR: "a component of the path is a file, not a folder",
            errno.EISDIR: "is a folder", errno.ENOENT: "its folder does not exist"}.get(
        e.errno or 0, e.strerror or str(e))


def check_output(path: str | Path, flag: str, label: str | None = None) -> Path:
    """The output ``path`` after checking what can be checked before the work that produces it: that it is
    not a folder and that its folder exists. Errors start with ``label``, by default ``'FLAG PATH'``."""
    p = Path(path)
    where = label or f"{flag} {p}"
    if p.is_dir():
        raise InfsimError(f"{where}: is a folder; give a file name")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise InfsimError(f"{where}: {parent} is a file, not a folder")
    if not parent.exists():
        raise InfsimError(f"{where}: the folder {parent} does not exist")
    return p


def write_output(path: str | Path, data: bytes | str | Callable[[IO[bytes]], None], flag: str,
                 label: str | None = None) -> None:
    """Write ``data`` (bytes, text as UTF-8, or a function writing to a binary file) to ``path``, atomically
    where ``path`` is (or will be) a regular file; any failure is ``InfsimError('FLAG PATH: reason')``
    (``label`` replaces ``'FLAG PATH'``)."""
    p = check_output(path, flag, label)

    def emit(f: IO[bytes]) -> None:
        if isinstance(data, str):
            f.write(data.encode("utf-8"))
        elif isinstance(data, bytes | bytearray):
            f.write(data)
        else:
            data(f)

    def to(target: Path) -> None:
        with open(target, "wb") as f:
            emit(f)

    try:
        if p.exists() and not p.is_file():  # a device or a pipe: no temporary file beside it
            to(p)
        else:
            atomic_write(p, to)
    except OSError as e:
        raise InfsimError(f"{label or f'{flag} {p}'}: cannot write: {_reason(e)}") from None
