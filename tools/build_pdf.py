"""Print the whole book into one PDF: ``python tools/build_pdf.py`` (this is ``make pdf``).

Jupyter Book's own PDF builders need a TeX installation (``pdflatex``) or a Chromium downloaded by pyppeteer
(``pdfhtml``); this script needs neither beyond what the browser test already uses. It builds the book as
one HTML page (Sphinx's ``singlehtml`` builder, into ``OUTPUT/_build/singlehtml``; the chapters' executed
outputs come from the execution cache that the HTML build left in ``OUTPUT/_build``), serves that page on
127.0.0.1, opens it in headless Chromium through Playwright with MathJax served from the local copy that
``tools/setup_browser.sh`` installs (nothing is fetched from the network), waits until every formula is
typeset, and prints it to ``OUTPUT/_build/html/transformers-verified.pdf``, with a PDF outline of the
chapters and page numbers in the footer. The landing page links that file, so it is part of the built site.

``--output`` is the folder that holds ``_build`` (default: the repository root, as ``make book`` builds);
``--skip-build`` prints an existing single-page build again.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PDF_NAME = "transformers-verified.pdf"
"""File name of the PDF in the built site; ``intro.md`` links it under this name."""
MATHJAX = ROOT / ".cache" / "browser" / "node_modules" / "mathjax" / "es5"
CDN_MATHJAX = "/npm/mathjax@3/es5/"

# Printed pages: the sidebars, header buttons and toggles are screen-only; folded code stays folded.
PRINT_CSS = """
@page { size: A4; margin: 16mm 14mm 18mm 14mm; }
html { font-size: 14px; }
.bd-sidebar-primary, .bd-sidebar-secondary, .bd-header-article, .prev-next-footer, .bd-footer,
  #pst-back-to-top, .headerlink, .copybtn, details.hide > summary { display: none !important; }
.bd-main .bd-content .bd-article-container { max-width: 100% !important; }
.cell_output img, .cell_output svg, figure img { max-width: 100% !important; height: auto; }
span[id^="document-"] + section { break-before: page; }  /* each page of the book starts a new sheet */
figure, .cell_output, table, pre { break-inside: avoid; }
"""

FOOTER = (
    '<div style="font-size:8px; width:100%; text-align:center; color:#555;">'
    '<span class="title"></span> · <span class="pageNumber"></span> / <span class="totalPages"></span></div>'
)


def _root_page(single: Path) -> str:
    """The single page's file: the root document's (``intro.html``); ``index.html`` only redirects to it."""
    pages = [p.name for p in single.glob("*.html") if p.name != "index.html"]
    if len(pages) != 1:
        raise SystemExit(f"expected one page in {single}, found {sorted(pages)}")
    return pages[0]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def build_single_page(output: Path, strict: bool = True) -> Path:
    """Run Jupyter Book's ``singlehtml`` builder into ``OUTPUT/_build/singlehtml``; return that folder."""
    jupyter_book = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jupyter_book is None:
        raise SystemExit("jupyter-book is not installed; install the project with its [book] extra")
    command = [jupyter_book, "build", "--builder", "singlehtml", "--path-output", str(output), str(ROOT)]
    command[2:2] = ["-W", "-n", "--keep-going"] if strict else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the single-page build failed:\n{(result.stdout + result.stderr)[-6000:]}")
    return output / "_build" / "singlehtml"


def print_pdf(single: Path, pdf: Path, timeout_ms: int = 300_000) -> dict:
    """Print the single page to ``pdf`` in headless Chromium; return the seconds and any refused requests."""
    start_page = _root_page(single)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not MATHJAX.is_dir():
        raise SystemExit("chromium or the local MathJax copy is missing; run tools/setup_browser.sh")
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_QuietHandler, directory=str(single))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    outside: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(base):
            return request_route.continue_()
        if CDN_MATHJAX in url:
            return request_route.fulfill(path=str(MATHJAX / url.split(CDN_MATHJAX, 1)[1].split("?")[0]))
        outside.append(url)
        return request_route.abort()

    start = time.perf_counter()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.set_default_timeout(timeout_ms)
            page.route("**/*", route)
            page.goto(f"{base}/{start_page}", wait_until="load")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.math')].every(m => m.querySelector('mjx-container'))"
            )
            page.add_style_tag(content=PRINT_CSS)
            page.emulate_media(media="print")
            pdf.parent.mkdir(parents=True, exist_ok=True)
            page.pdf(
                path=str(pdf),
                prefer_css_page_size=True,
                print_background=True,
                display_header_footer=True,
                header_template="<div></div>",
                footer_template=FOOTER,
                outline=True,
                tagged=True,
            )
            browser.close()
    finally:
        server.shutdown()
    return {"seconds": time.perf_counter() - start, "blocked": outside}


def page_count(data: bytes) -> int:
    """Pages of a PDF that Chromium wrote (its page objects are not compressed)."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))


def outline_titles(data: bytes) -> list[str]:
    """The titles of a PDF's outline (bookmarks), as literal or UTF-16 hex strings, decoded."""
    titles = []
    for literal, hexa in re.findall(rb"/Title\s*(?:\(((?:[^()\\]|\\.)*)\)|<([0-9A-Fa-f]*)>)", data):
        if hexa:
            raw = bytes.fromhex(hexa.decode())
            titles.append(raw[2:].decode("utf-16-be") if raw.startswith(b"\xfe\xff") else raw.decode("latin-1"))
        else:
            titles.append(re.sub(rb"\\(.)", rb"\1", literal).decode("latin-1"))
    return titles


def main(argv: list[str] | None = None) -> Path:
    """Build the single page (unless ``--skip-build``) and print it; return the PDF's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT, help="folder holding _build (default: the repository)")
    parser.add_argument("--skip-build", action="store_true", help="print an existing singlehtml build again")
    parser.add_argument("--allow-warnings", action="store_true", help="build even if Sphinx warns (not -W -n)")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    single = output / "_build" / "singlehtml" if args.skip_build else build_single_page(output, not args.allow_warnings)
    pdf = output / "_build" / "html" / PDF_NAME
    report = print_pdf(single, pdf)
    pages = page_count(pdf.read_bytes())
    print(f"wrote {pdf}: {pages} pages, {pdf.stat().st_size / 1e6:.1f} MB, printed in {report['seconds']:.0f} s")
    if report["blocked"]:
        print(f"requests outside the book were refused: {sorted(set(report['blocked']))}", file=sys.stderr)
    return pdf


if __name__ == "__main__":
    main()
