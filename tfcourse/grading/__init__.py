"""Grading: the checks that exercise notebooks call, and (in submodules) the instructor's tools.

Exercise test cells use only what is exported here::

    from tfcourse.grading import check_function, check_value, mistakes, guard, inputs

The instructor tooling (:mod:`tfcourse.grading.course`, :mod:`~tfcourse.grading.assign`,
:mod:`~tfcourse.grading.grade`, :mod:`~tfcourse.grading.runner`) needs nbgrader (the ``grading`` extra)
and is imported only by the ``tfcourse`` command, so learners need nothing beyond the library.
"""

from tfcourse.grading import guard, inputs, mistakes
from tfcourse.grading.checks import (
    MLM_FRACTIONS,
    MLM_MISTAKES,
    check_answered,
    check_function,
    check_proportions,
    check_value,
    run_learner,
)
from tfcourse.grading.compare import TOLERANCES, CheckFailed, compare, describe, matches, tolerance
from tfcourse.grading.guard import ReferenceUsed, forbid
from tfcourse.grading.jupyter import install as _install_jupyter_feedback
from tfcourse.grading.mistakes import Mistake

_install_jupyter_feedback()  # readable ✓/✗ lines in a learner's own kernel; nothing elsewhere

__all__ = [
    "MLM_FRACTIONS",
    "MLM_MISTAKES",
    "TOLERANCES",
    "CheckFailed",
    "Mistake",
    "ReferenceUsed",
    "check_answered",
    "check_function",
    "check_proportions",
    "check_value",
    "compare",
    "describe",
    "forbid",
    "guard",
    "inputs",
    "matches",
    "mistakes",
    "run_learner",
    "tolerance",
]
