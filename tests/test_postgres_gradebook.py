"""A PostgreSQL gradebook: `course init --db`, the schema, retries of PostgreSQL's transient errors, and two
`tfcourse grade` runs at once (each with two workers) writing one gradebook that nbgrader's formgrader reads.

The server is real: ``tools/postgres_server.sh`` (Debian's postgresql package, installed by
``tools/setup_postgres.sh``) initialises a cluster in a temporary folder and starts it on a Unix socket there,
as the ``postgres`` user when we are root; it is stopped and deleted afterwards. Where it cannot start, the
tests that need it skip with the script's reason. About 40 s in all, most of it the concurrent grading.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
import uuid
from multiprocessing import get_context
from pathlib import Path

import nbformat
import pytest

from tests import grading_cases as cases

pytestmark = pytest.mark.grading

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tools" / "postgres_server.sh"
NAME = "ps1"
E1 = "ch01-self-attention"
PARTS = ("test_attention_weights", "test_self_attention", "test_free_scores")


@pytest.fixture(scope="module")
def postgres_server():
    """``(folder, URL of its database "gradebook")`` of a throwaway server; stopped when the module is done."""
    pytest.importorskip("psycopg2", reason="psycopg2 (the grading extra's PostgreSQL driver) is not installed")
    started = subprocess.run(["bash", str(SERVER), "start"], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.skip(f"no PostgreSQL server could be started: {started.stderr.strip()[-500:]}")
    folder, url = started.stdout.split()
    try:
        yield folder, url
    finally:
        subprocess.run(["bash", str(SERVER), "stop", folder], capture_output=True, timeout=120)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new, empty database on the module's server."""
    from sqlalchemy import create_engine, text

    folder, url = postgres_server
    name = f"gb_{uuid.uuid4().hex[:12]}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"postgresql+psycopg2://tfcourse@/{name}?host={folder}"


def _grade_args() -> list[str]:
    from tfcourse.grading.sandbox import sandbox_problem

    return ["--unsafe"] if sandbox_problem() else []  # our own submissions: trusted where no sandbox can be made


# --- course init --db, without a server --------------------------------------------------------------------------


