"""A process pool that survives its workers: batches of tasks run in worker processes, and a worker that
dies (a segfault, an out-of-memory kill, ``os._exit``) is replaced instead of breaking the pool.

:func:`run_batches` pulls batches lazily from an iterator (so a large sweep is never materialised), keeps
every worker busy and hands each finished batch's rows to a callback in the parent. When a worker dies, the
batch it held is split into single tasks that are retried one per process, so only a task that kills its
process again is lost, and it is not lost either: ``on_crash(task, reason)`` turns it into a row (the sweep
records it as a failed point). ``concurrent.futures.ProcessPoolExecutor`` instead fails every pending
future with ``BrokenProcessPool`` and throws away the batches in flight.

Workers are forked (the parent's imports are shared). Left out: time limits per task (a task that hangs
holds its worker until the caller is interrupted) and memory limits per worker.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

Task = dict[str, Any]
Row = dict[str, Any]


def _worker(conn: Connection, fn: Callable[[list[Task]], list[Row]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(fn(job))


def describe_exit(exitcode: int | None) -> str:
    """``-11`` -> ``'killed by signal SIGSEGV'``; ``3`` -> ``'exited with status 3'``."""
    if exitcode is None:
        return "vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"killed by signal {name}{hint}"
    return f"exited with status {exitcode}"


class _Slot:
    """One worker process and the batch it is running."""

    def __init__(self, ctx: Any, fn: Callable[[list[Task]], list[Row]]) -> None:
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, fn), daemon=True)
        self.proc.start()
        child.close()
        self.conn: Connection = parent
        self.job: list[Task] | None = None
        self.isolated = False

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run_batches(batches: Iterator[list[Task]], fn: Callable[[list[Task]], list[Row]], workers: int,
                on_rows: Callable[[list[Row]], None], on_crash: Callable[[Task, str], Row]) -> None:
    """Run ``fn(batch)`` for every batch of ``batches`` on ``workers`` processes; ``on_rows(rows)`` receives
    each result in the parent as it arrives. A task whose process dies when it runs alone becomes
    ``on_crash(task, reason)`` (delivered through ``on_rows`` like any row)."""
    ctx = mp.get_context("fork")
    retry: deque[list[Task]] = deque()  # single tasks of a batch whose worker died
    slots: list[_Slot] = []
    exhausted = False

    def next_job() -> tuple[list[Task], bool] | None:
        nonlocal exhausted
        if retry:
            return retry.popleft(), True
        if exhausted:
            return None
        try:
            return next(batches), False
        except StopIteration:
            exhausted = True
            return None

    try:
        while True:
            for slot in slots:  # give every idle worker a job
                if slot.job is None:
                    job = next_job()
                    if job is None:
                        break
                    slot.job, slot.isolated = job
                    slot.conn.send(slot.job)
            while len(slots) < workers:  # start workers for the jobs still waiting
                job = next_job()
                if job is None:
                    break
                slot = _Slot(ctx, fn)
                slot.job, slot.isolated = job
                slot.conn.send(slot.job)
                slots.append(slot)
            busy = [s for s in slots if s.job is not None]
            if not busy:
                return
            ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
            for slot in busy:
                if slot.conn in ready or slot.proc.sentinel in ready:
                    rows = None
                    try:
                        if slot.conn.poll():
                            rows = slot.conn.recv()
                    except (EOFError, OSError):
                        rows = None
                    if rows is not None:
                        slot.job = None
                        on_rows(rows)
                        continue
                    if slot.proc.is_alive() and slot.conn not in ready:
                        continue
                    # the worker died with a job: replace it; split the job or record its one task
                    slot.proc.join()
                    reason = describe_exit(slot.proc.exitcode)
                    lost, isolated = slot.job or [], slot.isolated
                    slot.conn.close()
                    slots.remove(slot)
                    if len(lost) == 1 and isolated:
                        on_rows([on_crash(lost[0], reason)])
                    else:
                        retry.extend([t] for t in lost)
    except BaseException:  # interrupted, or a callback failed: stop at once
        for slot in slots:
            slot.proc.kill()
        raise
    finally:
        for slot in slots:
            slot.stop()
