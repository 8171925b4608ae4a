"""End to end on a temporary course: init → assign the four exercises → many kinds of submissions → grade
with two workers → every score, the named-mistake feedback, the CSV, the gradebook and the feedback HTML;
then ``tfcourse check`` on a solved and an unsolved notebook. Marked ``grading`` (about two minutes)."""

from __future__ import annotations

import csv
import hashlib
import html
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests import grading_cases as cases

pytestmark = pytest.mark.grading

TFCOURSE = str(Path(sys.executable).with_name("tfcourse"))
NAME = "ps1"
E1, E2, E3, E4 = cases.EXERCISES
TOTAL = {E1: 6, E2: 7, E3: 8, E4: 10}


def run(*args: str, timeout: float = 500) -> subprocess.CompletedProcess:
    return subprocess.run([TFCOURSE, *args], capture_output=True, text=True, timeout=timeout)


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def make_submissions(course: Path) -> None:
    release = {e: nbformat.read(str(course / "release" / NAME / f"{e}.ipynb"), as_version=4) for e in cases.EXERCISES}
    source = {e: nbformat.read(str(course / "source" / NAME / f"{e}.ipynb"), as_version=4) for e in cases.EXERCISES}
    solved = {e: cases.solved(release[e], source[e]) for e in cases.EXERCISES}
    for e in cases.EXERCISES:
        cases.write(solved[e], course, "alice", NAME, e)  # everything right
        cases.write(release[e], course, "bob", NAME, e)  # nothing done
    # carol: known mistakes in every exercise
    carol = {
        E1: cases.answer(
            cases.answer(solved[E1], "self_attention", cases.SYMMETRIC_SELF_ATTENTION),
            "free_scores",
            "answer_free_scores = 36",
        ),
        E2: cases.answer(
            cases.answer(solved[E2], "variance", "answer_variance = 8"), "attention_entropy", cases.ENTROPY_BITS
        ),
        E3: cases.answer(solved[E3], "split_heads", cases.SPLIT_NO_TRANSPOSE),
        E4: cases.answer(
            cases.answer(
                cases.answer(solved[E4], "causal_mask", cases.STRICT_CAUSAL), "padding_mask", cases.KEYS_ONLY_PADDING
            ),
            "masked_attention",
            cases.NAN_ATTENTION,
        ),
    }
    for e, nb in carol.items():
        cases.write(nb, course, "carol", NAME, e)
    # one notebook each (the others are missing): the reference called, and the robustness cases
    hostile = {
        "dan": cases.FUSED_SELF_ATTENTION,
        "raises": cases.RAISES,
        "loops": cases.LOOPS,
        "exits": cases.EXITS,
        "segfault": cases.SEGFAULT,
        "hogs": cases.HOGS_MEMORY,
        "warns": cases.WARNS,
    }
    for student, code in hostile.items():
        cases.write(cases.answer(solved[E1], "self_attention", code), course, student, NAME, E1)
    edited = cases.answer(cases.delete(solved[E1], "test_attention_weights"), "test_self_attention", "pass")
    cases.write(edited, course, "editor", NAME, E1)
    cases.write("this is not a notebook {", course, "garbled", NAME, E1)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    init = run("course", "init", str(course), "--timeout", "10")
    assert init.returncode == 0, init.stderr
    assign = run("assign", str(course), NAME, "--exercises", *cases.EXERCISES)
    assert assign.returncode == 0, assign.stdout + assign.stderr
    make_submissions(course)
    before = tree_digest(course / "submitted")
    grade = run("grade", str(course), NAME, "--workers", "2", "--quiet")
    assert grade.returncode == 0, grade.stdout + grade.stderr[-3000:]
    assert tree_digest(course / "submitted") == before, "grading modified a submission"
    with (course / f"grades-{NAME}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return course, assign.stdout, grade.stdout, rows


def scores(rows, student, exercise=None):
    return {
        r["part"].split(":")[1]: (float(r["score"]), r["reason"])
        for r in rows
        if r["student"] == student and (exercise is None or r["part"].startswith(exercise + ":"))
    }


def total(rows, student):
    return sum(float(r["score"]) for r in rows if r["student"] == student)


def test_assign_validates_source_and_release(graded):
    course, assign_out, _, _ = graded
    assert "validated 8 notebooks: solutions pass every test, stubs pass none" in assign_out
    assert sorted(p.name for p in (course / "source" / NAME).iterdir()) == [f"{e}.ipynb" for e in cases.EXERCISES]
    released = "\n".join(p.read_text() for p in (course / "release" / NAME).glob("*.ipynb"))
    assert "BEGIN SOLUTION" not in released and "HIDDEN TESTS" not in released


def test_csv_has_every_student_and_part(graded):
    _, _, _, rows = graded
    students = {r["student"] for r in rows}
    assert students == {
        "alice",
        "bob",
        "carol",
        "dan",
        "raises",
        "loops",
        "exits",
        "segfault",
        "hogs",
        "warns",
        "editor",
        "garbled",
    }
    for student in students:
        assert len([r for r in rows if r["student"] == student]) == 16  # 3 + 4 + 4 + 5 parts
    assert set(rows[0]) == {"student", "part", "score", "max", "reason", "late_days", "penalty"}
    assert all(r["reason"] for r in rows)


def test_full_solutions_get_full_marks_and_stubs_none(graded):
    _, _, summary, rows = graded
    assert total(rows, "alice") == sum(TOTAL.values())
    assert all(reason == "passed" for _, reason in scores(rows, "alice").values())
    assert total(rows, "bob") == 0
    assert "the function returned nothing" in scores(rows, "bob", E1)["test_attention_weights"][1]
    assert "not answered yet" in scores(rows, "bob", E2)["test_variance"][1]
    assert re.search(r"alice\s+31 / 31", summary) and "ch04-masks:test_masked_attention" in summary


def test_known_mistakes_score_partially_with_named_feedback(graded):
    _, _, _, rows = graded
    carol = scores(rows, "carol")
    assert carol["test_attention_weights"] == (2.0, "passed")
    assert (
        carol["test_self_attention"][0] == 0
        and "same projection for queries and keys" in carol["test_self_attention"][1]
    )
    assert carol["test_free_scores"][0] == 0 and "S[a, b] = S[b, a]" in carol["test_free_scores"][1]
    assert carol["test_variance"][0] == 0 and "standard deviation" in carol["test_variance"][1]
    assert "in bits" in carol["test_attention_entropy"][1]
    assert carol["test_scaled_scores"] == (2.0, "passed") and carol["test_entropy_invariant_scale"] == (2.0, "passed")
    assert "reshaped straight to (B, H, T, Dh)" in carol["test_split_heads"][1]
    assert carol["test_merge_heads"] == (2.0, "passed")
    assert "excludes the diagonal" in carol["test_causal_mask"][1]
    assert "forgot the padded queries" in carol["test_padding_mask"][1]
    assert "come out as NaN" in carol["test_masked_attention"][1]
    assert carol["test_lengths_to_mask"] == (2.0, "passed") and carol["test_allowed_pairs"] == (1.0, "passed")
    assert 0 < total(rows, "carol") < sum(TOTAL.values())
    dan = scores(rows, "dan", E1)
    assert (
        dan["test_self_attention"][0] == 0
        and "torch.nn.functional.scaled_dot_product_attention" in dan["test_self_attention"][1]
    )


def test_every_robustness_case_gets_a_score_and_a_reason(graded):
    _, _, _, rows = graded
    expected = {
        "raises": (3, "ValueError: I give up"),
        "loops": (3, "timed out"),
        "exits": (3, "kernel crashed"),
        "segfault": (3, "ctypes.string_at is not allowed while grading"),
        "hogs": (3, "out of memory"),
    }
    for student, (points, words) in expected.items():
        ex1 = scores(rows, student, E1)
        assert ex1["test_attention_weights"] == (2.0, "passed"), student  # parts before the failure keep their points
        assert ex1["test_self_attention"][0] == 0 and words in ex1["test_self_attention"][1], (student, ex1)
        assert total(rows, student) == points, student
        assert scores(rows, student, E2)["test_variance"] == (0.0, "not submitted")
    for student in ("exits", "segfault"):  # a fresh sandbox replays the cells: later parts keep their points
        assert scores(rows, student, E1)["test_free_scores"] == (1.0, "passed"), student
    assert total(rows, "warns") == TOTAL[E1]  # warnings on stderr and from warnings.warn cost nothing
    editor = scores(rows, "editor", E1)
    assert total(rows, "editor") == TOTAL[E1]
    assert "deleted test cell was put back" in editor["test_attention_weights"][1]
    assert "edited test cell was restored" in editor["test_self_attention"][1]
    garbled = scores(rows, "garbled", E1)
    assert all(score == 0 and "not a valid notebook" in reason for score, reason in garbled.values())


def test_gradebook_agrees_with_the_csv(graded):
    from nbgrader.api import Gradebook

    from tfcourse.grading.course import load_config

    course, _, _, rows = graded
    config = load_config(course)
    with Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id) as gb:
        for student in ("alice", "carol", "exits", "garbled", "bob"):
            assert gb.find_submission(NAME, student).score == pytest.approx(total(rows, student)), student


