"""Autograde every submission of an assignment in parallel, then export and summarise the grades.

Submissions are graded in worker processes (:mod:`~tfcourse.grading.pool`), one student per process, with a
progress bar. nbgrader's own gradebook holds the (raw) scores; ``grades-NAME.csv`` in the course folder lists
one row per student and part::

    student,part,score,max,reason,late_days,penalty
    alice,ch01-self-attention:test_attention_weights,1.5,2,passed; 1 day late: -0.5,1,0.5

``score`` is after the late penalty, ``penalty`` the points it took and ``late_days`` the started days
(24 h) between the due date and the submission (the rule is ``assignments/NAME.json``, written by
:func:`tfcourse.grading.assign.assign`; the submission time is nbgrader's ``timestamp.txt`` in the
submission folder, and a submission without one counts as on time, as its reason says). A late notebook
loses ``late_days × late_penalty`` of its maximum, capped at its score; every graded part of the notebook
loses the same share of its own score. The CSV is replaced atomically (written to a temporary file, then
renamed), so an interrupted run leaves the previous CSV whole; runs at once on different students (each
with ``--students``) merge their rows one after the other, under a lock (``.tfcourse/grades-NAME.lock``).

Each worker's own output (nbgrader's log, kernel messages) goes to ``logs/grade-NAME/<student>.log``. A
student whose grading fails as a whole (the worker crashed or ran past its deadline) still gets a row for
every part.

Re-grading skips a submission that nothing has changed since it was last graded. After grading a student,
``logs/grade-NAME/<student>.json`` records what the grade depends on and the raw rows::

    {"manifest": 1, "grader": "tfcourse 0.1.0 (code 3f2a…), nbgrader 0.9.6", "config": "<sha256>",
     "source": {"ch01-self-attention.ipynb": "<sha256>"}, "submitted": {"ch01-self-attention.ipynb": "<sha256>"},
     "feedback": true, "graded_at": "2026-12-11T09:00:00+00:00", "rows": [{"student": "alice", ...}]}

(sha256 of the course's ``nbgrader_config.py``, of each source notebook and of each submitted notebook; the
grader version hashes tfcourse's code, so any change to it re-grades). A later run whose manifest matches,
and whose gradebook still holds the submission, reuses those rows (the late penalty is applied afresh);
``force`` re-grades anyway. No manifest is kept for a student whose grading failed or whose notebook
nbgrader could not process, so those are retried every time.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from tfcourse.grading.assign import LateRule, read_rule
from tfcourse.grading.course import CONFIG_NAME, load_config, prepare_gradebook
from tfcourse.grading.pool import Job, run_jobs
from tfcourse.grading.reasons import shorten
from tfcourse.grading.sandbox import SandboxUnavailable, sandbox_problem
from tfcourse.grading.worker import Row, assignment_parts, collect_rows, grade_student

__all__ = [
    "CSV_FIELDS",
    "GradedRow",
    "Grades",
    "apply_late_penalty",
    "default_deadline",
    "fingerprint",
    "grade",
    "grader_version",
    "manifest_path",
    "merge_rows",
    "read_csv",
    "reusable_rows",
    "students",
    "submission_time",
    "summarise",
    "write_csv",
    "write_manifest",
]

CSV_FIELDS = ("student", "part", "score", "max", "reason", "late_days", "penalty")
"""The CSV's columns; ``late_days`` and ``penalty`` come last so readers of the first five keep working."""

MANIFEST_VERSION = 1
_UNGRADABLE = "nbgrader could not grade"  # the start of a reason that grading should retry next time


@dataclass(frozen=True)
class GradedRow(Row):
    """A CSV row: the part's score after the late penalty, the started days late and the points taken."""

    late_days: int = 0
    penalty: float = 0.0

    @property
    def raw_score(self) -> float:
        """The score before the late penalty (what the gradebook holds)."""
        return self.score + self.penalty


class Grades(list):
    """The CSV's rows (a list of :class:`GradedRow`), with who was graded and who was skipped as unchanged."""

    def __init__(self, rows=(), *, graded: Sequence[str] = (), skipped: Sequence[str] = ()) -> None:
        super().__init__(rows)
        self.graded = list(graded)
        self.skipped = list(skipped)


def students(root: Path | str, name: str) -> list[str]:
    """Students with a submission folder ``submitted/<student>/<name>/``, sorted."""
    return sorted(p.parent.name for p in Path(root).glob(f"submitted/*/{name}") if p.is_dir())


def default_deadline(root: Path | str, name: str) -> float:
    """Seconds one student's grading may take: every code cell at its timeout, plus kernel start-ups."""
    from tfcourse.grading.runner import read_notebook

    execute = load_config(root).Execute
    timeout, startup = float(execute.get("timeout", 60)), float(execute.get("startup_timeout", 120))
    total = 0.0
    for path in sorted((Path(root) / "source" / name).glob("*.ipynb")):
        cells = sum(1 for c in read_notebook(path).cells if c.cell_type == "code")
        total += startup + 60 + cells * (timeout + 10)  # + interrupts and nbgrader's own work
    return total


