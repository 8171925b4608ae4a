"""A real browser reads every page of the built book: headless Chromium (Debian's) driven by Playwright.

For each page: math is typeset, every image loads, every code cell that produced output shows it, and the
console stays free of errors. The search page must find a known term. A screenshot of each page is saved
under ``_build/screenshots`` as a test artifact. The pages are served from 127.0.0.1; MathJax, which the
book loads from a CDN, is served from a local copy (installed by ``tools/setup_browser.sh``) and every
other outside request is refused, so a page that quietly depends on the network fails here.

Every launch link of every page (Colab, Binder, and GitHub links into the repository) is followed without
the network: its URL is mapped back to a path of this repository, which must be a file of the checkout that
git would commit, and a notebook opened in Colab or Binder must start with the cell that installs tfcourse
(``tools/build_notebooks.py``). Each notebook page links its generated notebook, each exercise block its
learner's copy.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

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


def _load_notebook_tool():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOTEBOOKS = _load_notebook_tool()


@functools.cache
def repository_files() -> frozenset[str]:
    """Paths git would commit (tracked, or new and not ignored): what Colab, Binder and GitHub can see."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode != 0:  # not a git checkout (an unpacked archive): every file counts
        return frozenset(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file())
    return frozenset(line for line in listed.stdout.splitlines() if (ROOT / line).is_file())


def link_target(url: str) -> tuple[str, str] | None:
    """``(service, repository path)`` that a launch link opens, or None for a link that is not one.

    Made from ``_config.yml`` (repository, branch, Colab and BinderHub hosts) independently of the
    book's extension, so a link to another repository or branch is reported, not mapped.
    """
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repository = config["repository"]["url"].rstrip("/")
    branch = config["repository"].get("branch", "main")
    owner_repo = repository.removeprefix("https://github.com/")
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    binder = config["launch_buttons"]["binderhub_url"].rstrip("/")
    parts = urlsplit(url)
    if url.startswith(f"{colab}/"):
        prefix = f"/github/{owner_repo}/blob/{branch}/"
        if not parts.path.startswith(prefix):
            raise ValueError(f"Colab link outside {owner_repo}@{branch}: {url}")
        return "Colab", unquote(parts.path.removeprefix(prefix))
    if url.startswith(f"{binder}/"):
        if parts.path.rstrip("/") != f"/v2/gh/{owner_repo}/{branch}":
            raise ValueError(f"Binder link outside {owner_repo}@{branch}: {url}")
        query = parse_qs(parts.query)
        if "labpath" in query:
            return "Binder", query["labpath"][0]
        if "urlpath" in query:
            return "Binder", re.sub(r"^(lab/tree|tree|notebooks)/", "", query["urlpath"][0])
        raise ValueError(f"Binder link that opens no file: {url}")
    if url == repository or url.startswith(f"{repository}/"):
        rest = parts.path.removeprefix(urlsplit(repository).path)
        if rest in ("", "/"):
            return "GitHub", ""  # the repository button: its front page
        if rest.startswith("/issues"):
            return None  # the issue button opens a form, not a file
        match = re.fullmatch(rf"/(?:blob|tree)/{re.escape(branch)}/(.+)", rest)
        if match is None:
            raise ValueError(f"GitHub link that is not a file of {owner_repo}@{branch}: {url}")
        return "GitHub", unquote(match.group(1))
    return None


def target_problems(service: str, path: str) -> list[str]:
    """Why the file ``path`` (opened by ``service``) would not work; empty when it would."""
    if path == "":
        return []
    if path not in repository_files():
        return [f"{service}: {path} is not a file of the repository"]
    if service in ("Colab", "Binder") and not path.endswith(".ipynb"):
        return [f"{service}: {path} is not a notebook"]
    if path.endswith(".ipynb"):
        cells = json.loads((ROOT / path).read_text(encoding="utf-8"))["cells"]
        first = "".join(cells[0]["source"]) if cells and cells[0]["cell_type"] == "code" else None
        if first != NOTEBOOKS.install_cell_source():
            return [f"{service}: {path} does not start with the install cell of tools/build_notebooks.py"]
    return []


