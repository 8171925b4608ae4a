"""The book builds from scratch with warnings as errors, every page executed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.book
def test_book_builds_without_warnings(built_book):
    _, log = built_book
    # Sphinx reports "file: WARNING: message"; the kernel's own start-up chatter is not a book warning.
    warnings = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL): ", line)]
    assert not warnings, "\n".join(warnings)


@pytest.mark.book
def test_every_toc_page_is_rendered(built_book):
    html, _ = built_book
    toc = (ROOT / "_toc.yml").read_text()
    pages = [*re.findall(r"file:\s*(\S+)", toc), re.search(r"root:\s*(\S+)", toc).group(1)]
    assert len(pages) >= 16  # intro, notation, 13 chapters, API and bibliography
    for page in pages:
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.book
def test_code_cells_were_executed_and_api_documented(built_book):
    html, _ = built_book
    assert "tensor([[1, 0, 0, 0]" in (html / "intro.html").read_text()
    pages = {
        "attention": ["scaled_dot_product_attention", "MultiHeadAttention"],
        "positions": ["t5_relative_position_bucket"],
    }
    for module, names in pages.items():
        page = (html / "api" / f"{module}.html").read_text()
        for name in names:
            assert f'id="tfcourse.{module}.{name}"' in page, (module, name)


def api_pages() -> dict[str, set[str]]:
    """``{API page docname: modules it documents with automodule}``, from the Markdown sources."""
    pages = {}
    for source in sorted((ROOT / "api").rglob("*.md")):
        modules = set(re.findall(r"^\.\. automodule:: (\S+)", source.read_text(encoding="utf-8"), re.M))
        pages[source.relative_to(ROOT).with_suffix("").as_posix()] = modules
    return pages


def test_every_public_module_has_an_api_page_in_the_toc():
    """One page per public module (``tfcourse/NAME.py``, ``tfcourse/models/NAME.py``, packages), each in _toc.yml."""
    library = ROOT / "tfcourse"
    public = {f"tfcourse.{p.stem}" for p in library.glob("[!_]*.py") if p.stem not in ("cli",)}
    public |= {f"tfcourse.models.{p.stem}" for p in (library / "models").glob("[!_]*.py")}
    public |= {
        f"tfcourse.{p.parent.name}"
        for p in library.glob("[!_]*/__init__.py")
        if p.parent.name not in ("grading", "models")
    }
    pages = api_pages()
    documented = {module: page for page, modules in pages.items() for module in modules}
    missing = sorted(public - documented.keys())
    assert not missing, (
        f"modules without an API page (add api/NAME.md with an automodule, and list it in _toc.yml): {missing}"
    )
    toc = (ROOT / "_toc.yml").read_text()
    assert not [page for page in pages if f"file: {page}\n" not in toc], "API pages missing from _toc.yml"
    assert "file: api\n" in toc


def test_figures_are_numbered_per_chapter():
    import sys

    sys.path.insert(0, str(ROOT / "_ext"))
    from figure_numbers import renumber

    numbers = {
        "chapters/07-encoder-decoder": {"figure": {"fig-b": (12,), "fig-a": (11,)}, "table": {"t": (3,)}},
        "performance": {"figure": {"p1": (40,), "p2": (41,)}},
    }
    renumber(numbers)
    assert numbers["chapters/07-encoder-decoder"] == {
        "figure": {"fig-a": (7, 1), "fig-b": (7, 2)},
        "table": {"t": (7, 1)},
    }
    assert numbers["performance"] == {"figure": {"p1": (1,), "p2": (2,)}}


@pytest.mark.book
def test_captioned_figures_carry_their_chapter_number(built_book):
    html, _ = built_book
    chapters = sorted((html / "chapters").glob("*.html"))
    numbered = 0
    for page in chapters:
        chapter = int(page.name.split("-")[0])
        labels = re.findall(r'<span class="caption-number">Figure ([0-9.]+) </span>', page.read_text())
        assert labels == [f"{chapter}.{i}" for i in range(1, len(labels) + 1)], (page.name, labels)
        numbered += len(labels)
    assert numbered > 0, "no captioned figure in any chapter"
