"""An nbgrader course directory set up for PyTorch notebooks, and access to it through nbgrader's API."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from tfcourse.grading.settings import (
    AUTOGRADE_PREPROCESSORS,
    CODE_STUB,
    CONFIG_TEMPLATE,
    FEEDBACK_PREPROCESSORS,
    SQLITE_DB_URL,
    WARNING_PATTERN,
    Limits,
    kernel_arguments,
)

__all__ = [
    "CONFIG_NAME",
    "check_db_url",
    "course_secret",
    "init_course",
    "is_locked_error",
    "load_config",
    "make_api",
    "prepare_gradebook",
    "retry_locked",
]

CONFIG_NAME = "nbgrader_config.py"
T = TypeVar("T")


def init_course(
    root: Path | str,
    *,
    course_id: str = "tfcourse",
    limits: Limits | None = None,
    force: bool = False,
    db_url: str | None = None,
) -> Path:
    """Create an nbgrader course directory with ``nbgrader_config.py`` suited to PyTorch notebooks.

    The folders ``source/``, ``release/``, ``submitted/``, ``autograded/`` and ``feedback/`` are created
    empty; the gradebook is created on first use.

    Args:
        root: the course folder (created if missing).
        course_id: nbgrader's course id.
        limits: per-cell timeout, kernel memory limit and output limits written into the config
            (default :class:`~tfcourse.grading.settings.Limits`).
        force: overwrite an existing ``nbgrader_config.py``.
        db_url: the gradebook's SQLAlchemy URL, e.g. ``postgresql://grader@db.example.org/course`` (checked
            by :func:`check_db_url`, not connected to); None: SQLite, ``gradebook.db`` in the course folder.

    Returns:
        The path of the configuration file.

    Raises:
        FileExistsError: if the configuration exists and ``force`` is False.
        ValueError: for a ``db_url`` that is not a usable database URL.
    """
    limits = limits or Limits()
    db_source = SQLITE_DB_URL if db_url is None else repr(check_db_url(db_url))
    root = Path(root).resolve()
    config = root / CONFIG_NAME
    if config.exists() and not force:
        raise FileExistsError(f"{config} already exists; pass force=True (--force) to overwrite it")
    for folder in ("source", "release", "submitted", "autograded", "feedback"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    config.write_text(
        CONFIG_TEMPLATE.format(
            course_id=course_id,
            db_url=db_source,
            timeout=limits.timeout,
            startup_timeout=limits.startup_timeout,
            kernel_arguments=kernel_arguments(limits.memory_mb),
            warning_pattern=WARNING_PATTERN,
            max_output_lines=limits.max_output_lines,
            max_traceback=limits.max_traceback,
            code_stub=CODE_STUB,
            autograde=AUTOGRADE_PREPROCESSORS,
            memory_mb=limits.memory_mb,
            feedback=FEEDBACK_PREPROCESSORS,
        ),
        encoding="utf-8",
    )
    course_secret(root)
    return config


def check_db_url(url: str) -> str:
    """``url`` as the course's configuration holds it, once SQLAlchemy can use it and its driver is installed.

    A bare ``postgresql://`` gets the driver the ``grading`` extra installs, ``postgresql+psycopg2://``
    (SQLAlchemy 2.1 would otherwise pick psycopg 3); a URL that names its driver is kept as it is.

    Raises:
        ValueError: naming ``--db``, for a malformed URL, an unknown database or a missing driver.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise ValueError(
            f"--db: {url!r} is not a database URL (e.g. postgresql://user@host/database): {error}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise ValueError(
            f"--db: no driver for {parsed.drivername} ({error}); for PostgreSQL: pip install 'tfcourse[grading]'"
        ) from None
    return url


SECRET = Path(".tfcourse") / "secret"


def course_secret(root: Path | str) -> bytes:
    """The course's secret (created on first use, readable by its owner only): it seeds grading's inputs.

    Each part's inputs derive from (secret, student, assignment, part), so a re-grade draws the same inputs
    and gives the same score, while students cannot compute each other's (or their own) inputs in advance.
    """
    path = Path(root) / SECRET
    if not path.exists():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32).hex().encode())
    return path.read_bytes().strip()


def _tools_on_path() -> None:
    # nbgrader runs the `alembic` executable when it creates a gradebook; in a virtual environment that is
    # not activated (e.g. `.venv/bin/tfcourse ...`) it is found only next to this interpreter.
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")


