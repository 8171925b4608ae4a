"""Grade one student's submission of an assignment (run by :mod:`~tfcourse.grading.grade` in a worker process).

Each notebook is autograded on its own through nbgrader's API, so a notebook that nbgrader cannot process
(not valid JSON, say) costs only that notebook's points. Gradebook writes are retried while SQLite reports
"database is locked". Whatever happens, every part of every notebook of the assignment ends with a score in
the gradebook and a stated reason.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from tfcourse.grading.catalogue import Part, graded_parts
from tfcourse.grading.course import is_locked_error, load_config, make_api, retry_locked
from tfcourse.grading.reasons import cell_reason, shorten
from tfcourse.grading.runner import read_notebook

__all__ = ["Row", "assignment_parts", "collect_rows", "grade_student", "record_zero"]


@dataclass(frozen=True)
class Row:
    """One line of the grades CSV."""

    student: str
    notebook: str
    grade_id: str
    score: float
    max_score: float
    reason: str

    @property
    def part(self) -> str:
        return f"{self.notebook}:{self.grade_id}"


def assignment_parts(root: Path | str, name: str) -> dict[str, list[Part]]:
    """``{notebook id: graded parts}`` of the assignment's source notebooks, in file-name order."""
    folder = Path(root) / "source" / name
    notebooks = sorted(folder.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no source notebooks in {folder}; run `tfcourse assign` first")
    return {path.stem: graded_parts(nbformat.read(str(path), as_version=4)) for path in notebooks}


def _gradebook(root: Path | str):
    from nbgrader.api import Gradebook

    config = load_config(root)
    return Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id)


def record_zero(root: Path | str, name: str, student: str, notebook: str) -> None:
    """Give every grade of one submitted notebook zero points (creating the submission if needed)."""

    def action() -> None:
        with _gradebook(root) as gb:
            gb.update_or_create_student(student)
            gb.update_or_create_submission(name, student)
            submitted = gb.find_submission_notebook(notebook, name, student)
            for grade in submitted.grades:
                grade.auto_score = 0.0
                grade.needs_manual_grade = False
            gb.db.commit()

    retry_locked(action)


def _run_nbgrader(call, what: str) -> dict:
    """Call an NbGraderAPI method, retrying while the gradebook is locked; return nbgrader's result dict."""
    for attempt in range(1, 9):
        result = call()
        text = f"{result.get('error', '')}\n{result.get('log', '')}"
        if result.get("success") or not is_locked_error(text) or attempt == 8:
            return result
        time.sleep(random.uniform(0.2, 0.8) * attempt)
    raise RuntimeError(f"{what}: unreachable")  # pragma: no cover


def _failure(result: dict) -> str:
    lines = [line for line in f"{result.get('error', '')}\n{result.get('log', '')}".splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "[ERROR]" in line]
    return shorten((errors or lines or ["unknown error"])[-1])


def _restored_note(root: Path, name: str, student: str, notebook: str) -> dict[str, str]:
    """Notes for test cells that the submission deleted or edited (nbgrader restores them)."""
    try:
        submitted = read_notebook(root / "submitted" / student / name / f"{notebook}.ipynb")
        released = read_notebook(root / "release" / name / f"{notebook}.ipynb")
    except (ValueError, OSError):
        return {}
    mine = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in submitted.cells}
    notes = {}
    for cell in released.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if not cell.metadata.get("nbgrader", {}).get("grade"):
            continue
        if grade_id not in mine:
            notes[grade_id] = " (the deleted test cell was put back)"
        elif mine[grade_id] != cell.source:
            notes[grade_id] = " (the edited test cell was restored)"
    return notes


def collect_rows(
    root: Path | str, name: str, student: str, notes: dict[str, str], default_note: str | None = None
) -> list[Row]:
    """Scores from the gradebook and reasons from the autograded notebooks, one row per part.

    Args:
        notes: ``{notebook: reason}`` for notebooks that could not be autograded (their parts score 0).
        default_note: reason for parts that have no score in the gradebook (they are then set to 0).
    """
    root = Path(root)
    timeout = int(load_config(root).Execute.get("timeout", 0)) or None
    parts = assignment_parts(root, name)
    rows = []
    for notebook, notebook_parts in parts.items():
        scores: dict[str, tuple[float | None, float]] = {}
        with _gradebook(root) as gb:
            try:
                submitted = gb.find_submission_notebook(notebook, name, student)
                scores = {
                    g.name: (g.score if g.auto_score is not None or g.manual_score is not None else None, g.max_score)
                    for g in submitted.grades
                }
            except Exception:  # no submission recorded yet
                scores = {}
        if notebook not in notes and any(scores.get(p.grade_id, (None, 0))[0] is None for p in notebook_parts):
            record_zero(root, name, student, notebook)
            notes[notebook] = default_note or "no score was recorded for this notebook"
        cells = {}
        autograded = root / "autograded" / student / name / f"{notebook}.ipynb"
        if notebook not in notes and autograded.exists():
            cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in read_notebook(autograded).cells}
        restored = _restored_note(root, name, student, notebook) if notebook not in notes else {}
        for part in notebook_parts:
            score, max_score = scores.get(part.grade_id, (None, part.points))
            if notebook in notes:
                score, reason = 0.0, notes[notebook]
            elif part.grade_id in cells:
                reason = cell_reason(cells[part.grade_id], score, max_score, timeout) + restored.get(part.grade_id, "")
            else:
                reason = "passed" if score and score >= max_score else "no output recorded"
            rows.append(Row(student, notebook, part.grade_id, float(score or 0.0), float(max_score), reason))
    return rows


def grade_student(root: str, name: str, student: str, feedback: bool = True) -> list[dict]:
    """Autograde (and give feedback on) every notebook of ``student``'s submission; return the CSV rows."""
    root_path = Path(root)
    api = make_api(root_path)
    notes: dict[str, str] = {}
    for notebook in assignment_parts(root_path, name):
        path = root_path / "submitted" / student / name / f"{notebook}.ipynb"
        if not path.exists():
            notes[notebook] = "not submitted"
        else:
            try:
                read_notebook(path)
            except ValueError as error:
                notes[notebook] = shorten(str(error))
        if notebook in notes:
            record_zero(root_path, name, student, notebook)
            continue
        api.coursedir.notebook_id = notebook
        result = _run_nbgrader(lambda: api.autograde(name, student, force=True, create=True), "autograde")
        if not result.get("success"):
            notes[notebook] = f"nbgrader could not grade this notebook: {_failure(result)}"
            record_zero(root_path, name, student, notebook)
    api.coursedir.notebook_id = "*"
    if feedback and len(notes) < len(assignment_parts(root_path, name)):
        _run_nbgrader(lambda: api.generate_feedback(name, student, force=True), "generate_feedback")
    return [asdict(row) for row in collect_rows(root_path, name, student, notes)]
