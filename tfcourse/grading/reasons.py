"""Short, stated reasons for a part's score, read from the executed test cell."""

from __future__ import annotations

import re

from nbformat.notebooknode import NotebookNode

from tfcourse.grading.preprocessors import KERNEL_DIED, NOT_RUN, UNRESPONSIVE

__all__ = ["cell_reason", "error_text", "shorten"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MEMORY = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "out of memory")


def shorten(text: str, limit: int = 300) -> str:
    """One line, ANSI colours removed, at most ``limit`` characters."""
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(output: NotebookNode, timeout: int | None = None) -> str:
    """A reason for an ``error`` output: timeouts, crashes and memory get plain words, others ``ename: evalue``."""
    ename, evalue = output.get("ename", ""), output.get("evalue", "")
    if ename == "CellTimeoutError":
        limit = f" of {timeout} s" if timeout else ""
        return f"timed out: the cell ran past the time limit{limit} and was interrupted"
    if ename == UNRESPONSIVE:
        return f"timed out and unresponsive: {evalue}"
    if ename == KERNEL_DIED:
        return f"kernel crashed: {evalue}"
    if ename == NOT_RUN:
        return evalue
    if any(marker in f"{ename} {evalue}" for marker in _MEMORY):
        return shorten(f"out of memory (the kernel's memory limit): {ename}: {evalue}")
    if ename == "KeyboardInterrupt":
        return "timed out: the cell was interrupted"
    return shorten(f"{ename}: {evalue}" if evalue else ename)


def cell_reason(cell: NotebookNode, score: float | None, max_score: float, timeout: int | None = None) -> str:
    """Why a test cell scored what it did: ``passed``, the error's message, or why it did not run."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        return error_text(errors[-1], timeout)
    stderr = [o for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    if stderr and not score:
        return shorten(f"wrote to stderr: {stderr[0].get('text', '')}")
    if score is not None and score >= max_score:
        return "passed"
    if score is None:
        return "needs manual grading"
    return f"partial credit ({score:g} of {max_score:g})"