def _text(path: Path) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", path.read_text())).split())


def test_feedback_never_shows_hidden_tests(graded):
    course, _, _, _ = graded
    source = nbformat.read(str(course / "source" / NAME / f"{E1}.ipynb"), as_version=4)
    hidden, visible = [], []
    for cell in source.cells:
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN HIDDEN TESTS" in line or "END HIDDEN TESTS" in line:
                inside = "BEGIN" in line
            elif len(line.strip()) >= 20:
                (hidden if inside else visible).append(" ".join(line.split()))
    hidden = [line for line in hidden if line not in visible]  # lines only the hidden tests have
    assert hidden and visible
    feedback = sorted((course / "feedback").glob(f"*/{NAME}/{E1}.html"))
    assert {p.parts[-3] for p in feedback} >= {"alice", "bob", "carol", "dan", "raises", "exits"}
    for path in feedback:
        text = _text(path)
        assert "HIDDEN TESTS" not in text
        assert not [line for line in hidden if line in text], path
        assert any(line in text for line in visible), path  # the page does show the visible tests
    assert "same projection for queries and keys" in _text(course / "feedback" / "carol" / NAME / f"{E1}.html")


def test_check_on_a_solved_and_an_unsolved_notebook(graded, tmp_path):
    course, _, _, _ = graded
    solved = course / "submitted" / "alice" / NAME / f"{E4}.ipynb"
    target = tmp_path / f"{E4}.ipynb"
    target.write_bytes(solved.read_bytes())
    result = run("check", str(target), "--timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"total\s+10 / 10", result.stdout)
    assert re.search(r"test_masked_attention\s+3 / 3\s+passed", result.stdout)

    unsolved = nbformat.read(str(course / "release" / NAME / f"{E4}.ipynb"), as_version=4)
    unsolved = cases.answer(unsolved, "test_causal_mask", "pass  # a learner 'fixing' the test")
    nbformat.write(unsolved, str(target))
    result = run("check", str(target), "--timeout", "30")
    assert result.returncode == 1
    assert re.search(r"total\s+0 / 10", result.stdout)
    assert "not answered yet" in result.stdout and "returned nothing" in result.stdout
    assert "test_causal_mask were restored from the original" in result.stdout
