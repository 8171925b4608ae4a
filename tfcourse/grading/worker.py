"""Grade one student's submission of an assignment (run by :mod:`~tfcourse.grading.grade` in a worker process).

Each notebook is autograded on its own through nbgrader's API, so a notebook that nbgrader cannot process
(not valid JSON, say) costs only that notebook's points. Gradebook writes are retried while the database
reports lock contention (SQLite's "database is locked", PostgreSQL's serialization failures and deadlocks:
:func:`~tfcourse.grading.course.is_locked_error`). Whatever happens, every part of every notebook of the
assignment ends with a score in the gradebook and a stated reason.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from tfcourse.grading.catalogue import Part, graded_parts
from tfcourse.grading.course import is_locked_error, load_config, make_api, retry_locked
from tfcourse.grading.intake import INTAKE, take_in
from tfcourse.grading.learner import LearnerProcess
from tfcourse.grading.preprocessors import LAUNCHED, RESULTS, GradeInSandbox
from tfcourse.grading.reasons import shorten
from tfcourse.grading.runner import read_notebook
from tfcourse.grading.sandbox import SandboxUnavailable, sandbox_problem
from tfcourse.grading.scoring import RunResult

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
    """Call an NbGraderAPI method, retrying while the gradebook is locked; return nbgrader's result dict.

    A failure that remains is written to file descriptor 2, which is the student's grading log in a worker
    (see :mod:`~tfcourse.grading.pool`) whatever ``sys.stderr`` is: the error :func:`_failure` extracts,
    then nbgrader's whole captured log and traceback.
    """
    import os

    def note(text: str) -> None:
        try:
            os.write(2, f"{text}\n".encode("utf-8", "replace"))
        except OSError:  # no stderr at all: the reason in the CSV still says it
            pass

    for attempt in range(1, 9):
        result = call()
        text = f"{result.get('error', '')}\n{result.get('log', '')}"
        if result.get("success") or not is_locked_error(text) or attempt == 8:
            if not result.get("success"):
                note(f"nbgrader {what} failed: {_failure(result)}")
                note(f"--- nbgrader's log ---\n{result.get('log', '')}")
                note(f"--- nbgrader's error ---\n{result.get('error', '')}")
            return result
        note(f"nbgrader {what}: the gradebook is locked, retrying (attempt {attempt})")
        time.sleep(random.uniform(0.2, 0.8) * attempt)
    raise RuntimeError(f"{what}: unreachable")  # pragma: no cover


def _failure(result: dict) -> str:
    """The error behind a failed nbgrader call, as ``Type: message (at file:line)``.

    nbgrader logs the traceback of what went wrong and then raises a generic ``NbGraderException`` ("see the
    above traceback"), so the first exception of the captured log is the real one; a wrapper message that
    only points elsewhere is passed over. Without a traceback in the log, the exception of ``error`` is
    used, then the last ``[ERROR]`` message.
    """
    import re

    level = re.compile(r"^\[(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\] ?")
    generic = re.compile(r"see the (?:the )?above traceback|see the error log", re.IGNORECASE)
    stops = ("Traceback (most recent call last):", "During handling of", "The above exception")

    def exceptions(text: str) -> list[str]:
        raw = text.splitlines()
        lines = [level.sub("", line.rstrip()) for line in raw]
        found, i = [], 0
        while i < len(lines):
            if lines[i].strip() != stops[0]:
                i += 1
                continue
            frame, where, j = None, "", i + 1
            while j < len(lines):  # frames ("File ..." lines) and their code, indented deeper
                stripped = lines[j].lstrip()
                indent = len(lines[j]) - len(stripped)
                if stripped.startswith('File "') and (frame is None or indent == frame):
                    frame, where = indent, stripped
                elif not (frame is not None and (indent > frame or not stripped or stripped.startswith("[Previous"))):
                    break
                j += 1
            if frame is None or j >= len(lines):
                i = j
                continue
            message, k = [lines[j].strip()], j + 1
            while k < len(lines) and lines[k].strip() and not level.match(raw[k]):
                if lines[k].strip().startswith(stops):
                    break
                message.append(lines[k].strip())
                k += 1
            text = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*(?::|$))", "", " ".join(message))
            place = re.match(r'File "(?P<file>[^"]+)", line (?P<line>\d+)', where)
            if place:
                file = place["file"].replace("\\", "/")
                file = file.split("site-packages/")[-1] if "site-packages/" in file else "/".join(file.split("/")[-2:])
                text = f"{text} (at {file}:{place['line']})"
            found.append(text)
            i = k
        return found

    log, error = str(result.get("log") or ""), str(result.get("error") or "")
    for candidates in (exceptions(log), exceptions(error)):
        meaningful = [c for c in candidates if not generic.search(c)]
        if meaningful:
            return shorten(meaningful[0])
    messages = [level.sub("", line).strip() for line in log.splitlines() if line.startswith("[ERROR]")]
    messages = [m for m in messages if m and not generic.search(m) and not m.startswith("There was an error")]
    if messages:
        return shorten(messages[-1])
    lines = [line for line in f"{error}\n{log}".splitlines() if line.strip()]
    return shorten((lines or ["unknown error"])[-1])


def _restored_note(root: Path, name: str, student: str, notebook: str) -> dict[str, str]:
    """Notes for test cells that the submission deleted or edited (grading restores them)."""
    try:
        submitted = read_notebook(root / INTAKE / student / name / f"{notebook}.ipynb")
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


def write_scores(root: Path | str, name: str, student: str, notebook: str, result: RunResult) -> dict[str, str]:
    """Write the grader's scores into the gradebook; return notes on scores set there by someone else.

    A manual score or extra credit on an autograded part is kept (a teaching assistant may have set it)
    but flagged in the part's reason, so a value that no grader set cannot go unnoticed.
    """
    trusted = {part.grade_id: part.score for part in result.parts}
    flags: dict[str, str] = {}

    def action() -> None:
        with _gradebook(root) as gb:
            submitted = gb.find_submission_notebook(notebook, name, student)
            for grade in submitted.grades:
                if grade.name not in trusted:
                    continue
                grade.auto_score = trusted[grade.name]
                grade.needs_manual_grade = False
                extra = []
                if grade.manual_score is not None:
                    extra.append(f"manual score {grade.manual_score:g} in the gradebook replaces it")
                if grade.extra_credit:
                    extra.append(f"extra credit {grade.extra_credit:g} in the gradebook")
                if extra:
                    flags[grade.name] = f" (flagged: {'; '.join(extra)})"
            gb.db.commit()

    retry_locked(action)
    return flags


def collect_rows(
    root: Path | str,
    name: str,
    student: str,
    notes: dict[str, str],
    default_note: str | None = None,
    results: dict[str, RunResult] | None = None,
    flags: dict[str, dict[str, str]] | None = None,
    suffix: str = "",
) -> list[Row]:
    """One row per part: the score from the gradebook, the reason from the grader's results.

    Args:
        notes: ``{notebook: reason}`` for notebooks that could not be graded (their parts score 0).
        default_note: reason for parts that have no score in the gradebook (they are then set to 0).
        results: ``{notebook: RunResult}`` of the notebooks graded in this run.
        flags: ``{notebook: {grade id: note}}`` from :func:`write_scores`.
        suffix: appended to every reason (e.g. that feedback could not be generated).
    """
    root = Path(root)
    results, flags = results or {}, flags or {}
    rows = []
    for notebook, notebook_parts in assignment_parts(root, name).items():
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
        reasons = {p.grade_id: p.reason for p in results[notebook].parts} if notebook in results else {}
        restored = _restored_note(root, name, student, notebook) if notebook in results else {}
        for part in notebook_parts:
            score, max_score = scores.get(part.grade_id, (None, part.points))
            if notebook in notes:
                score, reason = 0.0, notes[notebook]
            else:
                reason = reasons.get(part.grade_id) or ("passed" if score and score >= max_score else "no score")
                reason += restored.get(part.grade_id, "") + flags.get(notebook, {}).get(part.grade_id, "")
            rows.append(Row(student, notebook, part.grade_id, float(score or 0.0), float(max_score), reason + suffix))
    return rows


def grade_student(root: str, name: str, student: str, feedback: bool = True, unsafe: bool = False) -> list[dict]:
    """Grade (and give feedback on) every notebook of ``student``'s submission; return the CSV rows.

    The submission is taken in first (:func:`~tfcourse.grading.intake.take_in`); nbgrader then autogrades the
    accepted copies, executing them through :class:`~tfcourse.grading.preprocessors.GradeInSandbox`, and
    the grader's own scores are written into the gradebook.
    """
    root_path = Path(root)
    if not unsafe and (problem := sandbox_problem()):
        raise SandboxUnavailable(f"cannot grade safely here: {problem}")
    parts = assignment_parts(root_path, name)
    intake = take_in(root_path, name, student, list(parts))
    if intake.ignored:
        print(f"{student}: ignored in the submission folder: {', '.join(intake.ignored)[:1000]}", flush=True)
    notes: dict[str, str] = {nb: "not submitted" for nb in intake.missing} | intake.refused
    api = make_api(root_path, unsafe=unsafe)
    api.coursedir.submitted_directory = INTAKE
    results: dict[str, RunResult] = {}
    flags: dict[str, dict[str, str]] = {}
    for notebook in parts:
        if notebook in notes:
            record_zero(root_path, name, student, notebook)
            continue
        api.coursedir.notebook_id = notebook
        RESULTS.pop((student, name, notebook), None)
        key = (student, name, notebook)
        LAUNCHED[key] = LearnerProcess(GradeInSandbox(config=api.config).isolation()).launch()
        try:
            result = _run_nbgrader(lambda: api.autograde(name, student, force=True, create=True), "autograde")
        finally:
            unused = LAUNCHED.pop(key, None)
            if unused is not None:
                unused.close()
        scored = RESULTS.pop((student, name, notebook), None)
        if not result.get("success") or scored is None:
            notes[notebook] = f"nbgrader could not grade this notebook: {_failure(result)}"
            record_zero(root_path, name, student, notebook)
            continue
        results[notebook] = scored
        flags[notebook] = write_scores(root_path, name, student, notebook, scored)
    api.coursedir.notebook_id = "*"
    suffix = ""
    if feedback and results:
        made = _run_nbgrader(lambda: api.generate_feedback(name, student, force=True), "generate_feedback")
        if not made.get("success"):
            suffix = f"; feedback could not be generated: {_failure(made)}"
            print(f"{student}: feedback failed: {made.get('error', '')}\n{made.get('log', '')}", flush=True)
    rows = collect_rows(root_path, name, student, notes, results=results, flags=flags, suffix=suffix)
    return [asdict(row) for row in rows]
