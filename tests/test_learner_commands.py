"""The learner's commands in the development install: ``tfcourse get`` and the end of ``tfcourse exercises``.

The same commands from an installed wheel, without the repository, are tested in ``test_packaging.py``.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from tfcourse.cli import main
from tfcourse.grading.catalogue import load_catalogue, student_notebook
from tfcourse.grading.runner import read_notebook

from .conftest import ROOT

STUDENT = ROOT / "exercises" / "student"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, with the checkout's exercise bank."""
    monkeypatch.delenv("TFCOURSE_EXERCISES", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_get_writes_the_student_notebook_here(in_tmp, capsys):
    assert main(["get", "ch04-masks"]) == 0
    written = in_tmp / "ch04-masks.ipynb"
    assert written.read_bytes() == (STUDENT / "ch04-masks.ipynb").read_bytes()
    out = capsys.readouterr().out
    assert "tfcourse check ch04-masks.ipynb" in out
    text = written.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text


def test_get_into_another_folder(in_tmp):
    assert main(["get", "ch01-self-attention", "--dir", "week1/mine"]) == 0
    assert (in_tmp / "week1" / "mine" / "ch01-self-attention.ipynb").is_file()
    assert not (in_tmp / "ch01-self-attention.ipynb").exists()


def test_get_never_overwrites_a_learners_file(in_tmp, capsys):
    mine = in_tmp / "ch04-masks.ipynb"
    mine.write_text("my answers", encoding="utf-8")
    assert main(["get", "ch04-masks"]) == 2
    assert mine.read_text(encoding="utf-8") == "my answers"
    err = capsys.readouterr().err
    assert "already exists" in err and "nothing you wrote is lost" in err and "--force" in err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["ch04-masks.ipynb"]


def test_get_force_replaces_and_keeps_the_old_file(in_tmp, capsys):
    mine = in_tmp / "ch04-masks.ipynb"
    mine.write_text("my answers", encoding="utf-8")
    (in_tmp / "ch04-masks-backup-1.ipynb").write_text("older answers", encoding="utf-8")
    assert main(["get", "ch04-masks", "--force"]) == 0
    assert mine.read_bytes() == (STUDENT / "ch04-masks.ipynb").read_bytes()
    assert (in_tmp / "ch04-masks-backup-1.ipynb").read_text(encoding="utf-8") == "older answers"
    assert (in_tmp / "ch04-masks-backup-2.ipynb").read_text(encoding="utf-8") == "my answers"
    assert "ch04-masks-backup-2.ipynb" in capsys.readouterr().out


def test_get_unknown_id_lists_the_valid_ones(in_tmp, capsys):
    assert main(["get", "ch99-nope"]) == 2
    err = capsys.readouterr().err
    assert "no exercise 'ch99-nope'" in err
    for exercise in load_catalogue(validate=False):
        assert exercise.id in err
    assert list(in_tmp.iterdir()) == []


def test_exercises_ends_with_how_to_get_and_check_one(capsys):
    assert main(["exercises"]) == 0
    *table, get, check = capsys.readouterr().out.rstrip("\n").splitlines()
    assert "tfcourse get ID" in get
    assert "tfcourse check ID.ipynb" in check
    assert any("ch01-self-attention" in line for line in table)


def test_every_exercise_has_a_student_notebook():
    for exercise in load_catalogue(validate=False):
        assert student_notebook(exercise.id).is_file(), exercise.id


def _setup_module():
    spec = importlib.util.spec_from_file_location("tfcourse_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the build step; setup() runs only as __main__
    return module


def test_packaged_catalogue_points_at_the_student_notebooks(tmp_path):
    """What setup.py puts into the wheel validates: each entry's parts match its student notebook."""
    setup = _setup_module()
    bank = tmp_path / "exercises"
    shutil.copytree(STUDENT, bank / "student")
    text = (ROOT / "exercises" / "catalogue.yml").read_text(encoding="utf-8")
    (bank / "catalogue.yml").write_text(setup.packaged_catalogue(text, bank / "student"), encoding="utf-8")
    packaged = load_catalogue(bank / "catalogue.yml")  # validates parts and points against each notebook
    source = load_catalogue(validate=False)
    assert [e.id for e in packaged] == [e.id for e in source]
    for exercise in packaged:
        assert exercise.notebook == student_notebook(exercise.id, bank)
        assert "BEGIN HIDDEN TESTS" not in exercise.notebook.read_text(encoding="utf-8")
        read_notebook(exercise.notebook)


def test_packaged_catalogue_refuses_a_missing_student_copy(tmp_path):
    setup = _setup_module()
    text = (ROOT / "exercises" / "catalogue.yml").read_text(encoding="utf-8")
    with pytest.raises(SystemExit, match="no student copy"):
        setup.packaged_catalogue(text, tmp_path)


def test_installed_package_reads_its_packaged_bank(tmp_path, monkeypatch):
    """Outside a checkout (no exercises/catalogue.yml next to the package) the wheel's copy is used."""
    import tfcourse.grading.catalogue as catalogue

    site = tmp_path / "site-packages"
    (site / "tfcourse" / "_data" / "exercises").mkdir(parents=True)
    (site / "exercises").mkdir()  # some other distribution's top-level folder: not a bank
    monkeypatch.delenv("TFCOURSE_EXERCISES", raising=False)
    monkeypatch.setattr(catalogue, "__file__", str(site / "tfcourse" / "grading" / "catalogue.py"))
    assert catalogue.packaged_bank() == site / "tfcourse" / "_data" / "exercises"
    assert catalogue.bank_dir() == catalogue.packaged_bank()
    monkeypatch.setenv("TFCOURSE_EXERCISES", str(tmp_path / "mine"))
    assert catalogue.bank_dir() == tmp_path / "mine"  # the variable still wins


def test_a_checkout_reads_its_own_bank_first(monkeypatch):
    import tfcourse.grading.catalogue as catalogue

    monkeypatch.delenv("TFCOURSE_EXERCISES", raising=False)
    assert catalogue.bank_dir() == ROOT / "exercises"


def test_tables_wrap_to_the_terminal_width():
    from tfcourse.cli import _table

    text = _table(["part", "feedback"], [["test_a", "word " * 40], ["total", ""]], width=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    assert text.count("word") == 40
