"""Output folders of the studies (``sweep --out``, ``search --out``): one writer at a time, files written
atomically, unreadable files moved aside.

:func:`folder_lock` takes an advisory lock (``fcntl.flock`` on ``DIR/.lock``) for the whole run, so a second
``infsim sweep`` on the same folder stops at once with a message naming the first (its pid and start
time) instead of deleting the first's temporary files. The operating system drops the lock when its
process ends, however it ends (a SIGKILL included), so a crash never leaves a folder locked.
:func:`~infsim.userfiles.atomic_write` writes to a temporary name unique to the process and renames it
into place.
:func:`quarantine` moves a damaged file to ``DIR/quarantine/`` (kept for inspection, never read again).

Left out: network file systems whose ``flock`` is not shared between hosts (two hosts writing one folder
are not detected).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from infsim.errors import InfsimError
from infsim.userfiles import atomic_write

__all__ = ["FolderBusyError", "atomic_write", "folder_lock", "prepare_folder", "quarantine",
           "remove_stale_temporaries"]


class FolderBusyError(InfsimError):
    """Another process is writing to the output folder."""


def prepare_folder(out: Path, flag: str) -> None:
    """Create ``out`` (and its parents) or raise one line naming ``flag`` and the reason."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InfsimError(f"{flag} {out}: exists and is not a folder") from None
    except NotADirectoryError:
        raise InfsimError(f"{flag} {out}: a component of the path is a file, not a folder") from None
    except OSError as e:
        raise InfsimError(f"{flag} {out}: cannot create the folder: {e.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InfsimError(f"{flag} {out}: the folder is not writable")


@contextlib.contextmanager
def folder_lock(out: Path, what: str, flag: str = "--out") -> Iterator[None]:
    """Hold ``out/.lock`` while the block runs; :class:`FolderBusyError` when another process holds it.
    ``what`` names the writer in the other process's message (e.g. ``'infsim sweep'``)."""
    prepare_folder(out, flag)
    path = out / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise InfsimError(f"{flag} {out}: cannot create {path.name}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise InfsimError(f"{flag} {out}: cannot lock the folder: {e.strerror}") from None
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise FolderBusyError(f"{flag} {out}: in use by {holder}; wait for it to finish or use another "
                                  f"{flag}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temporaries(out: Path) -> int:
    """Delete the temporary files (``.*.tmp``) a killed writer left in ``out``; call it only while holding
    :func:`folder_lock` (no other writer can have one in flight then). Returns how many were removed."""
    n = 0
    for stale in out.glob("**/.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            n += 1
    return n


def quarantine(out: Path, path: Path) -> Path:
    """Move the damaged file ``path`` to ``out/quarantine/`` (a unique name); returns its new path."""
    qdir = out / "quarantine"
    qdir.mkdir(exist_ok=True)
    dest = qdir / f"{path.name}.{time.time_ns()}"
    os.replace(path, dest)
    return dest
