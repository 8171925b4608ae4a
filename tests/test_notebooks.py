"""The notebooks that the book's Colab and Binder buttons open: in sync with their sources, install cell first.

``notebooks/*.ipynb`` are generated from the MyST pages by ``tools/build_notebooks.py``; each test here
regenerates them in memory and compares, as the exercise tests do for theirs. The learner's copies of the
exercises (``exercises/student/*.ipynb``), which the chapters link to, must start with the same cell.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()
PAGES = tool.pages()
INSTALL = tool.install_cell_source()


def first_cell(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["cells"][0]


def cell_source(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def test_every_chapter_and_no_stray_file_has_a_notebook():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    chapters = re.findall(r"file:\s*(chapters/\S+)", toc)
    assert len(chapters) >= 13
    assert set(chapters) <= set(PAGES), "every chapter gets a notebook"
    expected = {tool.notebook_for(docname) for docname in PAGES}
    committed = {path.relative_to(ROOT).as_posix() for path in (ROOT / tool.NOTEBOOK_DIR).glob("*.ipynb")}
    assert committed == expected, "run `python tools/build_notebooks.py`"


@pytest.mark.parametrize("docname", PAGES)
def test_notebook_is_built_from_its_source(docname):
    if importlib.util.find_spec("jupytext") is None:
        pytest.fail("jupytext converts the MyST pages: install it (pip install jupytext)")
    target = ROOT / tool.notebook_for(docname)
    assert target.is_file(), "run `python tools/build_notebooks.py`"
    assert target.read_text(encoding="utf-8") == tool.notebook_text(PAGES[docname]), (
        "run `python tools/build_notebooks.py`"
    )


@pytest.mark.parametrize("docname", PAGES)
def test_notebook_starts_with_the_install_cell_and_holds_every_code_cell(docname):
    nb = json.loads((ROOT / tool.notebook_for(docname)).read_text(encoding="utf-8"))
    first = nb["cells"][0]
    assert first["cell_type"] == "code" and cell_source(first) == INSTALL
    source = PAGES[docname].read_text(encoding="utf-8")
    code = [cell_source(c) for c in nb["cells"][1:] if c["cell_type"] == "code"]
    assert len(code) == source.count("```{code-cell}")
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "no outputs are committed"


def test_install_cell_installs_from_the_configured_repository_and_nothing_else():
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    url = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", config, re.M).group(1)
    branch = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+branch:\s*(\S+)", config, re.M).group(1)
    assert f'"tfcourse @ git+{url}@{branch}"' in INSTALL
    assert "%" not in INSTALL and "!" not in INSTALL, "plain Python: it also runs where IPython does not"
    compile(INSTALL, "<install cell>", "exec")
    (pip,) = [line for line in INSTALL.splitlines() if '"pip", "install"' in line]
    for option in ("--upgrade", "-U", "--force-reinstall", "--ignore-installed", "--no-deps", "torch"):
        assert f'"{option}"' not in pip, f"{option}: pip must keep the torch that is installed (Colab's)"


def test_install_cell_does_nothing_when_tfcourse_is_importable(monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip was run: {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    exec(compile(INSTALL, "<install cell>", "exec"), {})


def test_install_cell_runs_pip_in_the_kernel_when_tfcourse_is_missing(monkeypatch):
    calls = []

    installed = sys.modules["tfcourse"]

    def fake_pip(command, **kwargs):  # "installs" tfcourse: the real one becomes importable again
        calls.append((command, kwargs))
        monkeypatch.setitem(sys.modules, "tfcourse", installed)

    monkeypatch.setitem(sys.modules, "tfcourse", None)  # import tfcourse now raises ImportError
    monkeypatch.setattr(subprocess, "run", fake_pip)
    namespace: dict = {}
    exec(compile(INSTALL, "<install cell>", "exec"), namespace)
    ((command, kwargs),) = calls
    assert command[:4] == [sys.executable, "-m", "pip", "install"] and kwargs == {"check": True}
    assert command[-1].startswith("tfcourse @ git+https://github.com/")
    assert namespace["tfcourse"] is installed


STUDENT = sorted((ROOT / "exercises" / "student").glob("*.ipynb"))


@pytest.mark.parametrize("path", STUDENT, ids=lambda p: p.stem)
def test_student_exercise_notebook_starts_with_the_install_cell(path):
    # exercises/build.py prepends tools/build_notebooks.install_cell() to every learner's copy.
    first = first_cell(path)
    assert first["cell_type"] == "code" and cell_source(first) == INSTALL, (
        f"{path.relative_to(ROOT)} does not start with the install cell of tools/build_notebooks.py"
    )
