"""Run the ``infsim`` command line in a child process with a time limit and a memory cap, and judge the
outcome the way issue 16 asks: exit 0, or exit 1 with exactly one line ``infsim: error: ...`` (exit 2:
argparse's usage lines ending in one ``error:`` line), never a traceback, a signal, a hang or runaway memory.

The child is a ``fork`` of the test process running :func:`infsim.cli.main` (what ``python -m infsim`` runs),
so it starts in milliseconds with numba's compiled functions already loaded instead of paying the
interpreter and imports (seconds) per example. Stdout and stderr go to files; the child makes its own
process group, so the memory cap counts the sweep workers it starts and a kill ends them all. The memory
cap is on the resident set summed over that process group, polled every :data:`POLL_S`.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: seconds between checks of the child's time and memory
POLL_S = 0.05
#: exit status the child reports for an exception that escaped ``main`` (the traceback is on its stderr)
ESCAPED = 70


@dataclass
class Outcome:
    """What one command did. ``killed``: ``"timeout"`` or ``"memory"`` when the harness stopped it."""

    argv: list[str]
    rc: int
    out: str
    err: str
    seconds: float
    peak_rss_bytes: int
    killed: str = ""

    def problem(self) -> str:
        """Why this outcome is unacceptable, or ``""``: exit 0; exit 1 with one ``infsim: error:`` line; exit 2
        ending in one argparse ``error:`` line; no traceback, signal, time-out or memory cap hit."""
        if self.killed:
            return f"killed by the harness ({self.killed}) after {self.seconds:.1f} s"
        if "Traceback (most recent call last)" in self.err:
            return "a traceback on stderr"
        if self.rc < 0:
            return f"died of signal {signal.Signals(-self.rc).name}"
        lines = self.err.splitlines()
        if self.rc == 0:
            bad = [ln for ln in lines if not ln.startswith("infsim: warning: ")]
            return f"exit 0 with stderr lines that are not warnings: {bad[:3]}" if bad else ""
        if self.rc == 1:
            errors = [ln for ln in lines if not ln.startswith("infsim: warning: ")]
            if len(errors) != 1 or not errors[0].startswith("infsim: error: "):
                return f"exit 1 without exactly one 'infsim: error:' line: {lines[-3:]}"
            return ""
        if self.rc == 2:
            return "" if lines and ": error: " in lines[-1] else f"exit 2 without an argparse error line: {lines[-3:]}"
        return f"exit status {self.rc}"

    def describe(self) -> str:
        return (f"infsim {' '.join(self.argv)}\n  -> rc={self.rc} in {self.seconds:.1f} s, peak RSS "
                f"{self.peak_rss_bytes / 2**20:.0f} MiB{', killed: ' + self.killed if self.killed else ''}\n"
                f"  stderr: {self.err[-2000:]}\n  stdout: {self.out[-500:]}")


def _group_rss_bytes(pgid: int) -> int:
    """Resident bytes of every live process in process group ``pgid`` (Linux /proc; 0 elsewhere)."""
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    page = os.sysconf("SC_PAGE_SIZE")
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[2]) == pgid:  # pgrp is field 5 of stat; fields[] starts at field 3 (state)
                total += int(fields[21]) * page  # rss (pages) is field 24
        except (OSError, ValueError, IndexError):
            continue
    return total


def _child(argv: Sequence[str], out_fd: int, err_fd: int, cwd: str | None) -> None:  # pragma: no cover
    """In the forked child: run ``main(argv)`` with stdout/stderr on the given files, then ``_exit``."""
    rc = ESCAPED
    try:
        os.setpgid(0, 0)
        if cwd is not None:
            os.chdir(cwd)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        import logging

        for h in list(logging.getLogger("infsim").handlers):  # they hold the parent's stderr
            logging.getLogger("infsim").removeHandler(h)
        from infsim.cli import main

        try:
            rc = main(list(argv))
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        rc = ESCAPED
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


def run_cli(argv: Sequence[str], timeout_s: float = 120.0, rss_cap_bytes: int = 3 << 30,
            cwd: str | Path | None = None) -> Outcome:
    """Run ``infsim ARGV`` in a forked child; kill its process group past ``timeout_s`` or ``rss_cap_bytes``."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            _child(argv, out.fileno(), err.fileno(), None if cwd is None else str(cwd))
        try:
            os.setpgid(pid, pid)  # also here, so that the group exists before the first poll
        except OSError:
            pass
        killed, peak = "", 0
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            rss = _group_rss_bytes(pid)
            peak = max(peak, rss)
            if rss > rss_cap_bytes:
                killed = f"resident memory {rss / 2**20:.0f} MiB > cap {rss_cap_bytes / 2**20:.0f} MiB"
            elif time.monotonic() - t0 > timeout_s:
                killed = f"time-out {timeout_s:g} s"
            if killed:
                break
            time.sleep(POLL_S)
        seconds = time.monotonic() - t0
        # the child is a zombie or still running, so its pid (the group's id) cannot be reused yet: end the
        # group (what a killed command or a finished one left behind), then reap the child
        _kill_group(pid)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Outcome(argv, rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                       seconds, peak, killed)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
