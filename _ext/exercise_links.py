"""Sphinx extension: the ``exercise`` directive links a chapter to its graded notebook.

``{exercise} ch04-masks`` renders the exercise's title, points and estimated time from
``exercises/catalogue.yml`` with links that open the learner's copy (``exercises/student/<id>.ipynb``)
in Colab or Binder, or show it on GitHub. The links are made by :func:`launch_links.launch_urls` from the
repository address set once in ``_config.yml``. An unknown id or a missing student notebook is a build error.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from docutils import nodes
from launch_links import launch_urls  # _ext/ is on sys.path: Jupyter Book puts local_extensions' folder there
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective


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
        return [paragraph]


def setup(app):
    """Register the ``exercise`` directive."""
    app.add_directive("exercise", ExerciseDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
