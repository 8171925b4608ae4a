"""Readable check results in a learner's own Jupyter kernel.

Importing :mod:`tfcourse.grading` inside IPython installs two small hooks (once per kernel):

* a failing check shows its message, ``✗ …``, and the learner's own frames, instead of a traceback that
  runs through the library's code;
* a test cell that ran without error prints one line, ``✓ passed (visible tests)``, or, when it only
  checked that a numeric answer is present, ``✓ answered: its value is checked when graded``.

This is feedback, not a grade: the grader runs these tests and hidden ones itself (see
:mod:`tfcourse.grading.scoring`). Outside IPython nothing happens.
"""

from __future__ import annotations

import re
import traceback

from tfcourse.grading.compare import CheckFailed

__all__ = ["install"]

_CHECK_CALL = re.compile(r"^\s*(check_function|check_value|check_answered|check_proportions|_check_\w+)\(", re.M)
_ANSWERED_ONLY = re.compile(r"^\s*check_answered\(", re.M)
_installed = False


def _learner_frames(tb) -> list[str]:
    frames = [f for f in traceback.extract_tb(tb) if "tfcourse" not in f.filename.replace("\\", "/").split("/")]
    return traceback.format_list(frames)


def _show_failure(shell, etype, value, tb, tb_offset=None) -> list[str]:
    # Returned lines become the cell's error output (so plain nbgrader still scores the cell 0), without
    # the frames inside tfcourse and without the test cell's own line (the check call itself).
    frames = _learner_frames(tb)[1:]
    stb = [*frames[-3:], f"✗ {value}"]
    shell._showtraceback(etype, value, stb)  # IPython leaves the display to the handler
    return stb


def _after_cell(result) -> None:
    source = getattr(result.info, "raw_cell", "") or ""
    if result.error_in_exec is not None or not _CHECK_CALL.search(source):
        return
    calls = _CHECK_CALL.findall(source)
    if calls and all(call == "check_answered" for call in calls) and _ANSWERED_ONLY.search(source):
        print("✓ answered: its value is checked when graded")
    else:
        print("✓ passed (visible tests; the grader also runs hidden ones)")


def install() -> bool:
    """Install the hooks in the running IPython kernel, if any; return whether they are installed."""
    global _installed
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "events"):
        return False
    if not _installed:
        shell.set_custom_exc((CheckFailed,), _show_failure)
        shell.events.register("post_run_cell", _after_cell)
        _installed = True
    return True
