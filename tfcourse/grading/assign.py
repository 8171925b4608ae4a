"""Compose a problem set from the exercise bank, release it with nbgrader, and validate both versions.

Validation executes each notebook under the course's limits: the source (with solutions and hidden tests)
must earn every point without an error anywhere, and the release must earn no point while running top to
bottom without errors outside the test cells. A problem set that fails either check is reported, never
silently handed out.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tfcourse.grading.catalogue import Exercise, find, load_catalogue
from tfcourse.grading.course import load_config, make_api, prepare_gradebook
from tfcourse.grading.pool import Job, run_jobs
from tfcourse.grading.runner import read_notebook, run_notebook
from tfcourse.grading.settings import Limits

__all__ = ["Validation", "assign", "compose", "validate"]


@dataclass
class Validation:
    """What validation found: one line per problem (empty when the problem set is sound)."""

    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

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
    with tempfile.TemporaryDirectory() as cwd:
        for extra in Path(path).parent.iterdir():  # data files next to the notebook
            if extra.is_file() and extra.suffix != ".ipynb":
                shutil.copy2(extra, cwd)
        result = run_notebook(nb, cwd, limits)
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


def assign(
    root: Path | str, name: str, exercise_ids: list[str], *, force: bool = False, check: bool = True, workers: int = 2
) -> Validation:
    """Compose ``name`` from the bank, run nbgrader's ``generate_assignment`` and (with ``check``) validate it.

    Raises:
        RuntimeError: if nbgrader cannot generate the release.
    """
    root = Path(root).resolve()
    load_config(root)  # fail early, with the hint, outside a course directory
    compose(root, name, exercise_ids, force=force)
    prepare_gradebook(root)
    api = make_api(root)
    result = api.generate_assignment(name, force=True, create=True)
    if not result.get("success"):
        raise RuntimeError(
            f"nbgrader generate_assignment failed for {name}:\n{result.get('error') or result.get('log')}"
        )
    return validate(root, name, workers=workers) if check else Validation()