def expected_launch_targets(page_name: str) -> dict[str, set[str]]:
    """The files a page must open: its own generated notebook, and each exercise's learner copy."""
    expected: dict[str, set[str]] = {"Colab": set(), "Binder": set(), "GitHub": set()}
    if page_name in NOTEBOOKS.pages():
        expected["Colab"].add(NOTEBOOKS.notebook_for(page_name))
        expected["Binder"].add(NOTEBOOKS.notebook_for(page_name))
    source = ROOT / f"{page_name}.md"
    text = source.read_text(encoding="utf-8") if source.is_file() else ""
    for exercise in re.findall(r"^```\{exercise\}\s+(\S+)", text, re.M):
        for opened in expected.values():
            opened.add(f"exercises/student/{exercise}.ipynb")
    return expected


@pytest.mark.book
@pytest.mark.parametrize("page_name", toc_pages())
def test_every_launch_link_opens_a_notebook_of_the_repository(browser, site, page_name):
    base, _ = site
    page, _ = open_page(browser, base, f"{page_name}.html")
    try:
        urls = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    finally:
        page.close()
    problems: list[str] = []
    opened: dict[str, set[str]] = {"Colab": set(), "Binder": set(), "GitHub": set()}
    for url in sorted(set(urls)):
        try:
            target = link_target(url)
        except ValueError as error:
            problems.append(str(error))
            continue
        if target is not None:
            opened[target[0]].add(target[1])
            problems += target_problems(*target)
    for service, paths in expected_launch_targets(page_name).items():
        problems += [f"no {service} link opens {path}" for path in sorted(paths - opened[service])]
    assert not problems, "\n".join(problems)


CHAPTER_PAGES = [p for p in toc_pages() if p.startswith("chapters/")]

# _static/fit-math.js marks the page once MathJax has typeset it and wide equations are scaled to the column.
MATH_FITTED = "() => document.documentElement.dataset.mathFitted === 'true'"

_FIGURE_AUDIT = """() => {
  // The page's own content: the theme's launch menu and header carry logos that are not figures.
  const article = document.querySelector("article.bd-article") || document.querySelector("main");
  const problems = [];
  for (const img of article.querySelectorAll("img")) {
    if (img.closest(".header-article, .bd-header, nav, .navbar-brand")) continue;
    const src = img.currentSrc || img.src;
    const svg = /\\.svg(\\?|$)/i.test(src) || src.startsWith("data:image/svg");
    const shown = img.getBoundingClientRect().width;
    if (!svg && img.naturalWidth > 2 * shown + 1)
      problems.push(`${src}: ${img.naturalWidth} px shown at ${Math.round(shown)} px (below half resolution)`);
    const alt = (img.getAttribute("alt") || "").trim();
    if (alt.split(/\\s+/).length < 3 || /\\.(svg|png|jpe?g)$/i.test(alt) || alt === "_images")
      problems.push(`${src}: alt text ${JSON.stringify(alt)} does not describe the figure`);
    if (img.closest(".cell_output")) {
      const figure = img.closest("figure");
      const caption = figure && figure.querySelector("figcaption");
      if (!caption || caption.innerText.trim().split(/\\s+/).length < 4)
        problems.push(`${src}: a figure without a caption`);
      else if (!/^(Fig\\.|Figure)\\s*\\d+/.test(caption.innerText.trim()))
        problems.push(`${src}: the caption is not numbered: ${caption.innerText.slice(0, 40)}`);
    }
  }
  return problems;
}"""


