"""Write a Jupyter notebook for each MyST notebook page of the book: ``python tools/build_notebooks.py [--check]``.

Every page of ``_toc.yml`` whose Markdown source is a MyST notebook (a ``kernelspec`` in its front matter)
becomes ``notebooks/<name>.ipynb``, the file its Colab and Binder buttons open (see
``_ext/launch_links.py``; pages in its ``NO_NOTEBOOK`` are left out). The notebook holds the page's cells,
converted by jupytext, after one cell of its own: :func:`install_cell_source`, which installs ``tfcourse``
from the repository when it cannot be imported (Colab) and does nothing where it can (Binder, a clone).
Cell ids are fixed, so an unchanged source gives the same bytes. With ``--check``, nothing is written and
the exit status says whether every notebook is up to date (``tests/test_notebooks.py`` checks the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_ext"))

from launch_links import NOTEBOOK_DIR, notebook_for  # noqa: E402  (the book's extension decides the paths)

# The install cell is the library's (the exercises' learner copies start with it too).
from tfcourse.grading.authoring import INSTALL_CELL_ID, install_cell, install_cell_source, repository  # noqa: E402, F401


def _toc_files(entry: dict) -> list[str]:
    files = [entry["file"]] if "file" in entry else []
    for key in ("parts", "chapters", "sections"):
        for child in entry.get(key, []):
            files += _toc_files(child)
    return files


def _is_myst_notebook(source: Path) -> bool:
    text = source.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return False
    front_matter = yaml.safe_load(text[4 : text.index("\n---", 4)]) or {}
    return "kernelspec" in front_matter


def pages(root: Path = ROOT) -> dict[str, Path]:
    """``{docname: MyST source}`` of every page in ``_toc.yml`` that gets a generated notebook."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    docnames = [toc["root"], *_toc_files(toc)]
    found = {}
    for docname in docnames:
        source = root / f"{docname}.md"
        if source.is_file() and _is_myst_notebook(source) and notebook_for(docname) is not None:
            found[docname] = source
    targets = [notebook_for(d) for d in found]
    if len(set(targets)) != len(targets):
        raise ValueError(f"two pages would write the same notebook: {sorted(targets)}")
    return found


def notebook(source: Path, root: Path = ROOT) -> nbformat.NotebookNode:
    """The notebook of one MyST page: the install cell, then the page's cells (no outputs)."""
    import jupytext  # needed only here; the book build itself does not need it

    nb = jupytext.reads(source.read_text(encoding="utf-8"), fmt="myst")
    nb.metadata = {"kernelspec": nb.metadata["kernelspec"], "language_info": {"name": "python"}}
    for index, cell in enumerate(nb.cells):
        cell.id = f"{cell.cell_type[:2]}-{index:02d}"
    nb.cells.insert(0, install_cell(root))
    nbformat.validate(nb)
    return nb


def notebook_text(source: Path, root: Path = ROOT) -> str:
    """The ``.ipynb`` text of :func:`notebook` (what is committed under ``notebooks/``)."""
    return nbformat.writes(notebook(source, root)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of date")
    args = parser.parse_args(argv)
    wanted = {ROOT / notebook_for(docname): source for docname, source in pages().items()}
    stale = []
    for target, source in wanted.items():
        text = notebook_text(source)
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(target)
        if not args.check:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    for extra in sorted(set((ROOT / NOTEBOOK_DIR).glob("*.ipynb")) - set(wanted)):
        stale.append(extra)
        if not args.check:
            extra.unlink()
            print(f"removed {extra.relative_to(ROOT)} (no page of _toc.yml makes it)")
    if args.check and stale:
        print("out of date (run python tools/build_notebooks.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
