"""Compose a problem set from the exercise bank, release it with nbgrader, and validate both versions.

Validation executes each notebook under the course's limits: the source (with solutions and hidden tests)
must earn every point without an error anywhere, and the release must earn no point while running top to
bottom without errors outside the test cells. A problem set that fails either check is reported, never
silently handed out.

An assignment may have a due date and a late-penalty rule (:class:`LateRule`). The due date goes into
nbgrader's gradebook (the assignment's ``duedate``, naive UTC as nbgrader stores it); both are written to
``assignments/NAME.json`` in the course folder, which :func:`tfcourse.grading.grade.grade` reads to apply the
penalty in ``grades-NAME.csv``::

    {
      "assignment": "week1",
      "exercises": ["ch01-self-attention", "ch02-scaling"],
      "duedate": "2026-12-10T23:59:00+00:00",
      "late_penalty": 0.1,
      "rule": "late_penalty: fraction of a notebook's points lost per started day (24 h) after duedate, ..."
    }

``duedate`` is ISO 8601 in UTC (``null``: no due date); ``late_penalty`` is a fraction in [0, 1]. The
gradebook's scores stay the raw ones (nbgrader's own late penalty is ``none``); only the CSV applies the rule.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tfcourse.grading.catalogue import Exercise, find, load_catalogue
from tfcourse.grading.course import load_config, make_api, prepare_gradebook, retry_locked
from tfcourse.grading.pool import Job, run_jobs
from tfcourse.grading.runner import read_notebook, run_notebook
from tfcourse.grading.settings import Limits

__all__ = [
    "LateRule",
    "Validation",
    "assign",
    "compose",
    "late_rule",
    "parse_duedate",
    "read_rule",
    "rule_path",
    "validate",
    "write_rule",
]

RULE_TEXT = (
    "late_penalty: fraction of a notebook's points lost per started day (24 h) after duedate, capped at the "
    "notebook's score; the submission time is nbgrader's timestamp.txt (none: on time); duedate is UTC"
)


@dataclass(frozen=True)
class LateRule:
    """An assignment's due date (naive UTC, as nbgrader stores it; None: none) and late penalty.

    ``penalty`` is the fraction of a notebook's points lost per started day late; the loss is capped at the
    notebook's score, so a score never goes negative.
    """

    duedate: datetime | None = None
    penalty: float = 0.0

    def late_days(self, submitted: datetime | None) -> int:
        """Started days (24 h) between the due date and ``submitted`` (naive UTC); 0 when on time or unknown."""
        if self.duedate is None or submitted is None:
            return 0
        seconds = (submitted - self.duedate).total_seconds()
        return math.ceil(seconds / 86400) if seconds > 0 else 0

    def describe(self) -> str:
        """One line for the instructor, e.g. ``due 2026-12-10 23:59:00 UTC; late penalty 10% of ...``."""
        if self.duedate is None:
            return "no due date"
        due = f"due {self.duedate:%Y-%m-%d %H:%M:%S} UTC"
        if not self.penalty:
            return f"{due}; no late penalty"
        return f"{due}; late penalty {self.penalty * 100:g}% of a notebook's points per started day, never below 0"


def parse_duedate(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 date and time (timezone optional, UTC if none) as naive UTC.

    Raises:
        ValueError: naming ``--duedate``, for anything else (a date without a time is refused as ambiguous).
    """
    from dateutil.parser import isoparse

    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        example = "e.g. 2026-12-10T23:59:00 (UTC) or 2026-12-10T23:59:00+01:00"
        if "T" not in text.upper():
            raise ValueError(f"--duedate: {text!r} needs a date and a time in ISO 8601, {example}")
        try:
            moment = isoparse(text)
        except (ValueError, OverflowError) as error:
            raise ValueError(f"--duedate: {text!r} is not an ISO 8601 date and time ({error}); {example}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def late_rule(duedate: str | datetime | None = None, late_penalty: float = 0.0) -> LateRule:
    """Check ``--duedate`` and ``--late-penalty`` and make the rule.

    Raises:
        ValueError: naming the option, for a bad date, a penalty outside [0, 1], or a penalty without a date.
    """
    due = parse_duedate(duedate)
    try:
        penalty = float(late_penalty)
    except (TypeError, ValueError):
        raise ValueError(f"--late-penalty: {late_penalty!r} is not a number") from None
    if not 0 <= penalty <= 1:  # NaN fails this too
        raise ValueError(
            f"--late-penalty: {late_penalty!r} must be a fraction between 0 and 1 "
            "(of a notebook's points lost per started day late), e.g. 0.1"
        )
    if penalty and due is None:
        raise ValueError("--late-penalty needs --duedate: a late penalty counts days after the due date")
    return LateRule(due, penalty)


def rule_path(root: Path | str, name: str) -> Path:
    """``assignments/NAME.json`` in the course folder: the assignment's due date and late penalty."""
    return Path(root) / "assignments" / f"{name}.json"


def write_rule(root: Path | str, name: str, rule: LateRule, exercises: list[str] | None = None) -> Path:
    """Write :func:`rule_path` (atomically: a temporary file renamed over the old one)."""
    path = rule_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    due = rule.duedate.replace(tzinfo=timezone.utc).isoformat() if rule.duedate is not None else None
    record = {
        "assignment": name,
        "exercises": list(exercises or []),
        "duedate": due,
        "late_penalty": rule.penalty,
        "rule": RULE_TEXT,
    }
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def read_rule(root: Path | str, name: str) -> LateRule:
    """The rule in :func:`rule_path`; no file means no due date (assignments made before due dates existed).

    Raises:
        ValueError: if the file exists but does not hold a valid rule.
    """
    path = rule_path(root, name)
    if not path.is_file():
        return LateRule()
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return late_rule(record.get("duedate"), record.get("late_penalty", 0.0))
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{path} does not hold a valid due date and late penalty: {error}") from None


@dataclass
class Validation:
    """What validation found: one line per problem (empty when the problem set is sound)."""

    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    rule: LateRule = field(default_factory=LateRule)

    @property
    def ok(self) -> bool:
        return not self.problems


def compose(root: Path | str, name: str, exercise_ids: list[str], *, force: bool = False) -> list[Exercise]:
    """Copy the chosen exercises' source notebooks into ``root/source/name/``.

    Only the ``.ipynb`` files are copied: the percent-format ``.py`` sources hold the solutions in plain text.

    Raises:
        KeyError: for an unknown exercise id.
        FileExistsError: if the assignment's source folder is not empty and ``force`` is False.
    """
    if not exercise_ids:
        raise ValueError("choose at least one exercise (--exercises ID ...)")
    catalogue = load_catalogue()
    chosen = [find(catalogue, exercise_id) for exercise_id in dict.fromkeys(exercise_ids)]
    folder = Path(root) / "source" / name
    if folder.exists() and any(folder.iterdir()):
        if not force:
            raise FileExistsError(f"{folder} already holds an assignment; pass --force to replace it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for exercise in chosen:
        shutil.copy2(exercise.notebook, folder / exercise.notebook.name)
    return chosen


def _limits(root: Path | str) -> Limits:
    execute = load_config(root).Execute
    memory = Limits().memory_mb
    for argument in execute.get("extra_arguments", []):
        if "RLIMIT_AS" in argument:
            memory = int(argument.split("(")[-1].split(",")[0]) // (1024 * 1024)
    return Limits(
        timeout=int(execute.get("timeout", Limits().timeout)),
        memory_mb=memory,
        startup_timeout=int(execute.get("startup_timeout", Limits().startup_timeout)),
    )


def _validate_one(path: str, released: bool, limits: Limits) -> list[str]:
    nb = read_notebook(path)
    label = f"{'release' if released else 'source'} {Path(path).name}"
    result = run_notebook(nb, limits)  # in the grading sandbox where there is one, as grading will
    problems = [f"{label}: error outside the test cells, {error}" for error in result.other_errors]
    if not result.parts:
        problems.append(f"{label}: no graded test cells")
    for part in result.parts:
        if released and part.score > 0:
            problems.append(f"{label}: {part.grade_id} gives {part.score:g} points to the unanswered stub")
        if not released and part.score < part.max_score:
            problems.append(f"{label}: {part.grade_id} fails with the solution: {part.reason}")
    return problems


def validate(root: Path | str, name: str, *, workers: int = 2) -> Validation:
    """Execute the source and released notebooks of ``name`` and check their scores (see module docstring)."""
    root = Path(root)
    limits = _limits(root)
    jobs = []
    for kind in ("source", "release"):
        for path in sorted((root / kind / name).glob("*.ipynb")):
            log = str(root / "logs" / f"assign-{name}" / f"{kind}-{path.stem}.log")
            jobs.append(Job(f"{kind}/{path.name}", _validate_one, (str(path), kind == "release", limits), log=log))
    if not jobs:
        return Validation([f"no notebooks in {root / 'source' / name}"])
    validation = Validation(checked=[job.key for job in jobs])
    for outcome in run_jobs(jobs, workers=workers).values():
        if outcome.ok:
            validation.problems.extend(outcome.value)
        else:
            validation.problems.append(
                f"{outcome.key}: validation could not run: {(outcome.error or '').strip()[-500:]}"
            )
    return validation


def _record_duedate(root: Path, name: str, duedate: datetime | None) -> None:
    from nbgrader.api import Gradebook

    config = load_config(root)

    def action() -> None:
        with Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id) as gb:
            gb.update_or_create_assignment(name, duedate=duedate)

    retry_locked(action)


def assign(
    root: Path | str,
    name: str,
    exercise_ids: list[str],
    *,
    force: bool = False,
    check: bool = True,
    workers: int = 2,
    duedate: str | datetime | None = None,
    late_penalty: float = 0.0,
) -> Validation:
    """Compose ``name`` from the bank, run nbgrader's ``generate_assignment`` and (with ``check``) validate it.

    Args:
        duedate: ISO 8601 date and time (UTC when it has no timezone), recorded in the gradebook and in
            ``assignments/NAME.json``; None: no due date (an earlier one is cleared).
        late_penalty: fraction of a notebook's points lost per started day late (0: none); needs ``duedate``.

    Raises:
        ValueError: for a bad ``duedate`` or ``late_penalty`` (before anything is written).
        RuntimeError: if nbgrader cannot generate the release.
    """
    rule = late_rule(duedate, late_penalty)
    root = Path(root).resolve()
    load_config(root)  # fail early, with the hint, outside a course directory
    chosen = compose(root, name, exercise_ids, force=force)
    prepare_gradebook(root)
    api = make_api(root)
    result = api.generate_assignment(name, force=True, create=True)
    if not result.get("success"):
        raise RuntimeError(
            f"nbgrader generate_assignment failed for {name}:\n{result.get('error') or result.get('log')}"
        )
    _record_duedate(root, name, rule.duedate)
    write_rule(root, name, rule, [exercise.id for exercise in chosen])
    validation = validate(root, name, workers=workers) if check else Validation()
    validation.rule = rule
    return validation
