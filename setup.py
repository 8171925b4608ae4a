"""One build step that pyproject.toml cannot express: the learner's exercise files go into the wheel.

A built wheel carries ``tfcourse/_data/exercises/``: the student notebooks (``exercises/student/*.ipynb``: no
solutions, no hidden tests) and a copy of ``exercises/catalogue.yml`` whose ``notebook:`` entries point at
them, so that an installed ``tfcourse`` lists the catalogue, hands out notebooks (``tfcourse get``) and checks
them without the repository (``tfcourse.grading.catalogue.bank_dir`` finds that folder). The source notebooks,
which hold the solutions and the hidden tests, are never packaged. An editable install (``pip install -e``)
copies nothing: the package then reads the checkout's ``exercises/`` folder directly.

The sdist includes the same files (MANIFEST.in), so a wheel built from it is the same.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BANK = HERE / "exercises"
PACKAGED = Path("tfcourse", "_data", "exercises")  # inside the package; see bank_dir()
_NOTEBOOK = re.compile(r"^(?P<key>\s*-?\s*notebook:\s*)(?P<path>\S+)\s*$", re.MULTILINE)
_HEADER = """\
# The learner's copy of the exercise catalogue, written when the tfcourse wheel was built: every notebook
# below is the student version (no solutions, no hidden tests). Instructors build problem sets from the
# repository's exercises/ folder instead (set TFCOURSE_EXERCISES to it).
"""


def packaged_catalogue(text: str, student: Path) -> str:
    """``catalogue.yml`` with each ``notebook:`` entry pointing at ``student/<id>.ipynb``, which must exist."""
    problems = []

    def to_student(match: re.Match) -> str:
        name = Path(match["path"]).name
        if not (student / name).is_file():
            problems.append(f"{match['path']}: no student copy {student / name} (run python exercises/build.py)")
        return f"{match['key']}student/{name}"

    rewritten, count = _NOTEBOOK.subn(to_student, text)
    if count == 0:
        problems.append("no 'notebook:' entries found")
    if problems:
        raise SystemExit("cannot package the exercise catalogue:\n  " + "\n  ".join(problems))
    return _HEADER + rewritten


class build_py_with_exercises(build_py):
    """``build_py``, then the student notebooks and their catalogue into ``tfcourse/_data/exercises``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's exercises/ folder
        target = Path(self.build_lib) / PACKAGED
        if target.exists():
            shutil.rmtree(target)  # no notebook left over from an earlier build
        (target / "student").mkdir(parents=True)
        catalogue = packaged_catalogue((BANK / "catalogue.yml").read_text(encoding="utf-8"), BANK / "student")
        (target / "catalogue.yml").write_text(catalogue, encoding="utf-8")
        for notebook in sorted((BANK / "student").glob("*.ipynb")):
            shutil.copyfile(notebook, target / "student" / notebook.name)


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import packaged_catalogue
    setup(cmdclass={"build_py": build_py_with_exercises})