def load_config(root: Path | str) -> Config:
    """Load the course's ``nbgrader_config.py``.

    Raises:
        FileNotFoundError: if ``root`` is not a course directory (no configuration file).
    """
    _tools_on_path()
    root = Path(root).resolve()
    if not (root / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{root} is not a course directory (no {CONFIG_NAME}); run `tfcourse course init {root}`"
        )
    config = PyFileConfigLoader(CONFIG_NAME, path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    return config


def make_api(root: Path | str, quiet: bool = True, *, unsafe: bool = False):
    """An :class:`nbgrader.apps.NbGraderAPI` for the course at ``root``, grading the trusted way.

    Whatever the course's configuration says, autograde executes and scores through
    :class:`~tfcourse.grading.preprocessors.GradeInSandbox` (``unsafe`` drops only the sandbox) and feedback
    hides hidden tests: an old or edited ``nbgrader_config.py`` cannot bring back in-kernel scoring.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    config = load_config(root)
    config.Autograde.autograde_preprocessors = list(AUTOGRADE_PREPROCESSORS)
    config.GenerateFeedback.preprocessors = list(FEEDBACK_PREPROCESSORS)
    config.OverwriteCells.add_missing_cells = True
    if "timeout" not in config.GradeInSandbox:
        config.GradeInSandbox.timeout = int(config.Execute.get("timeout", Limits().timeout))
    config.GradeInSandbox.unsafe = unsafe
    coursedir = CourseDirectory(config=config)
    api = NbGraderAPI(coursedir=coursedir, config=config)
    if quiet:
        api.log.setLevel(logging.ERROR)
    return api


def db_file(root: Path | str) -> Path:
    """The gradebook file named by the course's ``db_url`` (SQLite)."""
    url = load_config(root).CourseDirectory.db_url
    if not str(url).startswith("sqlite:///"):
        raise ValueError(f"the gradebook is not SQLite ({url}); nothing to prepare")
    return Path(str(url).removeprefix("sqlite:///").split("?", 1)[0])


@contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, a session-level advisory lock, so that one process at a time creates the schema.

    nbgrader creates missing tables (and PostgreSQL enum types) on opening a gradebook; two processes doing
    so at once on an empty database collide. Other databases need nothing (SQLite locks the file).
    """
    if not str(url).startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(7312590416)"))  # any fixed key: tfcourse's
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(7312590416)"))
    finally:
        engine.dispose()


def prepare_gradebook(root: Path | str) -> None:
    """Create the gradebook (on a server: its schema) if needed and switch SQLite to write-ahead logging.

    In WAL mode readers never block the writer and the writer never blocks readers, so parallel graders only
    wait for each other's short writes (and the ``timeout`` in the URL makes them wait rather than fail). A
    server such as PostgreSQL needs no tuning: each grader's writes are short transactions on its own rows.

    Raises:
        RuntimeError: if the database cannot be opened (a server that cannot be reached, say).
    """
    from nbgrader.api import Gradebook
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    config = load_config(root)
    url, course_id = config.CourseDirectory.db_url, config.CourseDirectory.course_id
    try:
        with _schema_lock(url):
            retry_locked(lambda: Gradebook(url, course_id).close(), what="creating the gradebook")
    except OperationalError as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        raise RuntimeError(f"cannot open the gradebook {make_url(url).render_as_string()}: {reason}") from None
    try:
        path = db_file(root)
    except ValueError:
        return
    with sqlite3.connect(path, timeout=60) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


TRANSIENT_ERRORS = (
    "database is locked",  # SQLite: another writer holds the lock
    "database table is locked",
    "could not serialize access",  # PostgreSQL 40001: serialization failure
    "deadlock detected",  # PostgreSQL 40P01: the server aborted one of two deadlocked transactions
    "could not obtain lock",  # PostgreSQL 55P03: lock not available (NOWAIT, lock_timeout)
)
"""Messages of lock contention that a retry resolves (the failed transaction was rolled back)."""


def is_locked_error(text: str) -> bool:
    """Whether an error message is lock contention worth retrying: SQLite's lock, PostgreSQL's serialization
    failures and deadlocks (:data:`TRANSIENT_ERRORS`)."""
    return any(message in text for message in TRANSIENT_ERRORS)


def retry_locked(action: Callable[[], T], *, attempts: int = 8, what: str = "gradebook write") -> T:
    """Run ``action``, retrying with random back-off while the gradebook reports lock contention
    (:func:`is_locked_error`); ``action`` opens its own session, so each attempt starts afresh."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not is_locked_error(str(error)):
                raise
            time.sleep(random.uniform(0.1, 0.5) * attempt)
    raise RuntimeError(f"{what}: unreachable")  # pragma: no cover