@contextmanager
def _atomic(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """Write ``path`` through a temporary file in the same folder, renamed over it once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline=newline, encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def _csv_lock(root: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on ``.tfcourse/grades-NAME.lock`` (none where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    path = root / ".tfcourse" / f"grades-{name}.lock"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    """Write the rows under :data:`CSV_FIELDS`, atomically (a reader sees the old file or the new, whole)."""
    with _atomic(Path(path), newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for row in rows:
            late_days, penalty = getattr(row, "late_days", 0), getattr(row, "penalty", 0.0)
            writer.writerow(
                (row.student, row.part, f"{row.score:g}", f"{row.max_score:g}", row.reason, late_days, f"{penalty:g}")
            )


def read_csv(path: Path | str) -> list[GradedRow]:
    """Rows of a grades CSV (one written before ``late_days`` and ``penalty`` existed reads as on time).

    Raises:
        ValueError: naming the file and line, if it is not a grades CSV.
    """
    path = Path(path)
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in CSV_FIELDS[:5] if f not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a grades CSV (no column {', '.join(missing)})")
        for record in reader:
            try:
                notebook, grade_id = record["part"].split(":", 1)
                rows.append(
                    GradedRow(
                        record["student"],
                        notebook,
                        grade_id,
                        float(record["score"]),
                        float(record["max"]),
                        record["reason"] or "",
                        int(record.get("late_days") or 0),
                        float(record.get("penalty") or 0.0),
                    )
                )
            except (AttributeError, TypeError, ValueError) as error:
                raise ValueError(f"{path}, line {reader.line_num}: not a grades row ({error})") from None
    return rows


def merge_rows(previous: Sequence[Row], new: Sequence[Row], replaced: Sequence[str]) -> list[Row]:
    """``previous`` without the rows of the ``replaced`` students, plus ``new``; by student, parts in order."""
    gone = set(replaced)
    kept = [row for row in previous if row.student not in gone]
    return sorted([*kept, *new], key=lambda row: row.student)  # stable: each student's parts keep their order


def submission_time(root: Path | str, name: str, student: str) -> tuple[datetime | None, str | None]:
    """When ``student`` submitted ``name`` (naive UTC, from nbgrader's ``timestamp.txt``), or None and why not."""
    from nbgrader.utils import parse_utc

    path = Path(root) / "submitted" / student / name / "timestamp.txt"
    if not path.is_file():
        return None, "no timestamp.txt: counted as on time"
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        if not text:
            raise ValueError("empty")
        return parse_utc(text), None
    except (ValueError, OverflowError) as error:
        return None, f"timestamp.txt unreadable ({shorten(str(error), 60)}): counted as on time"


def apply_late_penalty(
    rows: Sequence[Row], late_days: int, fraction: float, note: str | None = None
) -> list[GradedRow]:
    """Take ``late_days × fraction`` of each notebook's maximum from its score, never below zero.

    Each part of a notebook loses the same share of its own score, so the parts' penalties add up to the
    notebook's. ``note`` (e.g. why a submission counts as on time) is added to every row's reason.
    """
    notebooks: dict[str, list[Row]] = {}
    for row in rows:
        notebooks.setdefault(row.notebook, []).append(row)
    share: dict[str, float] = {}
    for notebook, group in notebooks.items():
        score = sum(r.score for r in group)
        penalty = min(score, late_days * fraction * sum(r.max_score for r in group))
        share[notebook] = penalty / score if score > 0 and penalty > 0 else 0.0
    out = []
    for row in rows:
        penalty = row.score * share[row.notebook]
        reason = row.reason
        if penalty > 0:
            reason += f"; {late_days} day{'s' if late_days != 1 else ''} late: -{penalty:g}"
        if note:
            reason += f"; {note}"
        score = max(0.0, row.score - penalty)
        out.append(
            GradedRow(
                row.student, row.notebook, row.grade_id, score, row.max_score, reason, late_days, row.score - score
            )
        )
    return out


def _late(root: Path, name: str, student: str, rows: Sequence[Row], rule: LateRule) -> list[GradedRow]:
    if rule.duedate is None:
        return apply_late_penalty(rows, 0, 0.0)
    submitted, note = submission_time(root, name, student)
    return apply_late_penalty(rows, rule.late_days(submitted), rule.penalty, note)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def grader_version() -> str:
    """tfcourse's and nbgrader's versions, and a hash of tfcourse's code (any change to it may change a score)."""
    import nbgrader

    import tfcourse

    package = Path(tfcourse.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    version = getattr(tfcourse, "__version__", "unknown")
    return f"tfcourse {version} (code {digest.hexdigest()[:16]}), nbgrader {nbgrader.__version__}"


def fingerprint(root: Path | str, name: str, student: str) -> dict:
    """What a student's grade depends on: the grader, the course config, the source and submitted notebooks."""
    root = Path(root)
    submitted = root / "submitted" / student / name
    return {
        "manifest": MANIFEST_VERSION,
        "grader": grader_version(),
        "config": _sha256(root / CONFIG_NAME),
        "source": {p.name: _sha256(p) for p in sorted((root / "source" / name).glob("*.ipynb"))},
        "submitted": {p.name: _sha256(p) for p in sorted(submitted.glob("*.ipynb")) if p.is_file()},
    }


def manifest_path(root: Path | str, name: str, student: str) -> Path:
    """``logs/grade-NAME/<student>.json``, next to the student's grading log."""
    return Path(root) / "logs" / f"grade-{name}" / f"{student}.json"


def write_manifest(path: Path, fingerprint: dict, rows: Sequence[dict], feedback: bool) -> None:
    """Record a grading: its fingerprint, whether feedback was made, and the raw rows (before any penalty)."""
    record = {
        **fingerprint,
        "feedback": feedback,
        "graded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": list(rows),
    }
    with _atomic(Path(path)) as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")


def reusable_rows(path: Path, fingerprint: dict, feedback: bool) -> list[Row] | None:
    """The raw rows recorded in the manifest at ``path`` if nothing in ``fingerprint`` changed, else None.

    A manifest that is missing, unreadable, of another format or made without the feedback now wanted
    counts as changed.
    """
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        if any(record.get(key) != value for key, value in fingerprint.items()):
            return None
        if feedback and not record.get("feedback"):
            return None
        rows = [Row(**row) for row in record["rows"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return rows or None


def _in_gradebook(root: Path, name: str, candidates: Sequence[str]) -> set[str]:
    """The students among ``candidates`` whose submission of ``name`` the gradebook holds."""
    from nbgrader.api import Gradebook

    if not candidates:
        return set()
    config = load_config(root)
    found = set()
    with Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id) as gb:
        for student in candidates:
            try:
                gb.find_submission(name, student)
            except Exception:  # MissingEntry
                continue
            found.add(student)
    return found


def summarise(rows: Sequence[Row], out: TextIO = sys.stdout) -> None:
    """Print a per-part table (mean, full marks, zeros) and each student's total."""
    parts: dict[str, list[Row]] = {}
    for row in rows:
        parts.setdefault(row.part, []).append(row)
    width = max([len("part"), *(len(p) for p in parts)])
    print(f"{'part':<{width}}  {'max':>5}  {'mean':>6}  {'full':>5}  {'zero':>5}  {'n':>4}", file=out)
    for part, group in parts.items():
        mean = sum(r.score for r in group) / len(group)
        full = sum(r.score >= r.max_score for r in group)
        zero = sum(r.score == 0 for r in group)
        print(
            f"{part:<{width}}  {group[0].max_score:>5g}  {mean:>6.2f}  {full:>5}  {zero:>5}  {len(group):>4}", file=out
        )
    totals: dict[str, list[float]] = {}
    for row in rows:
        totals.setdefault(row.student, [0.0, 0.0])
        totals[row.student][0] += row.score
        totals[row.student][1] += row.max_score
    print(file=out)
    for student, (score, maximum) in totals.items():
        problems = sorted({r.reason for r in rows if r.student == student and r.reason != "passed"})
        shown = f"  ({'; '.join(shorten(p, 100) for p in problems[:2])}{' …' if len(problems) > 2 else ''})"
        print(f"{student:<{width}}  {score:>5g} / {maximum:g}{shown if problems else ''}", file=out)


@contextmanager
def _thread_budget(workers: int) -> Iterator[None]:
    """Share the cores among the workers' kernels (inherited through the environment while grading).

    Every kernel imports torch, whose thread pool otherwise takes every core: two kernels on two cores then
    spend their time waiting for each other's threads instead of running side by side. A value the user
    has set already is kept.
    """
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    added = [var for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if var not in os.environ]
    os.environ.update(dict.fromkeys(added, threads))
    try:
        yield
    finally:
        for var in added:
            os.environ.pop(var, None)


def grade(
    root: Path | str,
    name: str,
    *,
    workers: int = 2,
    deadline: float | None = None,
    feedback: bool = True,
    only: Sequence[str] | None = None,
    progress: bool = True,
    force: bool = False,
    unsafe: bool = False,
) -> Grades:
    """Autograde every submission of ``name`` (or the students in ``only``) and write ``grades-NAME.csv``.

    With ``only``, the CSV is merged: the rows of students already in it and not in ``only`` are kept as
    they are, and those of the students in ``only`` are replaced. A run of everyone rewrites it with exactly
    the students who have a submission. Either way the file is replaced atomically.

    Args:
        root: the course folder.
        name: the assignment.
        workers: parallel worker processes.
        deadline: seconds one student's grading may take (default: :func:`default_deadline`).
        feedback: also generate HTML feedback (hidden tests removed) into ``feedback/``.
        only: grade just these students.
        progress: show a progress bar on stderr.
        force: re-grade submissions that are unchanged since their last grading (see the module docstring).
        unsafe: run submissions without the sandbox (a separate process only): they can then read and change
            the course folder. Only for machines where no sandbox can be made, and trusted submissions.

    Returns:
        Every row of the CSV: one per student and part, whatever happened; ``.graded`` and ``.skipped`` name
        the students graded now and those whose previous grading was reused.

    Raises:
        FileNotFoundError: for a student in ``only`` without a submission, or a missing assignment.
        ValueError: if ``only`` is given and the existing CSV cannot be read (its rows could not be kept), or
            ``assignments/NAME.json`` is invalid.
        SandboxUnavailable: no sandbox can be made here and ``unsafe`` is False.
    """
    root = Path(root).resolve()
    if not unsafe and (problem := sandbox_problem()):
        raise SandboxUnavailable(
            f"cannot grade safely on this machine: {problem}. Grading would run submissions with your rights; "
            "pass --unsafe to do so anyway"
        )
    assignment_parts(root, name)  # fails with a hint when the assignment does not exist
    everyone = students(root, name)
    chosen = [s for s in everyone if only is None or s in only]
    missing = sorted(set(only or ()) - set(everyone))
    if missing:
        raise FileNotFoundError(f"no submissions for {missing} under {root / 'submitted'}")
    csv_path = root / f"grades-{name}.csv"
    previous: list[Row] = []
    if only is not None and csv_path.exists():
        try:
            previous = list(read_csv(csv_path))
        except ValueError as error:
            raise ValueError(f"cannot keep the other students' rows: {error}; fix or remove it") from None
    rule = read_rule(root, name)
    prepare_gradebook(root)
    deadline = default_deadline(root, name) if deadline is None else deadline
    logs = root / "logs" / f"grade-{name}"
    prints = {student: fingerprint(root, name, student) for student in chosen}
    raw: dict[str, list[Row]] = {}
    if not force:
        for student in chosen:
            rows = reusable_rows(manifest_path(root, name, student), prints[student], feedback)
            if rows is not None:
                raw[student] = rows
        held = _in_gradebook(root, name, list(raw))  # a gradebook rebuilt since then needs the scores again
        raw = {student: rows for student, rows in raw.items() if student in held}
    skipped = [student for student in chosen if student in raw]
    jobs = [
        Job(student, grade_student, (str(root), name, student, feedback, unsafe), log=str(logs / f"{student}.log"))
        for student in chosen
        if student not in raw
    ]
    with tqdm(total=len(jobs), desc=f"grading {name}", unit="submission", disable=not progress) as bar:
        with _thread_budget(workers):
            outcomes = run_jobs(jobs, workers=workers, deadline=deadline, on_done=lambda _: bar.update(1))
    for student, outcome in outcomes.items():
        manifest = manifest_path(root, name, student)
        if outcome.ok:
            raw[student] = [Row(**row) for row in outcome.value]
            if any(row.reason.startswith(_UNGRADABLE) for row in raw[student]):
                manifest.unlink(missing_ok=True)  # retried next time (nbgrader's trouble may be passing)
            else:
                write_manifest(manifest, prints[student], outcome.value, feedback)
            continue
        manifest.unlink(missing_ok=True)
        last = [line for line in (outcome.error or "").splitlines() if line.strip()]
        reason = f"grading failed: {shorten(last[-1] if last else 'unknown error', 200)}"
        try:
            raw[student] = collect_rows(root, name, student, {}, default_note=reason)
        except Exception as error:  # even the gradebook is unusable: still report every part
            reason = f"{reason}; gradebook not updated ({shorten(str(error), 100)})"
            raw[student] = [
                Row(student, notebook, p.grade_id, 0.0, p.points, reason)
                for notebook, parts in assignment_parts(root, name).items()
                for p in parts
            ]
    new = [row for student in chosen for row in _late(root, name, student, raw[student], rule)]
    with _csv_lock(root, name):
        if only is not None and csv_path.exists():  # read again: another run may have written it meanwhile
            try:
                previous = list(read_csv(csv_path))
            except ValueError:
                pass  # spoilt since the start: keep the rows read then
        rows = merge_rows(previous, new, chosen)
        write_csv(csv_path, rows)
    return Grades(rows, graded=[s for s in chosen if s not in skipped], skipped=skipped)
