"""The instructor's workflow around grading: CSV merge and atomic writes, nbgrader's real error in the
reasons, due dates and late penalties, and skipping unchanged submissions.

The small functions are tested directly; one test (marked ``grading``, about 15 s) runs it all on a course
with one tiny exercise and three students.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import pytest

from tests import grading_cases as cases
from tfcourse.grading.assign import LateRule, late_rule, parse_duedate, read_rule, rule_path, write_rule
from tfcourse.grading.grade import (
    CSV_FIELDS,
    GradedRow,
    apply_late_penalty,
    fingerprint,
    grader_version,
    manifest_path,
    merge_rows,
    read_csv,
    reusable_rows,
    submission_time,
    write_csv,
    write_manifest,
)
from tfcourse.grading.worker import Row, _failure

NAME = "ps1"
E1 = "ch01-self-attention"
DUE = datetime(2026, 12, 10, 23, 59)


def rows_of(student: str, scores: list[float], maxima: list[float], notebook: str = "nb") -> list[Row]:
    return [
        Row(student, notebook, f"test_{i}", score, maximum, "passed" if score >= maximum else "wrong")
        for i, (score, maximum) in enumerate(zip(scores, maxima, strict=True))
    ]


# --- 1. the CSV: merged, atomic -------------------------------------------------------------------------------


def test_merge_keeps_other_students_and_replaces_the_regraded():
    previous = rows_of("carol", [1, 1], [1, 1]) + rows_of("alice", [2, 0], [2, 2]) + rows_of("bob", [0, 0], [2, 2])
    new = rows_of("alice", [2, 2], [2, 2])
    merged = merge_rows(previous, new, ["alice"])
    assert [(r.student, r.grade_id, r.score) for r in merged] == [
        ("alice", "test_0", 2),
        ("alice", "test_1", 2),
        ("bob", "test_0", 0),
        ("bob", "test_1", 0),
        ("carol", "test_0", 1),
        ("carol", "test_1", 1),
    ]
    # a student graded now for the first time is added; one replaced with no rows disappears
    assert {r.student for r in merge_rows(previous, rows_of("dan", [1], [1]), ["dan", "bob"])} == {
        "alice",
        "carol",
        "dan",
    }


def test_csv_round_trip_new_columns_last_and_old_csvs_still_read(tmp_path):
    path = tmp_path / "grades.csv"
    rows = [GradedRow("alice", "nb", "test_a", 1.25, 2, "passed; 1 day late: -0.75", 1, 0.75)]
    write_csv(path, [*rows, Row("bob", "nb", "test_a", 0, 2, 'a "quoted", reason')])
    with path.open() as handle:
        assert tuple(next(csv.reader(handle))) == CSV_FIELDS
    assert CSV_FIELDS[:5] == ("student", "part", "score", "max", "reason")
    back = read_csv(path)
    assert back[0] == rows[0] and back[0].raw_score == 2
    assert back[1] == GradedRow("bob", "nb", "test_a", 0, 2, 'a "quoted", reason', 0, 0.0)

    old = tmp_path / "old.csv"  # written before late_days and penalty existed
    old.write_text("student,part,score,max,reason\nalice,nb:test_a,2,2,passed\n")
    assert read_csv(old) == [GradedRow("alice", "nb", "test_a", 2, 2, "passed", 0, 0.0)]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,points\nalice,3\n")
    with pytest.raises(ValueError, match="not a grades CSV"):
        read_csv(bad)


def test_an_interrupted_write_leaves_the_previous_csv_whole(tmp_path):
    path = tmp_path / "grades-ps1.csv"
    write_csv(path, rows_of("alice", [2, 2], [2, 2]))
    before = path.read_bytes()

    class Interrupted:  # a row whose reason cannot be produced: the write stops half-way
        student, notebook, grade_id, score, max_score, part = "bob", "nb", "test_0", 0.0, 2.0, "nb:test_0"

        @property
        def reason(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_csv(path, [*rows_of("bob", [1] * 50, [2] * 50), Interrupted()])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


# --- 2. nbgrader's real error ---------------------------------------------------------------------------------

SITE = "/srv/venv/lib/python3.11/site-packages"
# What NbGraderAPI.autograde returned for a submission with a test cell whose nbgrader metadata lacks a
# grade_id (provoked for real with nbgrader 0.9.6; frames trimmed, formatting kept: tornado's log formatter
# indents every line of a record after the first by four spaces).
KEY_ERROR = {
    "success": False,
    "error": (
        "Traceback (most recent call last):\n"
        f'  File "{SITE}/nbgrader/utils.py", line 542, in capture_log\n'
        "    app.start()\n"
        f'  File "{SITE}/nbgrader/converters/base.py", line 468, in convert_notebooks\n'
        "    raise NbGraderException(msg)\n"
        "nbgrader.converters.base.NbGraderException: Please see the the above traceback for details on the "
        "specific errors on the above failures.\n"
    ),
    "log": (
        "[ERROR] There was an error processing assignment: /course/submitted/broken/ps1\n"
        "[ERROR] Traceback (most recent call last):\n"
        f'      File "{SITE}/nbgrader/converters/base.py", line 390, in convert_notebooks\n'
        "        self.convert_single_notebook(notebook_filename)\n"
        f'      File "{SITE}/nbconvert/exporters/exporter.py", line 353, in _preprocess\n'
        "        nbc, resc = preprocessor(nbc, resc)\n"
        "                    ^^^^^^^^^^^^^^^^^^^^^^^\n"
        f'      File "{SITE}/nbgrader/preprocessors/deduplicateids.py", line 33, in preprocess_cell\n'
        "        grade_id = cell.metadata.nbgrader['grade_id']\n"
        "                   ~~~~~~~~~~~~~~~~~~~~~~^^^^^^^^^^^^\n"
        "    KeyError: 'grade_id'\n"
        "    \n"
        "[ERROR] There was an error processing assignment 'ps1' for student 'broken'\n"
        "[ERROR] Please see the the above traceback for details on the specific errors on the above failures.\n"
    ),
}


def test_failure_names_nbgraders_exception_not_the_pointer_to_it():
    reason = _failure(KEY_ERROR)
    assert reason == "KeyError: 'grade_id' (at nbgrader/preprocessors/deduplicateids.py:33)"


def test_failure_prefers_the_first_cause_to_nbgraders_wrappers():
    # CheckCellMetadata logs the validation error, then raises a generic one that convert_notebooks logs too.
    log = (
        "[ERROR] Traceback (most recent call last):\n"
        f'      File "{SITE}/nbgrader/preprocessors/checkcellmetadata.py", line 13, in preprocess\n'
        "        MetadataValidator().validate_nb(nb)\n"
        f'      File "{SITE}/nbgrader/nbgraderformat/v3.py", line 110, in validate_nb\n'
        '        raise ValidationError("Duplicate grade id: {}".format(grade_id))\n'
        "    nbgrader.nbgraderformat.common.ValidationError: Duplicate grade id: test_a\n"
        "    \n"
        "[ERROR] Notebook failed to validate; the nbgrader metadata may be corrupted.\n"
        "[ERROR] There was an error processing assignment: /course/submitted/a/ps1\n"
        "[ERROR] Traceback (most recent call last):\n"
        f'      File "{SITE}/nbgrader/preprocessors/checkcellmetadata.py", line 18, in preprocess\n'
        "        raise ValidationError(msg)\n"
        "    nbgrader.nbgraderformat.common.ValidationError: Notebook failed to validate; the nbgrader metadata "
        "may be corrupted.\n"
        "    \n"
        "[ERROR] Please see the the above traceback for details on the specific errors on the above failures.\n"
    )
    reason = _failure({"success": False, "error": KEY_ERROR["error"], "log": log})
    assert reason == "ValidationError: Duplicate grade id: test_a (at nbgrader/nbgraderformat/v3.py:110)"

    # the database's own error, not the advice nbgrader raises after it
    locked = {
        "success": False,
        "error": 'Traceback (most recent call last):\n  File "x.py", line 1, in f\n    g()\n'
        "nbgrader.converters.base.NbGraderException: There was an error accessing the nbgrader database.\n",
        "log": "[ERROR] Traceback (most recent call last):\n"
        f'      File "{SITE}/sqlalchemy/engine/default.py", line 941, in do_execute\n'
        "        cursor.execute(statement, parameters)\n"
        "    sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked\n"
        "    [SQL: UPDATE grade SET auto_score=?]\n"
        "    \n"
        "[ERROR] There was an error accessing the nbgrader database.\n",
    }
    assert _failure(locked).startswith("OperationalError: (sqlite3.OperationalError) database is locked [SQL:")


def test_failure_without_a_traceback_uses_the_error_messages():
    unresponsive = {
        "success": False,
        "error": KEY_ERROR["error"],
        "log": "[ERROR] While processing assignment /course/submitted/a/ps1, the kernel became unresponsive and "
        "we could not interrupt it.\n"
        "[ERROR] There was an error processing assignment 'ps1' for student 'a'\n"
        "[ERROR] Please see the the above traceback for details on the specific errors on the above failures.\n",
    }
    assert _failure(unresponsive).startswith("While processing assignment /course/submitted/a/ps1, the kernel")
    only_error = {
        "success": False,
        "error": 'Traceback (most recent call last):\n  File "a.py", line 3, in f\n'
        "    g()\nnbgrader.converters.base.NbGraderException: No assignment with ID 'ps9' exists\n",
    }
    assert _failure(only_error) == "NbGraderException: No assignment with ID 'ps9' exists (at a.py:3)"
    assert _failure({"success": False}) == "unknown error"


# --- 3. due dates and late penalties --------------------------------------------------------------------------


def test_duedates_are_iso_8601_in_utc():
    assert parse_duedate("2026-12-10T23:59:00") == DUE
    assert parse_duedate("2026-12-10T23:59Z") == DUE
    assert parse_duedate("2026-12-11T00:59:00+01:00") == DUE
    assert parse_duedate(None) is None
    for bad in ("2026-12-10", "2026-13-10T10:00:00", "next friday", "2026-12-10T25:00"):
        with pytest.raises(ValueError, match="^--duedate: "):
            parse_duedate(bad)


def test_late_penalty_is_checked():
    assert late_rule("2026-12-10T23:59:00", 0.1) == LateRule(DUE, 0.1)
    assert late_rule() == LateRule(None, 0.0)
    for bad in (-0.1, 1.5, math.nan, "lots"):
        with pytest.raises(ValueError, match="^--late-penalty: "):
            late_rule("2026-12-10T23:59:00", bad)
    with pytest.raises(ValueError, match="--late-penalty needs --duedate"):
        late_rule(None, 0.2)


def test_late_days_count_started_days():
    rule = LateRule(DUE, 0.1)
    second, day = timedelta(seconds=1), timedelta(days=1)
    assert [rule.late_days(t) for t in (DUE - day, DUE, DUE + second, DUE + day, DUE + day + second)] == [0, 0, 1, 1, 2]
    assert rule.late_days(None) == 0 and LateRule().late_days(DUE + 9 * day) == 0


def test_penalty_takes_a_share_of_each_notebook_never_below_zero():
    rows = rows_of("a", [2, 2, 0], [2, 2, 2], "n1") + rows_of("a", [1], [1], "n2")
    one = apply_late_penalty(rows, 1, 0.25)  # n1 loses 0.25 * 6 = 1.5 of its 4 points, n2 0.25 of 1
    assert [(r.score, r.penalty, r.late_days) for r in one] == [
        (1.25, 0.75, 1),
        (1.25, 0.75, 1),
        (0, 0, 1),
        (0.75, 0.25, 1),
    ]
    assert one[0].reason == "passed; 1 day late: -0.75" and one[2].reason == "wrong"
    three = apply_late_penalty(rows, 3, 0.25)  # n1: 4.5 > 4, capped at the score; n2: 0.75 of 1
    assert [r.score for r in three] == [0, 0, 0, 0.25] and [r.penalty for r in three] == [2, 2, 0, 0.75]
    four = apply_late_penalty(rows, 4, 0.25)
    assert [r.score for r in four] == [0, 0, 0, 0] and [r.raw_score for r in four] == [2, 2, 0, 1]
    on_time = apply_late_penalty(rows, 0, 0.25, note="no timestamp.txt: counted as on time")
    assert [r.score for r in on_time] == [2, 2, 0, 1] and {r.penalty for r in on_time} == {0}
    assert on_time[0].reason == "passed; no timestamp.txt: counted as on time"
    free = apply_late_penalty(rows, 4, 0.0)
    assert [r.score for r in free] == [2, 2, 0, 1] and {r.late_days for r in free} == {4}


def test_submission_time_reads_nbgraders_timestamp(tmp_path):
    folder = tmp_path / "submitted" / "alice" / NAME
    folder.mkdir(parents=True)
    assert submission_time(tmp_path, NAME, "alice") == (None, "no timestamp.txt: counted as on time")
    (folder / "timestamp.txt").write_text("2026-12-12 10:00:00.000000 UTC\n")
    assert submission_time(tmp_path, NAME, "alice") == (datetime(2026, 12, 12, 10), None)
    (folder / "timestamp.txt").write_text("2026-12-12T11:00:00+01:00")
    assert submission_time(tmp_path, NAME, "alice") == (datetime(2026, 12, 12, 10), None)
    (folder / "timestamp.txt").write_text("yesterday-ish")
    when, note = submission_time(tmp_path, NAME, "alice")
    assert when is None and note.startswith("timestamp.txt unreadable") and note.endswith("counted as on time")


def test_rule_file(tmp_path):
    assert read_rule(tmp_path, NAME) == LateRule()
    write_rule(tmp_path, NAME, LateRule(DUE, 0.1), [E1])
    record = json.loads(rule_path(tmp_path, NAME).read_text())
    assert record["duedate"] == "2026-12-10T23:59:00+00:00" and record["late_penalty"] == 0.1
    assert record["exercises"] == [E1] and rule_path(tmp_path, NAME) == tmp_path / "assignments" / "ps1.json"
    assert read_rule(tmp_path, NAME) == LateRule(DUE, 0.1)
    rule_path(tmp_path, NAME).write_text('{"duedate": "soon"}')
    with pytest.raises(ValueError, match="ps1.json does not hold a valid"):
        read_rule(tmp_path, NAME)


def test_assign_options_fail_clearly_before_anything_is_written(tmp_path, capsys):
    from tfcourse.cli import main

    course = tmp_path / "course"
    base = ["assign", str(course), NAME, "--exercises", E1]
    assert main([*base, "--duedate", "10/12/2026"]) == 2
    assert "--duedate: '10/12/2026' needs a date and a time in ISO 8601" in capsys.readouterr().err
    assert main([*base, "--duedate", "2026-12-10T23:59:00", "--late-penalty", "2"]) == 2
    assert "--late-penalty: 2.0 must be a fraction between 0 and 1" in capsys.readouterr().err
    assert main([*base, "--late-penalty", "0.1"]) == 2
    assert "--late-penalty needs --duedate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--late-penalty", "a lot"])
    assert "argument --late-penalty" in capsys.readouterr().err
    assert not course.exists()


# --- 4. skipping unchanged submissions ------------------------------------------------------------------------


def test_manifest_reuses_rows_only_when_nothing_changed(tmp_path):
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\n")
    (tmp_path / "source" / NAME).mkdir(parents=True)
    (tmp_path / "source" / NAME / "nb.ipynb").write_text("source")
    (tmp_path / "submitted" / "al" / NAME).mkdir(parents=True)
    submitted = tmp_path / "submitted" / "al" / NAME / "nb.ipynb"
    submitted.write_text("answer")
    path = manifest_path(tmp_path, NAME, "al")
    assert path == tmp_path / "logs" / "grade-ps1" / "al.json"
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=True) is None  # never graded

    rows = rows_of("al", [1, 0], [1, 1])
    write_manifest(path, fingerprint(tmp_path, NAME, "al"), [asdict(r) for r in rows], feedback=True)
    record = json.loads(path.read_text())
    assert record["grader"] == grader_version() and record["rows"] == [asdict(r) for r in rows]
    assert record["submitted"] == {"nb.ipynb": hashlib.sha256(b"answer").hexdigest()}
    assert record["source"] == {"nb.ipynb": hashlib.sha256(b"source").hexdigest()}
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=True) == rows
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=False) == rows

    changed = fingerprint(tmp_path, NAME, "al")
    assert reusable_rows(path, {**changed, "grader": "tfcourse 9.9"}, feedback=True) is None
    submitted.write_text("a new answer")
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=True) is None
    submitted.write_text("answer")
    (tmp_path / "source" / NAME / "nb.ipynb").write_text("fixed source")
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=True) is None
    (tmp_path / "source" / NAME / "nb.ipynb").write_text("source")
    (tmp_path / "submitted" / "al" / NAME / "extra.ipynb").write_text("{}")  # a notebook added
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=True) is None
    (tmp_path / "submitted" / "al" / NAME / "extra.ipynb").unlink()
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=True) == rows

    write_manifest(path, fingerprint(tmp_path, NAME, "al"), [asdict(r) for r in rows], feedback=False)
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=True) is None  # feedback now wanted
    path.write_text("{not json")
    assert reusable_rows(path, fingerprint(tmp_path, NAME, "al"), feedback=False) is None


# --- all of it on a real course -------------------------------------------------------------------------------


def read_rows(course: Path) -> dict[tuple[str, str], dict]:
    with (course / f"grades-{NAME}.csv").open() as handle:
        return {(r["student"], r["part"].split(":")[1]): r for r in csv.DictReader(handle)}


@pytest.mark.grading
def test_workflow_on_a_course(tmp_path, capsys):
    from nbgrader.api import Gradebook

    from tfcourse.cli import main
    from tfcourse.grading.assign import assign
    from tfcourse.grading.course import init_course, load_config
    from tfcourse.grading.grade import grade
    from tfcourse.grading.settings import Limits

    course = tmp_path / "course"
    init_course(course, limits=Limits(timeout=10))
    validation = assign(course, NAME, [E1], check=False, duedate="2026-12-11T00:59:00+01:00", late_penalty=0.25)
    assert validation.rule == LateRule(DUE, 0.25) and read_rule(course, NAME) == LateRule(DUE, 0.25)
    config = load_config(course)
    with Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id) as gb:
        assert gb.find_assignment(NAME).duedate == DUE

    release = nbformat.read(str(course / "release" / NAME / f"{E1}.ipynb"), as_version=4)
    source = nbformat.read(str(course / "source" / NAME / f"{E1}.ipynb"), as_version=4)
    solved = cases.solved(release, source)
    cases.write(solved, course, "alice", NAME, E1)  # all right, 2 started days late (34 h)
    (course / "submitted" / "alice" / NAME / "timestamp.txt").write_text("2026-12-12 10:00:00.000000 UTC")
    cases.write(release, course, "bob", NAME, E1)  # nothing done, no timestamp.txt
    broken = copy.deepcopy(solved)  # a test cell without a grade_id: nbgrader itself fails
    broken.cells.append(nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade": True, "solution": False}}))
    broken.cells[-1].metadata.nbgrader.update(locked=False, schema_version=3)
    cases.write(broken, course, "broken", NAME, E1)

    # first grading: penalties, nbgrader's error, manifests
    assert main(["grade", str(course), NAME, "--quiet"]) == 0
    assert "graded 3, skipped 0 unchanged" in capsys.readouterr().out
    rows = read_rows(course)
    with (course / f"grades-{NAME}.csv").open() as handle:
        assert tuple(next(csv.reader(handle))) == CSV_FIELDS
    alice = {
        part: (float(r["score"]), float(r["penalty"]), int(r["late_days"]))
        for (s, part), r in rows.items()
        if s == "alice"
    }
    assert alice == {  # 2 days x 0.25 x 6 points = 3 of 6, each part losing half its score
        "test_attention_weights": (1.0, 1.0, 2),
        "test_self_attention": (1.5, 1.5, 2),
        "test_free_scores": (0.5, 0.5, 2),
    }
    assert rows["alice", "test_self_attention"]["reason"] == "passed; 2 days late: -1.5"
    assert rows["bob", "test_free_scores"]["reason"].endswith("; no timestamp.txt: counted as on time")
    for part in ("test_attention_weights", "test_self_attention", "test_free_scores"):
        reason = rows["broken", part]["reason"]
        assert reason.startswith("nbgrader could not grade this notebook: KeyError: 'grade_id'"), reason
        assert "above traceback" not in reason
    log = (course / "logs" / f"grade-{NAME}" / "broken.log").read_text()
    assert "nbgrader autograde failed: KeyError: 'grade_id'" in log
    with Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id) as gb:
        assert gb.find_submission(NAME, "alice").score == 6  # the gradebook keeps the raw score
    manifests = course / "logs" / f"grade-{NAME}"
    assert (manifests / "alice.json").is_file() and (manifests / "bob.json").is_file()
    assert not (manifests / "broken.json").exists()  # nbgrader failed: retried next time

    # nothing changed but alice's submission time: she is skipped, her penalty follows the new time
    (course / "submitted" / "alice" / NAME / "timestamp.txt").write_text("2026-12-10 12:00:00.000000 UTC")
    alice_log = (manifests / "alice.log").stat().st_mtime_ns
    assert main(["grade", str(course), NAME, "--quiet"]) == 0
    assert "graded 1, skipped 2 unchanged since their last grading (--force re-grades them)" in capsys.readouterr().out
    assert (manifests / "alice.log").stat().st_mtime_ns == alice_log
    rows = read_rows(course)
    assert [rows["alice", p]["score"] for p in ("test_attention_weights", "test_self_attention")] == ["2", "3"]
    assert {rows["alice", p]["penalty"] for p in alice} == {"0"}

    # bob resubmits, only he is graded: everyone else's rows stay
    cases.write(solved, course, "bob", NAME, E1)
    result = grade(course, NAME, only=["bob", "alice"], progress=False)
    assert result.graded == ["bob"] and result.skipped == ["alice"]
    after = read_rows(course)
    assert {k: v for k, v in after.items() if k[0] != "bob"} == {k: v for k, v in rows.items() if k[0] != "bob"}
    assert [after["bob", p]["score"] for p in alice] == ["2", "3", "1"] and len(after) == 9

    # --force grades an unchanged submission again
    result = grade(course, NAME, only=["alice"], progress=False, force=True, feedback=False)
    assert result.graded == ["alice"] and result.skipped == []
    assert (manifests / "alice.log").stat().st_mtime_ns != alice_log
    assert read_rows(course) == after