@pytest.mark.book
@pytest.mark.parametrize("page_name", CHAPTER_PAGES)
def test_figures_are_sharp_numbered_and_captioned(browser, site, page_name):
    """At 1280 px: SVG or at least half-resolution images, numbered captions, real alt text (sideways scrolling is
    checked on every page by test_no_empty_header_bar_and_nothing_scrolls_sideways_at_1280px)."""
    base, _ = site
    page, _ = open_page(browser, base, f"{page_name}.html")
    try:
        page.wait_for_function(MATH_FITTED)
        problems = page.evaluate(_FIGURE_AUDIT)
    finally:
        page.close()
    assert not problems, "\n".join(problems)


@pytest.mark.book
@pytest.mark.parametrize("page_name", CHAPTER_PAGES)
def test_every_chapter_ends_with_check_yourself_and_exercises_listing_the_graded_parts(browser, site, page_name):
    base, _ = site
    page, _ = open_page(browser, base, f"{page_name}.html")
    try:
        headings = page.locator("main h2").all_inner_texts()
        parts = page.locator("main ol.exercise-parts > li").all_inner_texts()
        dropdowns = page.locator("main details, main .dropdown").count()
    finally:
        page.close()
    titles = [h.strip().rstrip("#¶ ").strip() for h in headings]
    assert titles[-2:] == ["Check yourself", "Exercises"], titles
    assert parts and all(re.search(r"\(\d+(\.\d+)? points?\)$", p.strip()) for p in parts), parts
    assert dropdowns >= 5, f"only {dropdowns} answer dropdowns on the page"


# The site around the chapters: theme, search, API reference and PDF.

# Elements that scroll sideways (a code block wider than the column) at the width of a laptop window.
SIDEWAYS = """() => [...document.querySelectorAll('article.bd-article *')].filter(e =>
    ['auto', 'scroll'].includes(getComputedStyle(e).overflowX) && e.clientWidth > 0
    && e.scrollWidth > e.clientWidth + 1
).map(e => `${e.tagName.toLowerCase()} (${e.clientWidth} px shown of ${e.scrollWidth}): `
    + (e.innerText || '').trim().split('\\n').sort((a, b) => b.length - a.length)[0].slice(0, 100))"""


@pytest.mark.book
@pytest.mark.parametrize("page_name", toc_pages())
def test_no_empty_header_bar_and_nothing_scrolls_sideways_at_1280px(browser, site, page_name):
    base, _ = site
    page, _ = open_page(browser, base, f"{page_name}.html")
    try:
        header = page.evaluate(
            """() => { const h = document.querySelector('#pst-header');
                 return h ? {height: h.getBoundingClientRect().height, text: h.innerText.trim()} : null; }"""
        )
        assert header is None or header["height"] == 0, f"a top bar above the page: {header}"
        assert page.locator(".search-button-field:visible").count() <= 1, "more than one search box"
        page.wait_for_function(MATH_FITTED)  # display equations are sized to the column once typeset
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280, "the page scrolls sideways"
        wide = page.evaluate(SIDEWAYS)
        assert not wide, "elements that scroll sideways at 1280 px (longest line shown):\n" + "\n".join(wide)
    finally:
        page.close()


@pytest.mark.book
def test_search_snippets_are_page_text_not_button_labels(browser, site):
    base, _ = site
    page, errors = open_page(browser, base, "search.html?q=causal")
    try:
        page.wait_for_function("() => document.querySelectorAll('#search-results li p.context').length >= 3")
        page.wait_for_timeout(1000)  # the snippets of the first results arrive one fetch at a time
        results = page.evaluate(
            """() => [...document.querySelectorAll('#search-results li')].filter(li => li.querySelector('p.context'))
                 .map(li => ({href: li.querySelector('a').href, text: li.querySelector('p.context').innerText}))"""
        )
        for result in results[:6]:
            snippet = re.sub(r"\s+", " ", result["text"]).strip().strip(".").strip()
            assert "causal" in snippet.lower(), result
            # The page's text: its article as served, without scripts, styles, buttons and toggles' labels.
            article, labels = page.evaluate(
                """async (href) => {
                     const doc = new DOMParser().parseFromString(await (await fetch(href)).text(), 'text/html');
                     const labels = doc.querySelector('.bd-header-article').textContent;
                     const article = doc.querySelector('article.bd-article');
                     article.querySelectorAll('script, style, button, summary, .headerlink').forEach(e => e.remove());
                     return [article.textContent.replace(/\\s+/g, ' '), labels];
                   }""",
                result["href"].split("#")[0],
            )
            head = snippet[:60]
            assert head in article, f"snippet {head!r} is not text of {result['href']}"
            for label in (".ipynb", ".pdf", "Open issue", "Print to PDF"):
                if label in labels:
                    assert label not in snippet, f"a button label in the snippet for {result['href']}: {snippet!r}"
        assert not errors, errors
    finally:
        page.close()


