"""Build nbgrader source notebooks from plain Python files in the "percent" cell format.

An exercise is written as ``exercises/<id>/<id>.py``, a runnable Python file (running it executes every
solution and test, hidden ones included) whose cells are separated by ``# %%`` header lines::

    # %% [markdown]                              locked markdown (instructions)
    # %% locked id=setup                         locked code (imports), restored when graded
    # %%                                         free code: a scratch cell for the learner
    # %% solution id=attention_weights           autograded answer (### BEGIN/END SOLUTION inside)
    # %% tests id=test_attention_weights points=2   locked test cell worth 2 points

Markdown lines drop their leading ``# ``. :func:`build` turns the file into the ``.ipynb`` nbgrader reads,
with deterministic cell ids so that rebuilding an unchanged source gives the same bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["CellSpec", "build", "notebook_text", "parse"]

_HEADER = re.compile(r"^# %%(?P<rest>.*)$")
_KINDS = ("free", "locked", "solution", "tests")


@dataclass(frozen=True)
class CellSpec:
    """One cell of an exercise source.

    Attributes:
        cell_type: ``"markdown"`` or ``"code"``.
        kind: ``"free"``, ``"locked"``, ``"solution"`` or ``"tests"``.
        source: the cell's text.
        grade_id: nbgrader's id (required for solution and tests cells).
        points: points of a tests cell.
        line: line number of the header in the source file, for error messages.
    """

    cell_type: str
    kind: str
    source: str
    grade_id: str | None = None
    points: float | None = None
    line: int = 0


def _parse_header(rest: str, line: int, path: str) -> tuple[str, str, dict[str, str]]:
    words = rest.split()
    cell_type = "code"
    if words and words[0] == "[markdown]":
        cell_type, words = "markdown", words[1:]
    kind = "locked" if cell_type == "markdown" else "free"
    options: dict[str, str] = {}
    for word in words:
        if "=" in word:
            key, value = word.split("=", 1)
            options[key] = value
        elif word in _KINDS:
            kind = word
        else:
            raise ValueError(
                f"{path}:{line}: unknown word {word!r} in cell header; expected one of {_KINDS} or key=value"
            )
    unknown = set(options) - {"id", "points"}
    if unknown:
        raise ValueError(f"{path}:{line}: unknown option(s) {sorted(unknown)} in cell header")
    return cell_type, kind, options


def _markdown_text(lines: list[str]) -> str:
    out = []
    for text in lines:
        if text.startswith("# "):
            out.append(text[2:])
        elif text.rstrip() == "#":
            out.append("")
        elif text.strip():
            raise ValueError(f"markdown line does not start with '# ': {text!r}")
        else:
            out.append("")
    return "\n".join(out).strip("\n")


def parse(text: str, path: str = "<exercise>") -> list[CellSpec]:
    """Split an exercise source into cells; raise ``ValueError`` naming the line of any malformed header."""
    cells: list[CellSpec] = []
    header: tuple[int, str] | None = None
    body: list[str] = []

    def flush() -> None:
        if header is None:
            if "".join(body).strip():
                raise ValueError(f"{path}: text before the first '# %%' cell header")
            return
        line, rest = header
        cell_type, kind, options = _parse_header(rest, line, path)
        source = _markdown_text(body) if cell_type == "markdown" else "\n".join(body).strip("\n")
        grade_id = options.get("id")
        points = float(options["points"]) if "points" in options else None
        if kind in ("solution", "tests") and not grade_id:
            raise ValueError(f"{path}:{line}: a {kind} cell needs id=...")
        if (kind == "tests") != (points is not None):
            raise ValueError(f"{path}:{line}: points=... belongs on tests cells (and every tests cell needs it)")
        if kind == "solution" and "### BEGIN SOLUTION" not in source:
            raise ValueError(f"{path}:{line}: solution cell {grade_id!r} has no '### BEGIN SOLUTION' region")
        cells.append(CellSpec(cell_type, kind, source, grade_id, points, line))

    for number, row in enumerate(text.splitlines(), start=1):
        match = _HEADER.match(row)
        if match:
            flush()
            header, body = (number, match["rest"]), []
        else:
            body.append(row)
    flush()
    ids = [c.grade_id for c in cells if c.grade_id]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate cell ids {duplicates}")
    return cells


def _nbgrader_metadata(spec: CellSpec, grade_id: str) -> dict:
    meta = {
        "grade": spec.kind == "tests",
        "grade_id": grade_id,
        "locked": spec.kind in ("locked", "tests"),
        "schema_version": 3,
        "solution": spec.kind == "solution",
        "task": False,
    }
    if spec.kind == "tests":
        points = spec.points
        meta["points"] = int(points) if points is not None and points.is_integer() else points
    return meta


def build(source: Path | str) -> nbformat.NotebookNode:
    """Read an exercise source file and return its nbgrader source notebook."""
    path = Path(source)
    specs = parse(path.read_text(encoding="utf-8"), str(path))
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, spec in enumerate(specs):
        cell_id = spec.grade_id or f"{spec.cell_type[:2]}-{index:02d}"
        if spec.cell_type == "markdown":
            cell = nbformat.v4.new_markdown_cell(spec.source)
        else:
            cell = nbformat.v4.new_code_cell(spec.source)
        cell.id = cell_id
        if spec.kind != "free":
            cell.metadata["nbgrader"] = _nbgrader_metadata(spec, cell_id)
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def notebook_text(source: Path | str) -> str:
    """The ``.ipynb`` text that :func:`build` gives for ``source`` (what is committed next to it)."""
    return nbformat.writes(build(source)) + "\n"


INSTALL_CELL_ID = "install-tfcourse"
_REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def repository(root: Path = _REPOSITORY_ROOT) -> tuple[str, str]:
    """The repository address and branch, from the book's ``_config.yml`` (the one place they are set)."""
    import yaml

    config = yaml.safe_load((Path(root) / "_config.yml").read_text(encoding="utf-8"))["repository"]
    return config["url"].rstrip("/"), config.get("branch") or "main"


