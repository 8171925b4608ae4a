"""Sphinx extension: the Colab and Binder buttons of a page open its generated notebook, not its MyST source.

sphinx-book-theme builds its launch buttons from the page's source path, so every chapter's Colab button
pointed at ``chapters/NN-*.md``, which Colab cannot open. ``tools/build_notebooks.py`` writes one
``.ipynb`` per MyST notebook page into ``notebooks/`` (committed, so Colab can fetch it from GitHub), and
this extension, running after the theme, points the page's Colab and Binder buttons at that file. Pages
listed in :data:`NO_NOTEBOOK` get no launch buttons at all. A page whose notebook is missing, or a theme
that no longer makes the buttons this extension rewrites, is a build warning (an error under ``-W``).

:func:`launch_urls` is the one place launch URLs are made; the ``exercise`` directive uses it too, and
``tests/test_browser.py`` maps every such URL back to a file of the repository. The repository address,
branch, Colab and BinderHub hosts all come from ``_config.yml``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import quote

from sphinx.util import logging

LOGGER = logging.getLogger(__name__)

NOTEBOOK_DIR = "notebooks"
"""Folder of the generated chapter notebooks, relative to the repository root."""

NO_NOTEBOOK = {
    "performance": "plots benchmarks/results/*.json, which only a clone of the repository has",
}
"""MyST notebook pages that get no generated notebook and no launch buttons, with the reason."""

LAUNCH_GROUP = "launch-buttons"  # sphinx-book-theme's label for its group of launch buttons


def notebook_for(docname: str) -> str | None:
    """The repository path of the generated notebook of page ``docname`` (None for :data:`NO_NOTEBOOK`)."""
    if docname in NO_NOTEBOOK:
        return None
    return f"{NOTEBOOK_DIR}/{PurePosixPath(docname).name}.ipynb"


def launch_urls(theme_options: dict, path: str) -> dict[str, str]:
    """Colab, Binder and GitHub URLs of the repository file ``path``, from ``html_theme_options``.

    Jupyter Book fills ``html_theme_options`` from ``_config.yml``: ``repository.url`` and ``.branch``, and
    ``launch_buttons.colab_url`` and ``.binderhub_url``.
    """
    repository = theme_options["repository_url"].rstrip("/")
    branch = theme_options.get("repository_branch") or "main"
    owner_repo = repository.removeprefix("https://github.com/")
    if owner_repo == repository or owner_repo.count("/") != 1:
        raise ValueError(f"repository.url must be https://github.com/OWNER/REPO, not {repository!r}")
    launch = theme_options.get("launch_buttons", {})
    colab = (launch.get("colab_url") or "https://colab.research.google.com").rstrip("/")
    binder = (launch.get("binderhub_url") or "https://mybinder.org").rstrip("/")
    return {
        "Colab": f"{colab}/github/{owner_repo}/blob/{branch}/{path}",
        "Binder": f"{binder}/v2/gh/{owner_repo}/{branch}?labpath={quote(path)}",
        "GitHub": f"{repository}/blob/{branch}/{path}",
    }


def _point_launch_buttons_at_notebooks(app, pagename, templatename, context, doctree) -> None:
    buttons = context.get("header_buttons")
    if buttons is None:
        return
    groups = [b for b in buttons if b.get("type") == "group" and b.get("label") == LAUNCH_GROUP]
    path = notebook_for(pagename)
    if path is None:  # a page that cannot run outside a clone: no launch buttons rather than broken ones
        buttons[:] = [b for b in buttons if b not in groups]
        return
    exists = (Path(app.srcdir) / path).is_file()
    if not groups:
        if exists:
            LOGGER.warning(f"{path} exists but the theme made no launch buttons for this page", location=pagename)
        return
    if not exists:
        LOGGER.warning(f"{path} is missing; run `python tools/build_notebooks.py`", location=pagename)
        buttons[:] = [b for b in buttons if b not in groups]
        return
    urls = launch_urls(app.config.html_theme_options, path)
    for group in groups:
        for button in group.get("buttons", []):
            if button.get("type") != "link":
                continue
            if button.get("text") not in urls:
                LOGGER.warning(f"launch button {button.get('text')!r} cannot open {path}", location=pagename)
                continue
            button["url"] = urls[button["text"]]


def setup(app):
    """Register the handler after sphinx-book-theme's own (priority 501), which makes the buttons."""
    app.connect("html-page-context", _point_launch_buttons_at_notebooks, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