def test_course_init_writes_the_database_url(tmp_path, capsys):
    pytest.importorskip("psycopg2", reason="psycopg2 (the grading extra's PostgreSQL driver) is not installed")
    from tfcourse.cli import main
    from tfcourse.grading.course import load_config

    url = "postgresql+psycopg2://grader@db.example.org:5433/course?sslmode=require"
    assert main(["course", "init", str(tmp_path / "pg"), "--db", url]) == 0
    assert f"gradebook: {url}" in capsys.readouterr().out
    assert load_config(tmp_path / "pg").CourseDirectory.db_url == url
    # a bare postgresql:// gets the driver that the grading extra installs (psycopg2)
    assert main(["course", "init", str(tmp_path / "pg"), "--force", "--db", "postgresql://grader@db/course"]) == 0
    assert load_config(tmp_path / "pg").CourseDirectory.db_url == "postgresql+psycopg2://grader@db/course"

    secret = "postgresql://grader:s3cret@db.example.org/course"
    assert main(["course", "init", str(tmp_path / "pw"), "--db", secret]) == 0
    assert "s3cret" not in capsys.readouterr().out  # written into the config, never printed
    assert "grader:s3cret@" in (tmp_path / "pw" / "nbgrader_config.py").read_text()

    assert main(["course", "init", str(tmp_path / "lite")]) == 0  # the default stays SQLite in the folder
    lite = load_config(tmp_path / "lite").CourseDirectory.db_url
    assert lite == f"sqlite:///{tmp_path / 'lite' / 'gradebook.db'}?timeout=60"

    for bad, message in (("not a url", "is not a database URL"), ("nosuchdb://x/y", "is not a database URL")):
        assert main(["course", "init", str(tmp_path / "bad"), "--db", bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    # a server that cannot be reached: a clear error (password hidden), not a traceback
    gone = f"postgresql://grader:s3cret@/course?host={tmp_path / 'no-server'}"
    assert main(["course", "init", str(tmp_path / "gone"), "--db", gone]) == 0
    capsys.readouterr()
    assert main(["assign", str(tmp_path / "gone"), NAME, "--exercises", E1, "--no-validate"]) == 2
    err = capsys.readouterr().err
    assert "tfcourse assign: cannot open the gradebook postgresql+psycopg2://grader:***@/course" in err
    assert "s3cret" not in err and "Traceback" not in err


def test_postgresql_transient_errors_are_retried():
    from sqlalchemy.exc import OperationalError

    from tfcourse.grading.course import is_locked_error, retry_locked

    for message in (
        "(psycopg2.errors.SerializationFailure) could not serialize access due to concurrent update",
        "(psycopg2.errors.DeadlockDetected) deadlock detected\nDETAIL:  Process 1 waits for ShareLock",
        "(sqlite3.OperationalError) database is locked",
    ):
        assert is_locked_error(message)
    assert not is_locked_error('(psycopg2.errors.UndefinedTable) relation "grade" does not exist')

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE grade", {}, Exception("could not serialize access due to concurrent update"))
        return "written"

    assert retry_locked(flaky) == "written" and len(calls) == 3


# --- against the server ------------------------------------------------------------------------------------------


def test_real_serialization_failures_and_deadlocks_are_retried(postgres_url):
    """PostgreSQL's own messages, provoked for real, are the ones that retry_locked retries."""
    from sqlalchemy import create_engine, text

    from tfcourse.grading.course import is_locked_error, retry_locked

    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id int PRIMARY KEY, v int)"))
        connection.execute(text("INSERT INTO t VALUES (1, 0), (2, 0)"))

    # serialization failure: a repeatable-read transaction updates a row changed since its snapshot
    errors = []
    with engine.connect() as first:
        first = first.execution_options(isolation_level="REPEATABLE READ")
        first.execute(text("SELECT v FROM t WHERE id = 1"))  # the snapshot is taken here
        with engine.begin() as second:
            second.execute(text("UPDATE t SET v = v + 1 WHERE id = 1"))
        try:
            first.execute(text("UPDATE t SET v = v + 10 WHERE id = 1"))
        except Exception as error:
            errors.append(str(error))
        first.rollback()

    # deadlock: two transactions lock the two rows in opposite orders
    barrier = threading.Barrier(2)

    def cross(a: int, b: int) -> None:
        try:
            with engine.begin() as connection:
                connection.execute(text("SET deadlock_timeout = '100ms'"))
                connection.execute(text(f"UPDATE t SET v = v + 1 WHERE id = {a}"))
                barrier.wait()
                connection.execute(text(f"UPDATE t SET v = v + 1 WHERE id = {b}"))
        except Exception as error:
            errors.append(str(error))

    threads = [threading.Thread(target=cross, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(errors) == 2, errors
    assert "could not serialize access" in errors[0] and "deadlock detected" in errors[1]
    assert all(is_locked_error(error) for error in errors)

    # and retry_locked runs a transaction that lost such a race again, to success
    attempts = []

    def racing_update() -> int:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                connection.execute(text("SELECT v FROM t WHERE id = 2"))
                if not attempts:  # the first attempt loses: someone else commits in between
                    with engine.begin() as other:
                        other.execute(text("UPDATE t SET v = 100 WHERE id = 2"))
                attempts.append(1)
                connection.execute(text("UPDATE t SET v = v + 1 WHERE id = 2"))
                return connection.execute(text("SELECT v FROM t WHERE id = 2")).scalar_one()

    assert retry_locked(racing_update) == 101 and len(attempts) == 2
    engine.dispose()


def _prepare(course: str) -> str:
    from tfcourse.grading.course import prepare_gradebook

    prepare_gradebook(course)
    return "ok"


def test_schema_is_created_once_by_concurrent_graders(postgres_url, tmp_path):
    from nbgrader.api import Course, Gradebook
    from sqlalchemy import create_engine, inspect, text

    from tfcourse.grading.course import init_course

    course = tmp_path / "course"
    init_course(course, db_url=postgres_url)
    with get_context("fork").Pool(4) as pool:  # four graders open the empty database at once
        assert pool.map(_prepare, [str(course)] * 4) == ["ok"] * 4
    engine = create_engine(postgres_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"alembic_version", "course", "student", "assignment", "grade", "submitted_notebook"} <= tables
    with Gradebook(postgres_url, "tfcourse") as gb:
        assert gb.db.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert [c.id for c in gb.db.query(Course)] == ["tfcourse"]


EXPECTED = {  # student: (what they submit, their scores on PARTS)
    "ana": ("solved", (2, 3, 1)),
    "ben": ("blank", (0, 0, 0)),
    "cai": ("weights only", (2, 0, 0)),
    "dee": ("solved", (2, 3, 1)),
    "eli": ("blank", (0, 0, 0)),
    "fay": ("free answer only", (0, 0, 1)),
}


def _submission(kind: str, release, source):
    solved = cases.solved(release, source)
    answers = {cases.grade_id(c): c.source for c in solved.cells}
    if kind == "solved":
        return solved
    if kind == "weights only":
        return cases.answer(release, "attention_weights", answers["attention_weights"])
    if kind == "free answer only":
        return cases.answer(release, "free_scores", answers["free_scores"])
    return release


def test_two_grading_runs_at_once_write_one_postgresql_gradebook(postgres_url, tmp_path):
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from tfcourse.grading.assign import assign
    from tfcourse.grading.course import init_course, load_config
    from tfcourse.grading.settings import Limits

    course = tmp_path / "course"
    init_course(course, limits=Limits(timeout=20), db_url=postgres_url)
    assign(course, NAME, [E1], check=False)
    release = nbformat.read(str(course / "release" / NAME / f"{E1}.ipynb"), as_version=4)
    source = nbformat.read(str(course / "source" / NAME / f"{E1}.ipynb"), as_version=4)
    for student, (kind, _) in EXPECTED.items():
        cases.write(_submission(kind, release, source), course, student, NAME, E1)
    assert not (course / "gradebook.db").exists()

    tfcourse = str(Path(sys.executable).parent / "tfcourse")
    halves = (["ana", "ben", "cai"], ["dee", "eli", "fay"])
    started = time.monotonic()
    runs = [
        subprocess.Popen(
            [tfcourse, "grade", str(course), NAME, "--workers", "2", "--quiet", "--students", *half, *_grade_args()],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for half in halves
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    seconds = time.monotonic() - started
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
        assert "graded 3, skipped 0" in output, output[-3000:]

    with (course / f"grades-{NAME}.csv").open() as handle:
        rows = {(r["student"], r["part"].split(":", 1)[1]): float(r["score"]) for r in csv.DictReader(handle)}
    expected = {(s, p): points for s, (_, scores) in EXPECTED.items() for p, points in zip(PARTS, scores, strict=True)}
    assert rows == expected, f"after {seconds:.0f} s"

    with Gradebook(postgres_url, "tfcourse") as gb:
        assert gb.engine.dialect.name == "postgresql"
        for student, (_, scores) in EXPECTED.items():
            submitted = gb.find_submission_notebook(E1, NAME, student)
            assert {g.name: g.score for g in submitted.grades} == dict(zip(PARTS, scores, strict=True)), student

    config = load_config(course)  # the formgrader's view: nbgrader's API on the course's config
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    listed = {s["student"]: s for s in api.get_submissions(NAME)}
    assert {s: listed[s]["score"] for s in listed} == {s: sum(v[1]) for s, v in EXPECTED.items()}
    assert all(s["autograded"] and not s["needs_manual_grade"] for s in listed.values())
    assignment = api.get_assignment(NAME)
    assert assignment["num_submissions"] == 6 and assignment["max_score"] == 6
    notebooks = {n["student"]: n["score"] for n in api.get_notebook_submissions(NAME, E1)}
    assert notebooks == {s: sum(v[1]) for s, v in EXPECTED.items()}
