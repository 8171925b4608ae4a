"""The exercise bank: catalogue against notebooks, notebooks against their sources, and the tooling parts
that need no kernel (authoring parser, feedback scrubbing, reasons, the worker pool)."""

from __future__ import annotations

import os
import runpy
import time

import nbformat
import pytest

from tfcourse.grading.authoring import notebook_text, parse, student_notebook_text
from tfcourse.grading.catalogue import CatalogueError, graded_parts, load_catalogue
from tfcourse.grading.pool import Job, run_jobs
from tfcourse.grading.preprocessors import HideHiddenTests
from tfcourse.grading.reasons import cell_reason
from tfcourse.grading.runner import release_version, restore_locked_cells

CATALOGUE = load_catalogue()


def test_catalogue_lists_the_first_four_chapters_with_required_fields():
    assert [e.id for e in CATALOGUE][:4] == ["ch01-self-attention", "ch02-scaling", "ch03-multi-head", "ch04-masks"]
    for exercise in CATALOGUE:
        assert exercise.title and exercise.topic and exercise.minutes > 0
        assert len(exercise.parts) >= 3
        assert exercise.points == sum(p.points for p in exercise.parts)


@pytest.mark.parametrize("exercise", CATALOGUE, ids=lambda e: e.id)
def test_catalogue_parts_match_the_notebook_metadata(exercise):
    nb = nbformat.read(exercise.notebook, as_version=4)
    assert graded_parts(nb) == list(exercise.parts)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        if meta:
            assert meta["schema_version"] == 3
            assert {"grade", "grade_id", "locked", "solution", "task"} <= set(meta)


def test_catalogue_validation_catches_a_wrong_point_count(tmp_path):
    text = (CATALOGUE[0].notebook.parents[1] / "catalogue.yml").read_text()
    bad = text.replace("{id: test_self_attention, points: 3}", "{id: test_self_attention, points: 4}", 1)
    (tmp_path / "catalogue.yml").write_text(bad)
    for exercise in CATALOGUE:  # the notebooks the entries point to, relative to the catalogue
        (tmp_path / exercise.id).mkdir()
        (tmp_path / exercise.id / exercise.notebook.name).write_bytes(exercise.notebook.read_bytes())
    with pytest.raises(CatalogueError, match="ch01-self-attention: points is 6 but the parts add up to 7"):
        load_catalogue(tmp_path / "catalogue.yml")


@pytest.mark.parametrize("exercise", CATALOGUE, ids=lambda e: e.id)
def test_notebook_is_built_from_its_source(exercise):
    assert exercise.notebook.read_text(encoding="utf-8") == notebook_text(exercise.source), (
        "run `python exercises/build.py`"
    )


@pytest.mark.parametrize("exercise", CATALOGUE, ids=lambda e: e.id)
def test_student_copy_is_built_and_hides_solutions_and_hidden_tests(exercise):
    student = exercise.notebook.parents[1] / "student" / exercise.notebook.name  # what the book links to
    text = student.read_text(encoding="utf-8")
    assert text == student_notebook_text(exercise.source), "run `python exercises/build.py`"
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert graded_parts(nbformat.reads(text, as_version=4)) == list(exercise.parts)


@pytest.mark.parametrize("exercise", CATALOGUE, ids=lambda e: e.id)
def test_source_runs_with_every_test_passing_in_process(exercise):
    # The percent-format source is a Python module: running it executes solutions and all tests, hidden ones too.
    runpy.run_path(str(exercise.source), run_name="__exercise__")


def test_release_strips_solutions_and_hidden_tests():
    source = nbformat.read(CATALOGUE[1].notebook, as_version=4)
    release = release_version(source)
    text = "\n".join(c.source for c in release.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "answer_variance = 64" not in text
    assert "answer_variance = None" in text


def test_authoring_parser_reports_malformed_cells():
    with pytest.raises(ValueError, match="needs id"):
        parse("# %% solution\nx = 1\n")
    with pytest.raises(ValueError, match="points=... belongs on tests cells"):
        parse("# %% tests id=t\npass\n")
    with pytest.raises(ValueError, match="BEGIN SOLUTION"):
        parse("# %% solution id=s\nx = 1\n")
    with pytest.raises(ValueError, match="duplicate cell ids"):
        parse("# %% locked id=a\n1\n# %% locked id=a\n2\n")
    cells = parse("# %% [markdown]\n# # Title\n#\n# text\n# %% tests id=t points=2\npass\n")
    assert cells[0].source == "# Title\n\ntext" and cells[1].points == 2.0


def test_restore_locked_cells_puts_back_deleted_and_edited_tests():
    release = release_version(nbformat.read(CATALOGUE[0].notebook, as_version=4))
    tampered = nbformat.from_dict(release)
    tampered.cells = [
        c for c in tampered.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_self_attention"
    ]
    next(
        c for c in tampered.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_free_scores"
    ).source = "pass"
    restored = restore_locked_cells(tampered, release)
    assert set(restored) == {"test_self_attention", "test_free_scores"}
    assert [c.source for c in tampered.cells] == [c.source for c in release.cells]


def test_feedback_scrubber_removes_hidden_tests_and_their_tracebacks():
    cell = nbformat.v4.new_code_cell("check(a)\n### BEGIN HIDDEN TESTS\nsecret_check(b)\n### END HIDDEN TESTS")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "t", "points": 1, "solution": False, "locked": True}
    cell.outputs = [
        nbformat.v4.new_output("error", ename="CheckFailed", evalue="wrong", traceback=["----> 3 secret_check(b)", "x"])
    ]
    cell, _ = HideHiddenTests().preprocess_cell(cell, {}, 0)
    assert "secret" not in cell.source
    assert cell.outputs[0].traceback == ["CheckFailed: wrong"]


def test_reasons_name_timeouts_crashes_and_memory():
    def failed(ename, evalue):
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[])]
        return cell_reason(cell, 0, 2, timeout=30)

    assert failed("CellTimeoutError", "").startswith("timed out") and "30 s" in failed("CellTimeoutError", "")
    assert failed("KernelDied", "boom").startswith("kernel crashed")
    assert failed("RuntimeError", "DefaultCPUAllocator: can't allocate memory").startswith("out of memory")
    assert failed("CheckFailed", "x is wrong: your mask polarity") == "CheckFailed: x is wrong: your mask polarity"
    assert cell_reason(nbformat.v4.new_code_cell("x"), 2, 2) == "passed"


def _ok():
    return "fine"


def _raises():
    raise ValueError("bad input")


def _exits():
    os._exit(3)


def _hangs():
    time.sleep(60)


def test_pool_reports_every_job_whatever_happens_to_it():
    jobs = [Job("ok", _ok), Job("raises", _raises), Job("exits", _exits), Job("hangs", _hangs), Job("ok2", _ok)]
    started = time.monotonic()
    outcomes = run_jobs(jobs, workers=2, deadline=3)
    assert time.monotonic() - started < 30
    assert list(outcomes) == ["ok", "raises", "exits", "hangs", "ok2"]
    assert outcomes["ok"].ok and outcomes["ok"].value == "fine" and outcomes["ok2"].ok
    assert not outcomes["raises"].ok and "ValueError: bad input" in outcomes["raises"].error
    assert not outcomes["exits"].ok and "exit code 3" in outcomes["exits"].error
    assert not outcomes["hangs"].ok and "longer than 3 s" in outcomes["hangs"].error
