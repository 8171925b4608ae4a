"""Run jobs in parallel worker processes that can be killed one by one.

Each job runs in its own forked process, so a job that crashes, hangs or is killed for memory affects
nothing but itself: it is reported as a failed :class:`Outcome` and the others go on. A job that outlives
its deadline is killed together with every process it started (notebook kernels run in their own session,
so the whole process tree is collected, not a process group).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

__all__ = ["Job", "Outcome", "run_jobs"]


@dataclass(frozen=True)
class Job:
    """``fn(*args)`` to run in a worker process, known by ``key``; ``fn``'s result must be picklable."""

    key: str
    fn: Callable[..., object]
    args: tuple = ()
    log: str | None = None
    """File that receives the worker's stdout and stderr (and its kernels'); None keeps the parent's."""


@dataclass(frozen=True)
class Outcome:
    """How a job ended: ``ok`` with ``value``, or not, with ``error`` saying why."""

    key: str
    ok: bool
    value: object = None
    error: str | None = None
    seconds: float = 0.0


def _child(conn: Connection, fn: Callable, args: tuple, log: str | None) -> None:
    if log:  # kernels inherit these descriptors, so their chatter lands in the log too
        os.makedirs(os.path.dirname(log), exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    try:
        message = ("ok", fn(*args))
    except BaseException:
        message = ("error", traceback.format_exc())
    try:
        conn.send(message)
    except Exception:  # the result could not be pickled: report that instead
        conn.send(("error", traceback.format_exc()))
    conn.close()


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
        family = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


def _context(jobs: Sequence[Job] = ()) -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds with nbgrader and torch already imported, but only a process with
    # one thread forks safely: a child of a threaded one (a test runner, a notebook server) can inherit locks
    # held by threads it does not have and hang. Then a fork server, itself single-threaded, forks them.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and os.name == "posix" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(sorted({job.fn.__module__ for job in jobs}))
        return ctx
    return multiprocessing.get_context("spawn")


def run_jobs(
    jobs: Sequence[Job],
    *,
    workers: int,
    deadline: float | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> dict[str, Outcome]:
    """Run ``jobs``, at most ``workers`` at a time, each in a fresh process.

    Args:
        jobs: what to run; keys must be unique.
        workers: how many processes run at once (at least 1).
        deadline: seconds one job may take before it and its child processes are killed.
        on_done: called in this process with each outcome as it arrives (e.g. to advance a progress bar).

    Returns:
        ``{key: Outcome}`` for every job, in the order of ``jobs``; none is ever missing.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("job keys must be unique")
    ctx = _context(jobs)
    pending = deque(jobs)
    running: dict[str, tuple[multiprocessing.Process, Connection, float]] = {}
    outcomes: dict[str, Outcome] = {}

    def finish(key: str, outcome: Outcome) -> None:
        process, conn, _ = running.pop(key)
        conn.close()
        process.join(timeout=5)
        outcomes[key] = outcome
        if on_done:
            on_done(outcome)

    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.popleft()
                reader, writer = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_child, args=(writer, job.fn, job.args, job.log), name=f"grade {job.key}")
                process.start()
                writer.close()
                running[job.key] = (process, reader, time.monotonic())
            wait([p.sentinel for p, _, _ in running.values()] + [c for _, c, _ in running.values()], timeout=0.5)
            for key, (process, conn, started) in list(running.items()):
                elapsed = time.monotonic() - started
                message = None
                try:
                    if conn.poll():
                        message = conn.recv()
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    status, payload = message
                    ok = status == "ok"
                    finish(key, Outcome(key, ok, payload if ok else None, None if ok else str(payload), elapsed))
                elif not process.is_alive():
                    code = process.exitcode
                    finish(
                        key, Outcome(key, False, error=f"the worker process died (exit code {code})", seconds=elapsed)
                    )
                elif deadline is not None and elapsed > deadline:
                    _kill_tree(process.pid)
                    finish(
                        key,
                        Outcome(
                            key,
                            False,
                            error=f"grading took longer than {deadline:g} s and was stopped",
                            seconds=elapsed,
                        ),
                    )
    finally:
        for process, conn, _ in running.values():  # interrupted: leave no orphans behind
            _kill_tree(process.pid)
            conn.close()
    return {key: outcomes[key] for key in keys}
