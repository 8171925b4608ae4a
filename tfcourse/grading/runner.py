"""Run a notebook the way the grader does, without a course or gradebook, and its notebook helpers.

``tfcourse check`` and the validation in ``tfcourse assign`` use :func:`run_notebook`: the same
:func:`~tfcourse.grading.scoring.score_notebook` as grading (learner cells in a separate process, tests in
this one), with the sandbox when the machine can make one and a plain separate process otherwise.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions
from traitlets.config import Config

from tfcourse.grading.sandbox import Isolation, sandbox_problem
from tfcourse.grading.scoring import PartResult, RunResult, score_notebook
from tfcourse.grading.settings import CODE_STUB, Limits
from tfcourse.grading.structure import restore_locked_cells

__all__ = [
    "PartResult",
    "RunResult",
    "default_isolation",
    "read_notebook",
    "release_version",
    "restore_locked_cells",
    "run_notebook",
]

DEFAULT_LIMITS = Limits()


def default_isolation(limits: Limits = DEFAULT_LIMITS, *, sandbox: bool | None = None) -> Isolation:
    """The sandbox with ``limits`` where one can be made (or ``sandbox=True`` insists), else a plain process."""
    use = sandbox_problem() is None if sandbox is None else sandbox
    return Isolation(memory_mb=limits.memory_mb, unsafe=not use)


def run_notebook(
    nb: NotebookNode,
    limits: Limits = DEFAULT_LIMITS,
    *,
    source: NotebookNode | None = None,
    isolation: Isolation | None = None,
    launched=None,
) -> RunResult:
    """Execute ``nb`` and score its test cells (those of ``source`` when given, restored into ``nb`` first).

    ``launched`` is a :class:`~tfcourse.grading.learner.LearnerProcess` launched early with the same isolation.
    """
    nb = copy.deepcopy(nb)
    if source is not None:
        restore_locked_cells(nb, source)
    return score_notebook(
        nb,
        source if source is not None else nb,
        isolation=isolation or default_isolation(limits),
        timeout=limits.timeout,
        launched=launched,
    )


def release_version(source: NotebookNode) -> NotebookNode:
    """The released (student) version of a source notebook: solutions stubbed, hidden tests removed."""
    nb = copy.deepcopy(source)
    c = Config()
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    for preprocessor in (ClearSolutions(config=c), ClearHiddenTests(config=c)):
        nb, _ = preprocessor.preprocess(nb, {})
    return nb


def read_notebook(path: Path | str) -> NotebookNode:
    """Read a notebook, raising ``ValueError`` with the reason when it is not a valid notebook."""
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as error:  # JSON errors, schema errors, wrong encodings
        raise ValueError(f"{Path(path).name} is not a valid notebook: {error}") from None