def _documented_objects(html: Path) -> dict[str, str]:
    """``{object id: API page}`` of every object the API pages document (``id="tfcourse.masks.causal_mask"``)."""
    found = {}
    for page in (html / "api").rglob("*.html"):
        for object_id in re.findall(r'<dt class="sig sig-object py" id="(tfcourse\.[^"]+)"', page.read_text()):
            found[object_id] = page.relative_to(html).as_posix()
    return found


@pytest.mark.book
def test_api_has_a_page_per_module_and_chapter_links_reach_it(browser, site):
    base, html = site
    documented = _documented_objects(html)
    assert {"api/masks.html", "api/attention.html", "api/models/bert.html"} <= set(documented.values())
    # Every cross-reference from a chapter to the library opens the API page that documents that object.
    links = 0
    for chapter in sorted((html / "chapters").glob("*.html")):
        for href in re.findall(r'<a class="reference internal" href="([^"]*#tfcourse\.[^"]+)"', chapter.read_text()):
            path, anchor = href.split("#")
            target = (chapter.parent / path).resolve().relative_to(html.resolve()).as_posix()
            assert documented.get(anchor) == target, f"{chapter.name}: {href} does not open {anchor}'s page"
            links += 1
    assert links >= 20, f"only {links} links from the chapters into the API reference"
    # And in the browser: the chapter on masks links causal_mask, and the link lands on its entry.
    page, errors = open_page(browser, base, "chapters/04-masks.html")
    try:
        page.locator('a.reference.internal[href*="#tfcourse.masks."]').first.click()
        page.wait_for_load_state("load")
        assert page.url.split("#")[0].endswith("/api/masks.html"), page.url
        anchor = page.url.split("#")[1]
        assert page.locator(f'[id="{anchor}"]').is_visible()
        assert not errors, errors
    finally:
        page.close()


@pytest.mark.book
@pytest.mark.pdf
def test_pdf_builds_and_the_landing_page_links_it(browser, site, built_book):
    base, html = site
    build_pdf = _load_tool("build_pdf")
    # Its own process: the tool drives Chromium through Playwright's sync API, which cannot start while this
    # module's browser fixture holds one open in the test process.
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_pdf.py"), "--output", str(html.parents[1])],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    pdf = html / build_pdf.PDF_NAME
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    assert build_pdf.page_count(data) >= 100
    titles = build_pdf.outline_titles(data)
    chapters = [
        re.search(r"^# (.+)$", p.read_text(encoding="utf-8"), re.M).group(1) for p in (ROOT / "chapters").glob("*.md")
    ]
    missing = [title for title in chapters if not any(t.startswith(title) for t in titles)]
    assert not missing, f"chapters missing from the PDF's outline: {missing}"
    page, _ = open_page(browser, base, "intro.html")
    try:
        link = page.locator(f'a[href$="{build_pdf.PDF_NAME}"]')
        assert link.count() == 1, "the landing page does not link the PDF"
        response = page.request.get(link.evaluate("a => a.href"))
        assert response.ok and response.body().startswith(b"%PDF-")
    finally:
        page.close()


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
