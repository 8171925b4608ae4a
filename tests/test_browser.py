"""A real browser reads every page of the built book: headless Chromium (Debian's) driven by Playwright.

For each page: math is typeset, every image loads, every code cell that produced output shows it, and the
console stays free of errors. The search page must find a known term. A screenshot of each page is saved
under ``_build/screenshots`` as a test artifact. The pages are served from 127.0.0.1; MathJax, which the
book loads from a CDN, is served from a local copy (installed by ``tools/setup_browser.sh``) and every
other outside request is refused, so a page that quietly depends on the network fails here.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = ROOT / ".cache" / "browser" / "node_modules" / "mathjax" / "es5"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def toc_pages() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return [re.search(r"root:\s*(\S+)", toc).group(1), *re.findall(r"file:\s*(\S+)", toc)]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = [what for what, ok in (("chromium", chromium), ("MathJax copy", MATHJAX.is_dir())) if not ok]
    if missing:
        message = f"{' and '.join(missing)} not installed; run tools/setup_browser.sh"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def site(built_book):
    """Serve the built HTML on a free loopback port; yield its base URL and folder."""
    html, _ = built_book
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", html
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output readable
        pass


def open_page(browser, base: str, path: str):
    """Open ``path``; return the page and the list that collects its console errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(90_000)  # generous: a loaded 2-core machine is slow, not broken
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    def route(request_route):
        url = request_route.request.url
        if url.startswith(base):
            return request_route.continue_()
        if "/npm/mathjax@3/es5/" in url:
            local = MATHJAX / url.split("/npm/mathjax@3/es5/", 1)[1].split("?")[0]
            return request_route.fulfill(path=str(local))
        errors.append(f"request outside the book: {url}")
        return request_route.abort()

    page.route("**/*", route)
    page.goto(f"{base}/{path}", wait_until="load")
    return page, errors


def executed_outputs(html: Path, page: str) -> int:
    """How many code cells of the page produced output when the book was executed."""
    notebook = html.parent / "jupyter_execute" / f"{page}.ipynb"
    if not notebook.exists():
        return 0  # a plain Markdown page
    cells = json.loads(notebook.read_text())["cells"]
    return sum(1 for cell in cells if cell["cell_type"] == "code" and cell.get("outputs"))


@pytest.mark.book
@pytest.mark.parametrize("page_name", toc_pages())
def test_page_renders_in_a_real_browser(browser, site, page_name):
    base, html = site
    page, errors = open_page(browser, base, f"{page_name}.html")
    try:
        math = page.locator(".math").count()
        if math:
            page.wait_for_function(
                "() => [...document.querySelectorAll('.math')].every(m => m.querySelector('mjx-container'))"
            )
        broken = page.evaluate(
            "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        assert not broken, f"images that did not load: {broken}"
        shown = page.locator("div.cell div.cell_output").count()
        assert shown >= executed_outputs(html, page_name), "a code cell's output is missing from the page"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{page_name.replace('/', '_')}.png"), full_page=True)
        assert not errors, errors
    finally:
        page.close()


@pytest.mark.book
def test_search_finds_a_known_term(browser, site):
    base, _ = site
    page, errors = open_page(browser, base, "search.html?q=causal")
    try:
        page.wait_for_selector("#search-results ul.search li")
        found = page.locator("#search-results ul.search li a").all_inner_texts()
        assert any("Masks" in title or "Notation" in title for title in found), found
        assert not errors, errors
    finally:
        page.close()
