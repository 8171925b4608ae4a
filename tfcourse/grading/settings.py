"""Execution limits for graded notebooks and the nbgrader configuration that enforces them.

`tfcourse course init` writes :data:`CONFIG_TEMPLATE` as the course's ``nbgrader_config.py``; ``tfcourse
check`` applies the same :class:`Limits` without a course, so a learner sees the verdict the grader gives.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AUTOGRADE_PREPROCESSORS",
    "CODE_STUB",
    "CONFIG_TEMPLATE",
    "SQLITE_DB_URL",
    "WARNING_PATTERN",
    "Limits",
    "kernel_arguments",
]

AUTOGRADE_PREPROCESSORS = [
    "tfcourse.grading.preprocessors.GradeInSandbox",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
"""nbgrader's autograde steps as tfcourse runs them: execution and scoring in :class:`GradeInSandbox`."""
FEEDBACK_PREPROCESSORS = [
    "nbgrader.preprocessors.GetGrades",
    "tfcourse.grading.preprocessors.HideHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
"""Feedback never shows hidden tests, neither their code nor tracebacks that would quote it."""

CODE_STUB = "# YOUR CODE HERE\n..."
"""What replaces a solution region in released notebooks. ``...`` (not ``raise``) keeps the released notebook
runnable top to bottom: a stub function returns None, and the checks say so."""

WARNING_PATTERN = r"(?i)warn"
"""stderr outputs matching this are dropped before scoring: nbgrader counts any stderr in a test cell as a
failure, and a warning printed by correct code must never cost points."""


SQLITE_DB_URL = '"sqlite:///" + os.path.join(HERE, "gradebook.db") + "?timeout=60"'
"""The default ``db_url`` of :data:`CONFIG_TEMPLATE`, as Python source: ``gradebook.db`` in the course folder."""


@dataclass(frozen=True)
class Limits:
    """What one graded notebook may use.

    Attributes:
        timeout: seconds one cell may run before it is interrupted (it then fails with a timeout).
        memory_mb: address-space limit of the kernel in MiB (``RLIMIT_AS``); a larger allocation fails
            with an out-of-memory error inside the notebook instead of endangering the machine.
            PyTorch alone maps about 1.5 GiB.
        max_output_lines: stream lines kept per cell (nbgrader's ``LimitOutput``).
        max_traceback: traceback lines kept per error.
        startup_timeout: seconds to wait for a kernel to start.
    """

    timeout: int = 60
    memory_mb: int = 4096
    max_output_lines: int = 200
    max_traceback: int = 60
    startup_timeout: int = 120

    def __post_init__(self) -> None:
        for name in ("timeout", "memory_mb", "max_output_lines", "max_traceback", "startup_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")


def kernel_arguments(memory_mb: int) -> list[str]:
    """Extra kernel command-line arguments: no history file, and the address-space limit set at start-up.

    Soft and hard limits are both set, so code in the notebook cannot raise them again.
    """
    limit = memory_mb * 1024 * 1024
    set_limit = f"__import__('resource').setrlimit(__import__('resource').RLIMIT_AS, ({limit}, {limit}))"
    # log_level=ERROR silences the kernel's start-up banner about unencrypted TCP, which is noise here.
    return [
        "--HistoryManager.hist_file=:memory:",
        "--IPKernelApp.log_level=ERROR",
        f"--IPKernelApp.exec_lines={set_limit}",
    ]


CONFIG_TEMPLATE = '''\
"""nbgrader configuration of this course, written by `tfcourse course init` (edit freely).

It is read by `tfcourse assign` / `tfcourse grade` and by plain nbgrader commands run in this folder.
"""

import os

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)
HERE = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = HERE
c.CourseDirectory.course_id = {course_id!r}
# The gradebook: SQLite in this folder by default, where timeout= makes a writer wait for the lock instead of
# failing at once when several graders write together (`tfcourse grade` also retries, and switches the file to
# WAL mode); or a database server named by `tfcourse course init --db URL`, e.g. PostgreSQL.
c.CourseDirectory.db_url = {db_url}

# Executing submissions: a per-cell timeout (then the kernel is interrupted), a start-up timeout, and an
# address-space limit on the kernel so that a huge allocation fails inside the notebook.
c.Execute.timeout = {timeout}
c.Execute.startup_timeout = {startup_timeout}
c.Execute.interrupt_on_timeout = True
c.Execute.extra_arguments = {kernel_arguments!r}

# Autograding: the learner's cells run in a sandbox (tfcourse.grading.sandbox) and the test cells, from the
# source notebook, run in the grader, which decides every score (tfcourse.grading.scoring). `tfcourse grade`
# always uses this list, whatever this file says; plain `nbgrader autograde` reads it from here.
c.Autograde.autograde_preprocessors = {autograde!r}
c.GradeInSandbox.timeout = {timeout}
c.GradeInSandbox.memory_mb = {memory_mb}

# Warnings on stderr are not failures (nbgrader fails a test cell that writes anything to stderr).
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = {warning_pattern!r}

# Output size limits.
c.LimitOutput.max_lines = {max_output_lines}
c.LimitOutput.max_traceback = {max_traceback}

# Deleted graded cells are put back; edited locked cells are always restored from the source.
c.OverwriteCells.add_missing_cells = True

# Released stubs stay runnable top to bottom.
c.ClearSolutions.code_stub = {{"python": {code_stub!r}}}

# Feedback never shows hidden tests, neither their code nor the tracebacks that would quote it.
c.GenerateFeedback.preprocessors = {feedback!r}
'''
