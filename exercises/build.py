"""Build every exercise notebook from its percent-format source: ``python exercises/build.py [--check]``.

Each ``exercises/<id>/<id>.py`` becomes ``exercises/<id>/<id>.ipynb`` (the nbgrader source notebook) and
``exercises/student/<id>.ipynb`` (the learner's copy the book links to: no solutions, no hidden tests).
With ``--check``, nothing is written and the exit status says whether every notebook is up to date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfcourse.grading.authoring import notebook_text, student_notebook_text

HERE = Path(__file__).resolve().parent


def sources(names: list[str]) -> list[Path]:
    """The exercise sources to build: the named ids, or every ``<id>/<id>.py``."""
    if names:
        return [HERE / name / f"{name}.py" for name in names]
    return sorted(p for p in HERE.glob("*/*.py") if p.stem == p.parent.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", help="exercise ids (default: all)")
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for source in sources(args.ids):
        outputs = {
            source.with_suffix(".ipynb"): notebook_text(source),
            HERE / "student" / f"{source.stem}.ipynb": student_notebook_text(source),
        }
        for target, text in outputs.items():
            if target.exists() and target.read_text(encoding="utf-8") == text:
                continue
            stale.append(target)
            if not args.check:
                target.parent.mkdir(exist_ok=True)
                target.write_text(text, encoding="utf-8")
                print(f"wrote {target.relative_to(HERE.parent)}")
    if args.check and stale:
        print("out of date (run python exercises/build.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
