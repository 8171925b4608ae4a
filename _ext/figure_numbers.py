"""Sphinx extension: figures are numbered per chapter, "Figure 7.1", "Figure 7.2", ...

Sphinx numbers figures per section number, and the book's table of contents is not section-numbered (the
chapters carry their number in their title, "7. Encoder, decoder and generation"), so Sphinx would number
every figure of the book in one run, "Figure 1" to "Figure 60". This extension renumbers them after Sphinx
has: a figure of ``chapters/NN-*`` becomes ``NN.i`` (its chapter's number, then its place in the chapter);
a figure of any other page is numbered within that page. Tables and code listings are renumbered the same
way. References made with ``{numref}`` follow, since they read the same numbers.
"""

from __future__ import annotations

import re

CHAPTER = re.compile(r"^chapters/0*(\d+)-")
"""A chapter's docname; its number is the chapter number."""


def chapter_prefix(docname: str) -> tuple[int, ...]:
    """``(7,)`` for ``chapters/07-encoder-decoder``; ``()`` for a page that is not a numbered chapter."""
    match = CHAPTER.match(docname)
    return (int(match.group(1)),) if match else ()


def renumber(fignumbers: dict[str, dict[str, dict[str, tuple]]]) -> None:
    """Rewrite Sphinx's ``env.toc_fignumbers`` in place: per page, in order of appearance, chapter first."""
    for docname, by_type in fignumbers.items():
        prefix = chapter_prefix(docname)
        for figtype, numbers in by_type.items():
            in_order = sorted(numbers, key=lambda figure_id: numbers[figure_id])
            by_type[figtype] = {figure_id: (*prefix, place) for place, figure_id in enumerate(in_order, 1)}


def _renumber_figures(app, env) -> list[str]:
    renumber(env.toc_fignumbers)
    # Sphinx compares its fresh numbers with the previous build's (these), finds every page with figures
    # changed, and rewrites it: each written page carries these numbers.
    return []


def setup(app):
    """Run after Sphinx's own numbering (the toctree collector, priority 500)."""
    app.connect("env-get-updated", _renumber_figures, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
