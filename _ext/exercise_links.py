"""Sphinx extension: the ``exercise`` directive links a chapter to its graded notebook.

``{exercise} ch04-masks`` renders the exercise's title, points and estimated time from
``exercises/catalogue.yml`` with links that open the learner's copy (``exercises/student/<id>.ipynb``)
in Colab or Binder, or show it on GitHub, followed by the list of its graded parts with their points. A
part's title is the heading above its test cell in the notebook (``## 2. The causal mask (2 points)``), its
points are the catalogue's (which ``tfcourse.grading.catalogue`` checks against the notebook's nbgrader
metadata). The links are made by :func:`launch_links.launch_urls` from the repository address set once in
``_config.yml``. An unknown id, a missing student notebook, or a catalogue part the notebook lacks is a build
error.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import yaml
from docutils import nodes
from launch_links import launch_urls  # _ext/ is on sys.path: Jupyter Book puts local_extensions' folder there
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

_HEADING = re.compile(r"^#{2,3}\s+(?:Part\s+)?(?:\d+[.:]\s*)?(?P<title>.+?)\s*(?:\(\s*[\d.]+\s+points?\s*\))?\s*$")


def _points(value: float) -> str:
    text = f"{value:g}"
    return f"{text} point" if text == "1" else f"{text} points"


def part_titles(notebook: Path) -> dict[str, str]:
    """``{grade_id: title}`` of a notebook's graded test cells: the last level-2/3 heading above each one."""
    nb = nbformat.read(notebook, as_version=4)
    titles, heading = {}, None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                match = _HEADING.match(line)
                if match:
                    heading = match.group("title")
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            titles[str(meta.get("grade_id"))] = heading or str(meta.get("grade_id")).removeprefix("test_")
    return titles


class ExerciseDirective(SphinxDirective):
    """``{exercise} ID``: a paragraph of launch links for one exercise of the bank."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        exercise_id = self.arguments[0]
        root = Path(self.env.srcdir)
        catalogue = yaml.safe_load((root / "exercises" / "catalogue.yml").read_text(encoding="utf-8"))
        entries = {entry["id"]: entry for entry in catalogue["exercises"]}
        if exercise_id not in entries:
            raise ExtensionError(f"exercise {exercise_id!r} is not in exercises/catalogue.yml")
        path = f"exercises/student/{exercise_id}.ipynb"
        if not (root / path).is_file():
            raise ExtensionError(f"{path} is missing; run `python exercises/build.py`")
        entry = entries[exercise_id]
        links = launch_urls(self.config.html_theme_options, path)
        paragraph = nodes.paragraph()
        paragraph += nodes.strong(text=f"Graded exercise: {entry['title']}")
        paragraph += nodes.Text(f" ({entry['points']} points, about {entry['minutes']} minutes). Open it in ")
        for index, (name, url) in enumerate(links.items()):
            paragraph += nodes.reference(text=name, refuri=url)
            paragraph += nodes.Text(", " if index == 0 else (", or on " if index == 1 else "."))
        paragraph += nodes.Text(" Run the test cell under each part as you go, or check the whole notebook with ")
        paragraph += nodes.literal(text=f"tfcourse check {exercise_id}.ipynb")
        paragraph += nodes.Text(".")
        titles = part_titles(root / path)
        parts = nodes.enumerated_list(classes=["exercise-parts"])
        for part in entry["parts"]:
            if part["id"] not in titles:
                raise ExtensionError(f"{path} has no graded test cell {part['id']!r} listed in the catalogue")
            item = nodes.list_item()
            line = nodes.paragraph()
            line += nodes.Text(f"{titles[part['id']]} ")
            line += nodes.emphasis(text=f"({_points(float(part['points']))})")
            item += line
            parts += item
        heading = nodes.paragraph(text=f"Its {len(entry['parts'])} graded parts:")
        self.env.note_dependency(str(root / path))
        self.env.note_dependency(str(root / "exercises" / "catalogue.yml"))
        return [paragraph, heading, parts]


def setup(app):
    """Register the ``exercise`` directive."""
    app.add_directive("exercise", ExerciseDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
