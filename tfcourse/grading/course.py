"""An nbgrader course directory set up for PyTorch notebooks, and access to it through nbgrader's API."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from tfcourse.grading.settings import (
    AUTOGRADE_PREPROCESSORS,
    CODE_STUB,
    CONFIG_TEMPLATE,
    FEEDBACK_PREPROCESSORS,
    WARNING_PATTERN,
    Limits,
    kernel_arguments,
)

__all__ = [
    "CONFIG_NAME",
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
    root: Path | str, *, course_id: str = "tfcourse", limits: Limits | None = None, force: bool = False
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

    Returns:
        The path of the configuration file.

    Raises:
        FileExistsError: if the configuration exists and ``force`` is False.
    """
    limits = limits or Limits()
    root = Path(root).resolve()
    config = root / CONFIG_NAME
    if config.exists() and not force:
        raise FileExistsError(f"{config} already exists; pass force=True (--force) to overwrite it")
    for folder in ("source", "release", "submitted", "autograded", "feedback"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    config.write_text(
        CONFIG_TEMPLATE.format(
            course_id=course_id,
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


def prepare_gradebook(root: Path | str) -> None:
    """Create the gradebook if needed and switch SQLite to write-ahead logging.

    In WAL mode readers never block the writer and the writer never blocks readers, so parallel graders only
    wait for each other's short writes (and the ``timeout`` in the URL makes them wait rather than fail).
    """
    from nbgrader.api import Gradebook

    config = load_config(root)
    with Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id):
        pass
    try:
        path = db_file(root)
    except ValueError:
        return
    with sqlite3.connect(path, timeout=60) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def is_locked_error(text: str) -> bool:
    """Whether an error message is SQLite's lock contention (worth retrying)."""
    return "database is locked" in text or "database table is locked" in text


def retry_locked(action: Callable[[], T], *, attempts: int = 8, what: str = "gradebook write") -> T:
    """Run ``action``, retrying with random back-off while SQLite reports "database is locked"."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not is_locked_error(str(error)):
                raise
            time.sleep(random.uniform(0.1, 0.5) * attempt)
    raise RuntimeError(f"{what}: unreachable")  # pragma: no cover
