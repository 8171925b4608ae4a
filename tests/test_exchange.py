"""nbgrader's exchange round trip on a course made by `tfcourse assign`, graded by `tfcourse grade`.

The instructor releases with ``nbgrader release_assignment`` into a temporary exchange folder
(``c.Exchange.root``); two students, each in a folder (and home) of their own, ``fetch_assignment``, answer or
not, and ``submit``; ``nbgrader collect`` brings the submissions into ``submitted/<student>/ps1/`` with
nbgrader's ``timestamp.txt``; ``tfcourse grade`` grades them. Both students run as the same OS user, so each
names itself with ``--student`` (nbgrader's ``CourseDirectory.student_id``; without it, submit uses the OS
user name), and collect's cross-check of the folder's owner against that name is switched off. About 40 s.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from tests import grading_cases as cases

pytestmark = pytest.mark.grading

NAME = "ps1"
E1 = "ch01-self-attention"
COURSE_ID = "tfcourse"
NBGRADER = str(Path(sys.executable).parent / "nbgrader")


def nbgrader(*args: str, cwd: Path, home: Path) -> str:
    """Run an nbgrader command in ``cwd`` as a user whose home is ``home``; return its log."""
    env = {**os.environ, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for variable in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env.pop(variable, None)
    done = subprocess.run([NBGRADER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{log[-3000:]}"
    return log


def test_release_fetch_submit_collect_then_grade(tmp_path):
    from tfcourse.cli import main
    from tfcourse.grading.assign import assign
    from tfcourse.grading.course import init_course
    from tfcourse.grading.sandbox import sandbox_problem
    from tfcourse.grading.settings import Limits

    exchange = tmp_path / "exchange"
    exchange.mkdir()
    exchange.chmod(0o777)  # as nbgrader's docs set it up: every user may write into it
    course = tmp_path / "course"
    init_course(course, course_id=COURSE_ID, limits=Limits(timeout=20))
    due = datetime.now(timezone.utc) - timedelta(hours=12)  # so the submissions are 1 day late
    assign(course, NAME, [E1], check=False, duedate=due.isoformat())
    with (course / "nbgrader_config.py").open("a") as config:
        config.write(
            f"\nc.Exchange.root = {str(exchange)!r}\n"
            "# the simulated students are all this OS user: do not warn that the owner differs from the name\n"
            "c.ExchangeCollect.check_owner = False\n"
        )
    instructor = tmp_path / "home-instructor"
    instructor.mkdir()
    log = nbgrader("release_assignment", NAME, cwd=course, home=instructor)
    assert (exchange / COURSE_ID / "outbound" / NAME / f"{E1}.ipynb").is_file(), log

    source = nbformat.read(str(course / "source" / NAME / f"{E1}.ipynb"), as_version=4)
    for student, solve in (("ana", True), ("ben", False)):
        home = tmp_path / f"home-{student}"
        home.mkdir()
        (home / "nbgrader_config.py").write_text(
            "c = get_config()  # noqa: F821\n"
            f"c.Exchange.root = {str(exchange)!r}\n"
            f"c.Exchange.cache = {str(home / 'nbgrader_cache')!r}\n"
            f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        )
        nbgrader("fetch_assignment", NAME, cwd=home, home=home)
        path = home / NAME / f"{E1}.ipynb"
        fetched = nbformat.read(str(path), as_version=4)
        if solve:
            nbformat.write(cases.solved(fetched, source), str(path))
        nbgrader("submit", NAME, "--student", student, cwd=home, home=home)
    inbound = sorted(p.name.split("+")[0] for p in (exchange / COURSE_ID / "inbound").iterdir())
    assert inbound == ["ana", "ben"]

    log = nbgrader("collect", NAME, cwd=course, home=instructor)
    for student in ("ana", "ben"):
        folder = course / "submitted" / student / NAME
        assert (folder / f"{E1}.ipynb").is_file() and (folder / "timestamp.txt").is_file(), log

    args = ["grade", str(course), NAME, "--quiet", *(["--unsafe"] if sandbox_problem() else [])]
    assert main(args) == 0
    with (course / f"grades-{NAME}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    totals = {s: sum(float(r["score"]) for r in rows if r["student"] == s) for s in ("ana", "ben")}
    maximum = sum(float(r["max"]) for r in rows if r["student"] == "ana")
    assert maximum == 6 and totals == {"ana": maximum, "ben": 0}, rows
    # lateness comes from collect's timestamp.txt (the assignment has no late penalty: full marks still)
    assert {r["late_days"] for r in rows} == {"1"}, rows
    assert all("counted as on time" not in r["reason"] for r in rows), rows
    assert {r["reason"] for r in rows if r["student"] == "ana"} == {"passed"}
