"""Grades for a learning-management system: a Canvas gradebook-import CSV from ``grades-NAME.csv``.

Canvas imports a CSV whose first columns identify the student (``Student``, ``ID``, ``SIS User ID``,
``SIS Login ID``, ``Section``) and whose further columns are assignments, named ``Title`` for a new one or
``Title (canvas id)`` for an existing one; an optional second row, ``Points Possible``, gives each
assignment's maximum. :func:`canvas_csv` writes one assignment column: each student's total after the late
penalty, as ``grades-NAME.csv`` states it.

Students are matched to Canvas by a roster, the CSV that Canvas's own gradebook export gives (the same
five columns): a course student id that equals a row's ``SIS Login ID``, ``SIS User ID`` or ``ID`` takes
that row's identity. Without a roster, the course's student id goes into ``SIS Login ID``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from tfcourse.grading.grade import read_csv

__all__ = ["CANVAS_IDENTITY", "canvas_csv", "read_roster", "totals"]

CANVAS_IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


def totals(rows: Iterable) -> dict[str, tuple[float, float]]:
    """``{student: (score after penalty, maximum)}`` summed over an assignment's parts."""
    out: dict[str, list[float]] = {}
    for row in rows:
        total = out.setdefault(row.student, [0.0, 0.0])
        total[0] += row.score
        total[1] += row.max_score
    return {student: (score, maximum) for student, (score, maximum) in out.items()}


def read_roster(path: Path | str) -> list[dict[str, str]]:
    """The identity columns of a Canvas gradebook export (its ``Points Possible`` row skipped).

    Raises:
        ValueError: naming the file, when a Canvas identity column is missing.
    """
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CANVAS_IDENTITY if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a Canvas gradebook export (no column {', '.join(missing)})")
        return [
            {c: (r.get(c) or "").strip() for c in CANVAS_IDENTITY}
            for r in reader
            if "points possible" not in (r.get("Student") or "").strip().lower()
        ]


def _match(student: str, roster: Sequence[dict[str, str]]) -> dict[str, str] | None:
    for key in ("SIS Login ID", "SIS User ID", "ID"):
        for person in roster:
            if person[key] and person[key] == student:
                return person
    return None


def canvas_csv(
    grades: Path | str,
    out: Path | str,
    *,
    column: str,
    roster: Path | str | None = None,
) -> list[str]:
    """Write a Canvas gradebook-import CSV with one assignment ``column`` from a grades CSV.

    Args:
        grades: ``grades-NAME.csv`` of ``tfcourse grade``.
        out: the file to write.
        column: the assignment's column header: its title, or ``"Title (canvas id)"`` to fill an existing one.
        roster: a Canvas gradebook export to take the students' Canvas identities from.

    Returns:
        The course's students that the roster does not know (written with their id as SIS Login ID).
    """
    scores = totals(read_csv(grades))
    people = read_roster(roster) if roster else []
    unmatched = []
    maximum = max((m for _, m in scores.values()), default=0.0)
    with Path(out).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CANVAS_IDENTITY, column])
        writer.writerow(["Points Possible", "", "", "", "", f"{maximum:g}"])
        for student, (score, _) in sorted(scores.items()):
            person = _match(student, people)
            if person is None:
                if roster:
                    unmatched.append(student)
                person = {"Student": student, "ID": "", "SIS User ID": "", "SIS Login ID": student, "Section": ""}
            writer.writerow([*(person[c] for c in CANVAS_IDENTITY), f"{score:g}"])
    return unmatched
