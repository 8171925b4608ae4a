"""The exercise catalogue (``exercises/catalogue.yml``) and its validation against the notebooks.

Each entry names an exercise (its id is also the notebook's file name and nbgrader notebook id), its topic,
chapter, estimated minutes, difficulty, source notebook and graded parts. :func:`load_catalogue` checks
that the parts and points listed match the nbgrader metadata of the notebook's test cells, so the catalogue
can never promise points a notebook does not award.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = [
    "DIFFICULTIES",
    "CatalogueError",
    "Exercise",
    "Part",
    "bank_dir",
    "find",
    "graded_parts",
    "load_catalogue",
    "packaged_bank",
    "student_notebook",
]

DIFFICULTIES = ("introductory", "intermediate", "advanced")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_FIELDS = {"id", "title", "topic", "chapter", "notebook", "minutes", "difficulty", "points", "parts"}


class CatalogueError(ValueError):
    """The catalogue is malformed or disagrees with a notebook; the message lists every problem."""


@dataclass(frozen=True)
class Part:
    """One auto-graded part: an nbgrader test cell."""

    grade_id: str
    points: float


@dataclass(frozen=True)
class Exercise:
    """One catalogue entry; ``notebook`` is an absolute path."""

    id: str
    title: str
    topic: str
    chapter: int
    notebook: Path
    minutes: int
    difficulty: str
    points: float
    parts: tuple[Part, ...]

    @property
    def source(self) -> Path:
        """The percent-format Python file the notebook is built from (see :mod:`~.authoring`)."""
        return self.notebook.with_suffix(".py")


def bank_dir() -> Path:
    """The exercise bank: ``$TFCOURSE_EXERCISES`` if set, else ``exercises/`` next to the package (a checkout),
    else the learner's copy inside an installed wheel (:func:`packaged_bank`)."""
    env = os.environ.get("TFCOURSE_EXERCISES")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "exercises"
    packaged = packaged_bank()
    return packaged if not (checkout / "catalogue.yml").is_file() and packaged.is_dir() else checkout


def packaged_bank() -> Path:
    """``tfcourse/_data/exercises``: the student notebooks and their catalogue, put into the wheel by setup.py."""
    return Path(__file__).resolve().parents[1] / "_data" / "exercises"


def student_notebook(exercise_id: str, bank: Path | None = None) -> Path:
    """The learner's copy of an exercise (no solutions, no hidden tests): ``student/<id>.ipynb`` in the bank."""
    return (bank if bank is not None else bank_dir()) / "student" / f"{exercise_id}.ipynb"


def graded_parts(nb: nbformat.NotebookNode) -> list[Part]:
    """The auto-graded test cells of a notebook, in order, from their nbgrader metadata."""
    parts = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            parts.append(Part(str(meta.get("grade_id")), float(meta.get("points", 0))))
    return parts


def _entry(raw: object, index: int, root: Path, problems: list[str]) -> Exercise | None:
    if not isinstance(raw, dict):
        problems.append(f"entry {index}: expected a mapping, got {type(raw).__name__}")
        return None
    where = f"entry {index} ({raw.get('id', '?')})"
    missing, unknown = _FIELDS - set(raw), set(raw) - _FIELDS
    if missing or unknown:
        problems.append(f"{where}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
        return None
    if not isinstance(raw["id"], str) or not _ID.match(raw["id"]):
        problems.append(f"{where}: id must be lower-case letters, digits and '-', got {raw['id']!r}")
    if raw["difficulty"] not in DIFFICULTIES:
        problems.append(f"{where}: difficulty must be one of {DIFFICULTIES}, got {raw['difficulty']!r}")
    for key in ("chapter", "minutes"):
        if not isinstance(raw[key], int) or raw[key] <= 0:
            problems.append(f"{where}: {key} must be a positive integer, got {raw[key]!r}")
    try:
        parts = tuple(Part(str(p["id"]), float(p["points"])) for p in raw["parts"])
    except (KeyError, TypeError, ValueError):
        problems.append(f"{where}: parts must be a list of {{id, points}}, got {raw['parts']!r}")
        return None
    notebook = (root / str(raw["notebook"])).resolve()
    if notebook.stem != raw["id"]:
        problems.append(f"{where}: the notebook must be named {raw['id']}.ipynb, got {raw['notebook']}")
    return Exercise(
        id=str(raw["id"]),
        title=str(raw["title"]),
        topic=str(raw["topic"]),
        chapter=int(raw["chapter"]) if isinstance(raw["chapter"], int) else 0,
        notebook=notebook,
        minutes=int(raw["minutes"]) if isinstance(raw["minutes"], int) else 0,
        difficulty=str(raw["difficulty"]),
        points=float(raw["points"]),
        parts=parts,
    )


def _check_against_notebook(exercise: Exercise, problems: list[str]) -> None:
    where = exercise.id
    total = sum(p.points for p in exercise.parts)
    if abs(total - exercise.points) > 1e-9:
        problems.append(f"{where}: points is {exercise.points:g} but the parts add up to {total:g}")
    if not exercise.notebook.is_file():
        problems.append(f"{where}: notebook {exercise.notebook} does not exist")
        return
    try:
        nb = nbformat.read(exercise.notebook, as_version=4)
    except Exception as error:  # any parse error makes the entry invalid
        problems.append(f"{where}: cannot read {exercise.notebook}: {error}")
        return
    in_notebook = graded_parts(nb)
    if len(in_notebook) < 1:
        problems.append(f"{where}: {exercise.notebook.name} has no graded test cells")
    if list(exercise.parts) != in_notebook:
        listed = [(p.grade_id, p.points) for p in exercise.parts]
        found = [(p.grade_id, p.points) for p in in_notebook]
        problems.append(f"{where}: catalogue parts {listed} differ from the notebook's test cells {found}")


def load_catalogue(path: Path | str | None = None, *, validate: bool = True) -> list[Exercise]:
    """Read the catalogue; with ``validate``, check every entry against its notebook.

    Args:
        path: the YAML file; defaults to ``bank_dir() / "catalogue.yml"``.
        validate: compare parts and points with each notebook's nbgrader metadata.

    Raises:
        CatalogueError: listing every problem found.
    """
    import yaml  # the grading extra; imported here so that learners' checks never need it

    path = Path(path) if path else bank_dir() / "catalogue.yml"
    if not path.is_file():
        raise CatalogueError(f"no exercise catalogue at {path} (set TFCOURSE_EXERCISES to the exercises folder)")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("exercises"), list):
        raise CatalogueError(f"{path}: expected a mapping with an 'exercises' list")
    problems: list[str] = []
    exercises = [e for i, raw in enumerate(data["exercises"]) if (e := _entry(raw, i, path.parent, problems))]
    ids = [e.id for e in exercises]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"exercise id {duplicate!r} appears more than once")
    if validate:
        for exercise in exercises:
            _check_against_notebook(exercise, problems)
    if problems:
        raise CatalogueError(f"{path}:\n  " + "\n  ".join(problems))
    return exercises


def find(exercises: list[Exercise], exercise_id: str) -> Exercise:
    """The exercise with ``exercise_id``; ``KeyError`` lists the known ids otherwise."""
    for exercise in exercises:
        if exercise.id == exercise_id:
            return exercise
    raise KeyError(f"no exercise {exercise_id!r} in the catalogue; known: {', '.join(e.id for e in exercises)}")
