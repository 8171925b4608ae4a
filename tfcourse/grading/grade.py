"""Autograde every submission of an assignment in parallel, then export and summarise the grades.

Submissions are graded in worker processes (:mod:`~tfcourse.grading.pool`), one student per process, with a
progress bar. nbgrader's own gradebook holds the scores; ``grades-NAME.csv`` in the course folder lists one
row per student and part with the score, the maximum and the reason; each worker's own output (nbgrader's
log, kernel messages) goes to ``logs/grade-NAME/<student>.log``. A student whose grading fails as a
whole (the worker crashed or ran past its deadline) still gets a row for every part.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from tfcourse.grading.course import load_config, prepare_gradebook
from tfcourse.grading.pool import Job, run_jobs
from tfcourse.grading.reasons import shorten
from tfcourse.grading.worker import Row, assignment_parts, collect_rows, grade_student

__all__ = ["CSV_FIELDS", "default_deadline", "grade", "students", "summarise", "write_csv"]

CSV_FIELDS = ("student", "part", "score", "max", "reason")


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


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    """Write ``student, part, score, max, reason`` rows."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for row in rows:
            writer.writerow((row.student, row.part, f"{row.score:g}", f"{row.max_score:g}", row.reason))


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
) -> list[Row]:
    """Autograde every submission of ``name`` (or the students in ``only``) and write ``grades-NAME.csv``.

    Args:
        root: the course folder.
        name: the assignment.
        workers: parallel worker processes.
        deadline: seconds one student's grading may take (default: :func:`default_deadline`).
        feedback: also generate HTML feedback (hidden tests removed) into ``feedback/``.
        only: grade just these students.
        progress: show a progress bar on stderr.

    Returns:
        Every row of the CSV: one per student and part, whatever happened.
    """
    root = Path(root).resolve()
    assignment_parts(root, name)  # fails with a hint when the assignment does not exist
    everyone = students(root, name)
    chosen = [s for s in everyone if only is None or s in only]
    missing = sorted(set(only or ()) - set(everyone))
    if missing:
        raise FileNotFoundError(f"no submissions for {missing} under {root / 'submitted'}")
    prepare_gradebook(root)
    deadline = default_deadline(root, name) if deadline is None else deadline
    logs = root / "logs" / f"grade-{name}"
    jobs = [
        Job(student, grade_student, (str(root), name, student, feedback), log=str(logs / f"{student}.log"))
        for student in chosen
    ]
    with tqdm(total=len(jobs), desc=f"grading {name}", unit="submission", disable=not progress) as bar:
        with _thread_budget(workers):
            outcomes = run_jobs(jobs, workers=workers, deadline=deadline, on_done=lambda _: bar.update(1))
    rows: list[Row] = []
    for student, outcome in outcomes.items():
        if outcome.ok:
            rows.extend(Row(**row) for row in outcome.value)
        else:
            last = [line for line in (outcome.error or "").splitlines() if line.strip()]
            reason = f"grading failed: {shorten(last[-1] if last else 'unknown error', 200)}"
            try:
                rows.extend(collect_rows(root, name, student, {}, default_note=reason))
            except Exception as error:  # even the gradebook is unusable: still report every part
                reason = f"{reason}; gradebook not updated ({shorten(str(error), 100)})"
                for notebook, parts in assignment_parts(root, name).items():
                    rows.extend(Row(student, notebook, p.grade_id, 0.0, p.points, reason) for p in parts)
    write_csv(root / f"grades-{name}.csv", rows)
    return rows
