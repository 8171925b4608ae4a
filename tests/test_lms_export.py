"""The Canvas gradebook-import CSV: totals after late penalties, students matched through a roster."""

from __future__ import annotations

import csv

import pytest

from tfcourse.grading.grade import GradedRow, write_csv
from tfcourse.grading.lms import canvas_csv


@pytest.fixture
def grades(tmp_path):
    rows = [
        GradedRow("ana", "ex1", "test_a", 2.0, 2.0, "passed"),
        GradedRow("ana", "ex1", "test_b", 1.5, 3.0, "2 days late: -1.5", late_days=2, penalty=1.5),
        GradedRow("ben", "ex1", "test_a", 0.0, 2.0, "not submitted"),
        GradedRow("ben", "ex1", "test_b", 0.0, 3.0, "not submitted"),
        GradedRow("cy", "ex1", "test_a", 2.0, 2.0, "passed"),
        GradedRow("cy", "ex1", "test_b", 3.0, 3.0, "passed"),
    ]
    path = tmp_path / "grades-week1.csv"
    write_csv(path, rows)
    return path


def _read(path):
    return list(csv.reader(path.open(encoding="utf-8")))


def test_without_a_roster_ids_go_to_sis_login_id(grades, tmp_path):
    out = tmp_path / "canvas.csv"
    assert canvas_csv(grades, out, column="Week 1") == []
    table = _read(out)
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Week 1"]
    assert table[1] == ["Points Possible", "", "", "", "", "5"]
    assert {r[3]: r[5] for r in table[2:]} == {"ana": "3.5", "ben": "0", "cy": "5"}  # ana: 2 + 1.5 after penalty


def test_a_roster_gives_canvas_identities_and_names_the_unknown(grades, tmp_path):
    roster = tmp_path / "export.csv"
    roster.write_text(
        "Student,ID,SIS User ID,SIS Login ID,Section,Quiz 1 (77)\n"
        "    Points Possible,,,,,10\n"
        '"Doe, Ana",101,S-1,ana,A,9\n'
        '"Roe, Ben",102,ben,ben.roe,B,7\n',
        encoding="utf-8",
    )
    out = tmp_path / "canvas.csv"
    assert canvas_csv(grades, out, column="Week 1 (4242)", roster=roster) == ["cy"]
    rows = {r[0]: r for r in _read(out)[2:]}
    assert rows["Doe, Ana"] == ["Doe, Ana", "101", "S-1", "ana", "A", "3.5"]
    assert rows["Roe, Ben"][1:3] == ["102", "ben"] and rows["Roe, Ben"][5] == "0"  # matched by SIS User ID
    assert rows["cy"][3] == "cy"


def test_a_file_that_is_not_a_canvas_export_is_refused(grades, tmp_path):
    bad = tmp_path / "roster.csv"
    bad.write_text("name,email\nana,a@x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a Canvas gradebook export"):
        canvas_csv(grades, tmp_path / "out.csv", column="W1", roster=bad)


def test_the_command_writes_the_file_next_to_the_grades(grades, capsys):
    from tfcourse.cli import main

    assert main(["export", "canvas", str(grades.parent), "week1"]) == 0
    table = _read(grades.parent / "canvas-week1.csv")
    assert table[0][-1] == "week1" and len(table) == 5
    assert main(["export", "canvas", str(grades.parent), "missing"]) == 2
    assert "run `tfcourse grade" in capsys.readouterr().err
