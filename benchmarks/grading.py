"""Grading throughput: ``tfcourse grade --workers 2`` (sandboxed) vs plain serial ``nbgrader autograde``.

Run ``python benchmarks/grading.py`` (``--quick`` for a smoke test). It builds a temporary course with one
exercise, makes N submissions (solved, untouched and half-solved, in turn), grades them once with plain
``nbgrader autograde`` as nbgrader ships it (its own ``Execute``: one kernel per notebook, the notebook
scored by its own outputs; one process, one notebook after another) and once with
``tfcourse grade --workers 2 --no-feedback`` (each notebook's code in a fresh sandbox, tests and scores in the
grader; it also writes the CSV, and plain autograde makes no feedback either), checks that both give the
same scores, and prints notebooks per minute. Writes ``benchmarks/results/grading-cpu.json``. Goal from the
issue tracker: speed-up ≥ 1.7 on 2 cores with the sandbox.

``--postgres URL`` (an empty PostgreSQL database, e.g. from ``tools/postgres_server.sh start``) adds a third
measurement: the same submissions graded the same way in a second course whose gradebook is that database
(``tfcourse course init --db URL``), reported as its throughput relative to the SQLite gradebook's in this run.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, save

EXERCISE = "ch02-scaling"
NAME = "bench"
PLAIN_NBGRADER = """
# benchmark baseline: nbgrader's own autograde steps (in-kernel execution)
c.Autograde.autograde_preprocessors = [
    "nbgrader.preprocessors.Execute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
"""


def _submissions(course: Path, count: int) -> None:
    release = nbformat.read(str(course / "release" / NAME / f"{EXERCISE}.ipynb"), as_version=4)
    source = nbformat.read(str(course / "source" / NAME / f"{EXERCISE}.ipynb"), as_version=4)
    answers = {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in source.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    for i in range(count):
        nb = copy.deepcopy(release)
        for j, cell in enumerate(nb.cells):
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            solve = i % 3 == 0 or (i % 3 == 2 and j % 2 == 0)  # solved, untouched, half-solved in turn
            if grade_id in answers and solve:
                cell.source = answers[grade_id]
        folder = course / "submitted" / f"student{i:03d}" / NAME
        folder.mkdir(parents=True)
        nbformat.write(nb, str(folder / f"{EXERCISE}.ipynb"))


def _scores(course: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    from tfcourse.grading.course import load_config

    config = load_config(course)
    with Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id) as gb:
        return {s.student.id: s.score for s in gb.assignment_submissions(NAME)}


def _course(course: Path, count: int, db: str | None = None) -> None:
    """A course with the benchmark's assignment (not validated) and ``count`` submissions."""
    tfcourse = str(Path(sys.executable).parent / "tfcourse")
    init = [tfcourse, "course", "init", str(course)]
    if db is not None:  # a course id of its own, so that runs on one database do not meet
        init += ["--db", db, "--course-id", f"bench-{uuid.uuid4().hex[:8]}"]
    subprocess.run(init, check=True, capture_output=True)
    subprocess.run(
        [tfcourse, "assign", str(course), NAME, "--exercises", EXERCISE, "--no-validate"],
        check=True,
        capture_output=True,
    )
    _submissions(course, count)


def _grade(course: Path, workers: int) -> float:
    """Seconds that ``tfcourse grade --workers N --no-feedback`` takes on ``course``."""
    tfcourse = str(Path(sys.executable).parent / "tfcourse")
    started = time.perf_counter()
    command = [tfcourse, "grade", str(course), NAME, "--workers", str(workers), "--quiet", "--no-feedback"]
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def _reset(course: Path) -> None:
    shutil.rmtree(course / "autograded", ignore_errors=True)
    shutil.rmtree(course / "feedback", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 submissions instead of 40, for a smoke test")
    parser.add_argument("--submissions", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    parser.add_argument(
        "--postgres",
        default=None,
        metavar="URL",
        help="also grade with the gradebook in this (empty) PostgreSQL database, e.g. from "
        "tools/postgres_server.sh start",
    )
    args = parser.parse_args()
    count = args.submissions or (8 if args.quick else 40)
    env = environment("cpu")
    print(" | ".join(f"{k}: {v}" for k, v in env.items() if v))
    nbgrader = str(Path(sys.executable).parent / "nbgrader")
    postgres, postgres_scores = None, None
    with tempfile.TemporaryDirectory() as scratch:
        course = Path(scratch) / "course"
        _course(course, count)

        config = course / "nbgrader_config.py"
        ours = config.read_text()
        config.write_text(ours + PLAIN_NBGRADER)
        started = time.perf_counter()
        subprocess.run([nbgrader, "autograde", NAME, "--force"], cwd=course, check=True, capture_output=True)
        serial = time.perf_counter() - started
        serial_scores = _scores(course)
        config.write_text(ours)
        _reset(course)

        parallel = _grade(course, args.workers)
        parallel_scores = _scores(course)

        if args.postgres:
            on_server = Path(scratch) / "course-postgres"
            _course(on_server, count, args.postgres)
            postgres = _grade(on_server, args.workers)
            postgres_scores = _scores(on_server)

    same = serial_scores == parallel_scores and len(serial_scores) == count
    same = same and (postgres_scores is None or postgres_scores == parallel_scores)
    rows = [
        {"what": "nbgrader autograde (serial)", "seconds": serial, "per_minute": 60 * count / serial},
        {
            "what": f"tfcourse grade --workers {args.workers} (sandboxed autograde + CSV)",
            "seconds": parallel,
            "per_minute": 60 * count / parallel,
        },
    ]
    if postgres is not None:
        what = f"tfcourse grade --workers {args.workers}, PostgreSQL gradebook"
        rows.append({"what": what, "seconds": postgres, "per_minute": 60 * count / postgres})
    for row in rows:
        print(f"{row['what']:<48} {count} notebooks  {row['seconds']:7.1f} s  {row['per_minute']:6.1f} notebooks/min")
    ratio = serial / parallel
    print(f"speed-up {ratio:.2f} (goal >= 1.7)  same scores: {same}")
    result = {
        "environment": env,
        "submissions": count,
        "exercise": EXERCISE,
        "results": rows,
        "ratio": ratio,
        "same_scores": same,
    }
    if postgres is not None:
        result["postgres_vs_sqlite"] = parallel / postgres  # throughput ratio: above 1, PostgreSQL is faster
        print(f"PostgreSQL gradebook: {parallel / postgres:.2f} x the SQLite gradebook's throughput")
    path = save("grading-cpu", result, args.out)
    print(f"wrote {path}")
    if not same:
        sys.exit("the two graders disagree on the scores")


if __name__ == "__main__":
    main()