def install_cell_source(root: Path = _REPOSITORY_ROOT) -> str:
    """The first cell of every notebook the book links to: install ``tfcourse`` only when it is missing.

    It is plain Python (no ``%pip`` magic), so it also runs where cells are executed without IPython, such
    as the grading sandbox (where ``import tfcourse`` succeeds, so nothing is installed). pip leaves an
    installed torch alone when it satisfies tfcourse's requirement.
    """
    url, branch = repository(root)
    requirement = f"tfcourse @ git+{url}@{branch}"
    return "\n".join(
        [
            "# Installs the course library when it is missing (Colab); does nothing where it is installed",
            "# (Binder, a clone of the repository). pip keeps the torch that is there if tfcourse accepts it.",
            "try:",
            "    import tfcourse",
            "except ImportError:",
            "    import importlib",
            "    import subprocess",
            "    import sys",
            "",
            "    subprocess.run(",
            f'        [sys.executable, "-m", "pip", "install", "--quiet", "{requirement}"],',
            "        check=True,",
            "    )",
            "    importlib.invalidate_caches()",
            "    import tfcourse",
        ]
    )


def install_cell(root: Path = _REPOSITORY_ROOT) -> nbformat.NotebookNode:
    """:func:`install_cell_source` as a code cell with a fixed id (no nbgrader metadata: not graded)."""
    cell = nbformat.v4.new_code_cell(install_cell_source(root))
    cell.id = INSTALL_CELL_ID
    return cell


def student_notebook_text(source: Path | str) -> str:
    """The learner's copy for self-study (opened from the book in Colab or Binder) as ``.ipynb`` text.

    It starts with :func:`install_cell`; solutions become the course's code stub and hidden tests
    disappear, as in an nbgrader release. Instructors release problem sets with ``tfcourse assign``
    instead, which also locks the graded cells and records their checksums.
    """
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions  # grading extra, needed only here

    from tfcourse.grading.settings import CODE_STUB

    nb, resources = ClearSolutions(code_stub={"python": CODE_STUB}).preprocess(build(source), {"language": "python"})
    nb, _ = ClearHiddenTests().preprocess(nb, resources)
    nb.cells.insert(0, install_cell())
    return nbformat.writes(nb) + "\n"
