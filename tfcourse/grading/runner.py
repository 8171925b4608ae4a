"""Execute a notebook the way the grader does and score its test cells, without a course or gradebook.

``tfcourse check`` and the validation in ``tfcourse assign`` use this: the same :class:`SafeExecute` with the
same :class:`~tfcourse.grading.settings.Limits`, the same stderr-warning filter and output limits, and
nbgrader's own rule for scoring a test cell (:func:`nbgrader.utils.determine_grade`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions, IgnorePattern, LimitOutput
from traitlets.config import Config

from tfcourse.grading.preprocessors import SafeExecute
from tfcourse.grading.reasons import cell_reason, error_text
from tfcourse.grading.settings import CODE_STUB, WARNING_PATTERN, Limits, kernel_arguments

__all__ = ["PartResult", "RunResult", "execute", "release_version", "restore_locked_cells", "run_notebook"]

_LOG = logging.getLogger("tfcourse.grading")
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class PartResult:
    """The score of one graded part (an nbgrader test cell)."""

    grade_id: str
    score: float
    max_score: float
    reason: str


@dataclass(frozen=True)
class RunResult:
    """An executed notebook, its graded parts, and errors raised outside test cells."""

    notebook: NotebookNode
    parts: list[PartResult]
    other_errors: list[str]

    @property
    def score(self) -> float:
        return sum(p.score for p in self.parts)

    @property
    def max_score(self) -> float:
        return sum(p.max_score for p in self.parts)


def _config(limits: Limits) -> Config:
    c = Config()
    c.Execute.timeout = limits.timeout
    c.Execute.startup_timeout = limits.startup_timeout
    c.Execute.interrupt_on_timeout = True
    c.Execute.extra_arguments = kernel_arguments(limits.memory_mb)
    c.IgnorePattern.enabled = True
    c.IgnorePattern.pattern = WARNING_PATTERN
    c.LimitOutput.max_lines = limits.max_output_lines
    c.LimitOutput.max_traceback = limits.max_traceback
    return c


def execute(nb: NotebookNode, cwd: Path | str, limits: Limits = DEFAULT_LIMITS) -> NotebookNode:
    """Run every cell of a copy of ``nb`` in ``cwd`` under ``limits`` and return the executed copy."""
    nb = copy.deepcopy(nb)
    config = _config(limits)
    resources = {"metadata": {"path": str(cwd)}}
    for preprocessor in (
        SafeExecute(config=config, log=_LOG),
        IgnorePattern(config=config),
        LimitOutput(config=config),
    ):
        nb, resources = preprocessor.preprocess(nb, resources)
    return nb


def score_parts(nb: NotebookNode, timeout: int | None = None) -> list[PartResult]:
    """Score each auto-graded test cell of an executed notebook by nbgrader's rule, with a reason."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell):
            score, max_score = utils.determine_grade(cell, _LOG)
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            parts.append(PartResult(grade_id, score or 0.0, max_score, cell_reason(cell, score, max_score, timeout)))
    return parts


def _other_errors(nb: NotebookNode, timeout: int | None) -> list[str]:
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or utils.is_grade(cell):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
                found.append(f"cell {index}{f' ({grade_id})' if grade_id else ''}: {error_text(output, timeout)}")
    return found


def run_notebook(nb: NotebookNode, cwd: Path | str, limits: Limits = DEFAULT_LIMITS) -> RunResult:
    """Execute ``nb`` and score it; see :class:`RunResult`."""
    executed = execute(nb, cwd, limits)
    return RunResult(executed, score_parts(executed, limits.timeout), _other_errors(executed, limits.timeout))


def release_version(source: NotebookNode) -> NotebookNode:
    """The released (student) version of a source notebook: solutions stubbed, hidden tests removed."""
    nb = copy.deepcopy(source)
    c = Config()
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    for preprocessor in (ClearSolutions(config=c), ClearHiddenTests(config=c)):
        nb, _ = preprocessor.preprocess(nb, {})
    return nb


def restore_locked_cells(nb: NotebookNode, reference: NotebookNode) -> list[str]:
    """Put back the locked cells (tests, setup, instructions) of ``reference`` that ``nb`` edited or deleted.

    Cells are matched by nbgrader grade id, as nbgrader's ``OverwriteCells`` does; a deleted one is inserted
    after the cell that precedes it in ``reference``.

    Returns:
        The grade ids that were restored.
    """
    restored = []

    def grade_id(cell: NotebookNode) -> str | None:
        return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")

    for position, ref_cell in enumerate(reference.cells):
        meta = ref_cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("locked"):
            continue
        ids = [grade_id(c) for c in nb.cells]
        if meta["grade_id"] in ids:
            cell = nb.cells[ids.index(meta["grade_id"])]
            if cell.source == ref_cell.source and cell.cell_type == ref_cell.cell_type:
                continue
            nb.cells[ids.index(meta["grade_id"])] = copy.deepcopy(ref_cell)
        else:
            previous = grade_id(reference.cells[position - 1]) if position else None
            at = ids.index(previous) + 1 if previous in ids else len(nb.cells)
            nb.cells.insert(at, copy.deepcopy(ref_cell))
        restored.append(meta["grade_id"])
    return restored


def read_notebook(path: Path | str) -> NotebookNode:
    """Read a notebook, raising ``ValueError`` with the reason when it is not a valid notebook."""
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as error:  # JSON errors, schema errors, wrong encodings
        raise ValueError(f"{Path(path).name} is not a valid notebook: {error}") from None
