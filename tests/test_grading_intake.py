"""Taking a submission in: only the expected notebooks, as regular files of a sane size."""

from __future__ import annotations

import os

import nbformat

from tfcourse.grading import intake


def _course(tmp_path):
    folder = tmp_path / "submitted" / "ana" / "ps"
    folder.mkdir(parents=True)
    return tmp_path, folder


def test_notebooks_are_copied_and_everything_else_is_ignored(tmp_path):
    root, folder = _course(tmp_path)
    nbformat.write(nbformat.v4.new_notebook(), str(folder / "ex1.ipynb"))
    (folder / "timestamp.txt").write_text("2026-12-01 10:00:00.000000 UTC")
    (folder / "tfcourse").mkdir()
    (folder / "tfcourse" / "__init__.py").write_text("check_function = None\n")
    (folder / "notes.py").write_text("print('hi')\n")
    taken = intake.take_in(root, "ps", "ana", ["ex1", "ex2"])
    assert taken.accepted == ["ex1"] and taken.missing == ["ex2"] and taken.refused == {}
    assert sorted(p.name for p in taken.folder.iterdir()) == ["ex1.ipynb", "timestamp.txt"]
    assert taken.ignored == ["notes.py", "tfcourse"]
    assert (folder / "notes.py").exists()  # the student's own folder is never changed


def test_links_devices_oversize_and_garbage_are_refused(tmp_path, monkeypatch):
    root, folder = _course(tmp_path)
    secret = tmp_path / "source.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(secret))
    (folder / "link.ipynb").symlink_to(secret)
    os.mkfifo(folder / "fifo.ipynb")
    (folder / "garbled.ipynb").write_text("not a notebook {")
    monkeypatch.setattr(intake, "MAX_NOTEBOOK_BYTES", 100)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x" * 500)]), str(folder / "big.ipynb"))
    taken = intake.take_in(root, "ps", "ana", ["link", "fifo", "garbled", "big"])
    assert taken.accepted == []
    assert "symbolic link" in taken.refused["link"]
    assert "not a regular file" in taken.refused["fifo"]
    assert "not a valid notebook" in taken.refused["garbled"]
    assert "over the limit" in taken.refused["big"]
    assert list(taken.folder.iterdir()) == []


def test_a_linked_submission_folder_is_refused(tmp_path):
    (tmp_path / "source" / "ps").mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(), str(tmp_path / "source" / "ps" / "ex1.ipynb"))
    (tmp_path / "submitted" / "ana").mkdir(parents=True)
    (tmp_path / "submitted" / "ana" / "ps").symlink_to(tmp_path / "source" / "ps")
    taken = intake.take_in(tmp_path, "ps", "ana", ["ex1"])
    assert taken.accepted == [] and "symbolic link" in taken.refused["ex1"]
