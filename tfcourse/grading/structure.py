"""The roles of a notebook's cells (tests, setup, solutions), read from nbgrader's metadata.

Grading runs test and setup cells in the grader and everything else in the sandbox, so roles must come from
the instructor's source notebook, never from a submission: :func:`trusted_structure` gives a submitted
notebook the source's structure, and :func:`restore_locked_cells` puts back locked cells it edited.
"""

from __future__ import annotations

import copy

import nbformat
from nbformat.notebooknode import NotebookNode

__all__ = ["grade_id", "is_setup", "is_test", "meta", "restore_locked_cells", "trusted_structure"]


def meta(cell: NotebookNode) -> dict:
    """The cell's nbgrader metadata (empty when it has none, or none of the right type)."""
    found = cell.get("metadata", {})
    found = found.get("nbgrader") if isinstance(found, dict) else None
    return found if isinstance(found, dict) else {}


def grade_id(cell: NotebookNode) -> str | None:
    """The cell's nbgrader grade id, if it has one."""
    value = meta(cell).get("grade_id")
    return value if isinstance(value, str) else None


def is_test(cell: NotebookNode) -> bool:
    """An autograded test cell: graded, not a solution."""
    found = meta(cell)
    return cell.get("cell_type") == "code" and bool(found.get("grade")) and not found.get("solution")


def is_setup(cell: NotebookNode) -> bool:
    """A locked code cell that is neither a test nor a solution (imports the tests and answers use)."""
    found = meta(cell)
    return (
        cell.get("cell_type") == "code"
        and bool(found.get("locked"))
        and not found.get("grade")
        and not found.get("solution")
    )


def restore_locked_cells(nb: NotebookNode, reference: NotebookNode) -> list[str]:
    """Put back the locked cells (tests, setup, instructions) of ``reference`` that ``nb`` edited or deleted.

    Cells are matched by nbgrader grade id, as nbgrader's ``OverwriteCells`` does; a deleted one is inserted
    after the cell that precedes it in ``reference``.

    Returns:
        The grade ids that were restored.
    """
    restored = []
    for position, ref_cell in enumerate(reference.cells):
        locked = meta(ref_cell)
        if not locked.get("locked"):
            continue
        ids = [grade_id(c) for c in nb.cells]
        if locked["grade_id"] in ids:
            cell = nb.cells[ids.index(locked["grade_id"])]
            if cell.source == ref_cell.source and cell.cell_type == ref_cell.cell_type:
                continue
            nb.cells[ids.index(locked["grade_id"])] = copy.deepcopy(ref_cell)
        else:
            previous = grade_id(reference.cells[position - 1]) if position else None
            at = ids.index(previous) + 1 if previous in ids else len(nb.cells)
            nb.cells.insert(at, copy.deepcopy(ref_cell))
        restored.append(locked["grade_id"])
    return restored


def trusted_structure(nb: NotebookNode, source: NotebookNode) -> NotebookNode:
    """``nb`` with the source's cell structure, whatever its cells' metadata claim.

    Every cell whose grade id the source has (first occurrence, as nbgrader's ``DeduplicateIds`` keeps) gets
    the source's nbgrader metadata and cell type (as ``OverwriteCells`` does); any other nbgrader metadata is
    dropped, so the cell is plain learner code, run in the sandbox (nbgrader instead fails a notebook with a
    grade id it does not know); locked cells are restored from the source. Afterwards the test cells are
    exactly the source's: :func:`~tfcourse.grading.scoring.score_notebook` runs test cells in the grader, so
    a cell that a submission marked as a test (or as the setup) must never count as one.

    Raises:
        RuntimeError: if the test cells still differ from the source's (never expected).
    """
    nb = copy.deepcopy(nb)
    known = {gid: cell for cell in source.cells if (gid := grade_id(cell))}
    seen: set[str] = set()
    cells = []
    for cell in nb.cells:
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = nbformat.NotebookNode()
        if "nbgrader" not in cell.metadata:
            cells.append(cell)
            continue
        gid = grade_id(cell)
        ref = known.get(gid) if gid is not None and gid not in seen else None
        if ref is None:
            del cell.metadata["nbgrader"]  # not a cell of the source: learner code, nothing more
            cells.append(cell)
            continue
        seen.add(gid)
        metadata = {**cell.metadata, "nbgrader": copy.deepcopy(ref.metadata["nbgrader"])}
        if cell.get("cell_type") != ref.cell_type:
            text = cell.get("source", "")
            cell = (nbformat.v4.new_code_cell if ref.cell_type == "code" else nbformat.v4.new_markdown_cell)(text)
        cell.metadata = nbformat.from_dict(metadata)
        cells.append(cell)
    nb.cells = cells
    restore_locked_cells(nb, source)
    tests = sorted((grade_id(c) or "", c.source) for c in nb.cells if is_test(c))
    expected = sorted((grade_id(c) or "", c.source) for c in source.cells if is_test(c))
    if tests != expected:
        raise RuntimeError("the test cells differ from the source's after restoring them")
    return nb
