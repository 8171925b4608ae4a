"""nbgrader preprocessors of tfcourse's grading.

* :class:`GradeInSandbox` replaces nbgrader's ``Execute`` in ``autograde``: learner code in a sandbox,
  tests and scores in the grader (see :mod:`~tfcourse.grading.scoring`).
* :class:`HideHiddenTests` removes hidden-test regions from feedback, with the tracebacks that quote them.
"""

from __future__ import annotations

import re
from pathlib import Path

from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from traitlets import Bool, Integer

__all__ = ["KERNEL_DIED", "LAUNCHED", "NOT_RUN", "RESULTS", "UNRESPONSIVE", "GradeInSandbox", "HideHiddenTests"]

KERNEL_DIED = "KernelDied"
UNRESPONSIVE = "KernelUnresponsive"
NOT_RUN = "NotRun"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class GradeInSandbox(NbGraderPreprocessor):
    """Autograde's execution step, done the trusted way (:func:`~tfcourse.grading.scoring.score_notebook`).

    The learner's cells run in a sandbox; the test cells, taken from the assignment's *source* notebook,
    run in this process; each part's score and reason land in :data:`RESULTS` for the worker to write into
    the gradebook, and the notebook gets plain-text outputs only (the checks' messages on test cells), so
    nbgrader's own rule, run after this step by ``SaveAutoGrades``, reads the same verdict.
    """

    timeout = Integer(60, help="Seconds one cell may run, and one test cell's calls together.").tag(config=True)
    memory_mb = Integer(4096, help="Address-space limit of the sandbox's processes, in MiB.").tag(config=True)
    unsafe = Bool(False, help="Run learner code without a sandbox (only a separate process).").tag(config=True)

    def preprocess(self, nb, resources):
        from nbgrader.coursedir import CourseDirectory

        from tfcourse.grading.course import course_secret
        from tfcourse.grading.runner import read_notebook, restore_locked_cells
        from tfcourse.grading.scoring import Seeds, score_notebook

        info = resources["nbgrader"]
        student, assignment, notebook = info["student"], info["assignment"], info["notebook"]
        coursedir = CourseDirectory(config=self.config)
        folder = Path(coursedir.format_path(coursedir.source_directory, ".", assignment))
        source = read_notebook(folder / f"{notebook}.ipynb")
        restore_locked_cells(nb, source)
        result = score_notebook(
            nb,
            source,
            isolation=self.isolation(),
            timeout=self.timeout,
            seeds=Seeds(course_secret(coursedir.root), student, assignment, notebook),
            launched=LAUNCHED.pop((student, assignment, notebook), None),
        )
        RESULTS[(student, assignment, notebook)] = result
        return result.notebook, resources

    def isolation(self):
        from tfcourse.grading.sandbox import Isolation

        return Isolation(memory_mb=self.memory_mb, unsafe=self.unsafe)


RESULTS: dict[tuple[str, str, str], object] = {}
"""``{(student, assignment, notebook): RunResult}`` of this process's autograde runs (read by the worker)."""
LAUNCHED: dict[tuple[str, str, str], object] = {}
"""Learner processes the worker launched before autograde, so that their imports overlap nbgrader's work."""


class HideHiddenTests(ClearHiddenTests):
    """Remove hidden-test regions from test cells and reduce those cells' tracebacks to one line.

    A traceback quotes the source lines around the failing call, so a cell that held hidden tests keeps only
    ``ename: evalue`` (the check's message, which is the feedback) of each error.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code":
            return cell, resources
        removed = self._remove_hidden_test_region(cell)
        if removed:
            if not utils.is_grade(cell) and self.enforce_metadata:
                raise RuntimeError("hidden test region in a cell that is not a grade cell")
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    output.traceback = [_ANSI.sub("", f"{output.ename}: {output.evalue}")]
        return cell, resources
