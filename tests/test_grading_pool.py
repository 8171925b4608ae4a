"""Worker processes: forked from a single-threaded grader, from a fork server when threads are running."""

from __future__ import annotations

import os
import threading

from tfcourse.grading.pool import Job, _context, run_jobs


def _pid() -> int:
    return os.getpid()


def test_a_threaded_parent_does_not_fork_its_workers_directly():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert _context([Job("a", _pid)]).get_start_method() == "forkserver"
        outcomes = run_jobs([Job("a", _pid), Job("b", _pid)], workers=2)
        assert all(o.ok and o.value != os.getpid() for o in outcomes.values())
    finally:
        stop.set()
        thread.join()
    if threading.active_count() == 1:  # other tests may leave daemon threads running
        assert _context().get_start_method() == "fork"
