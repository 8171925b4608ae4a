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
    api = (html / "api.html").read_text()
    for name in ("scaled_dot_product_attention", "MultiHeadAttention", "t5_relative_position_bucket"):
        assert name in api
