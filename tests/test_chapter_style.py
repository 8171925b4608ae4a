"""Text checks on the chapters' MyST sources: no stale promises, no typed timings, one page structure.

Two kinds of stale text slip into a book that grows: a promise that something "will be linked when it is
released" left standing after it was, and a duration typed by hand ("takes 10-15 s") that the output next to
it contradicts. Durations belong in the output of the cell that measured them. The scanner reads prose (with
maths and inline code removed) and the comments of code cells (found with Python's tokenizer, so strings and
format specs such as ``{name:30s}`` are never mistaken for text). The remaining checks keep every chapter on
the book's layout: the figure style is switched on first, every chapter ends with "Check yourself" and
"Exercises", figures are numbered with a caption and alt text, and code fits the column.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
COLUMN_CHARS = 95  # the widest code line that fits the book's column without scrolling

_UNITS = r"(?:ms|s|secs?|seconds?|mins?|minutes?|hours?)"
_NUMBER = r"\d+(?:[.,]\d+)?"
_TIMING = [
    # "about 10-15 s", "takes 30 seconds", "10 to 30 seconds", "2.5 min"
    re.compile(rf"\b{_NUMBER}(?:\s*(?:-|–|to)\s*{_NUMBER})?\s*{_UNITS}\b(?!\s*[/⁻^])", re.IGNORECASE),
    # "in a few seconds", "several minutes", "a couple of seconds"
    re.compile(r"\b(?:a few|few|several|a couple of|tens of)\s+(?:milli)?(?:seconds|minutes|hours)\b", re.I),
    # "about a second apiece", "in a minute", "under a minute"; "a second handicap" is an ordinal (see below)
    re.compile(r"\b(?:about|under|roughly|around|within|in|takes?|took)\s+(?:a|one|half an?)\s+(second|minute|hour)\b"),
]
_NOT_A_DURATION = {"apiece", "each", "or", "on", "and", "per", "to"}  # words that may follow "a second" (time)
_STALE = re.compile(
    r"\bwill be (?:linked|released|added|published|provided|available|uploaded|filled in)\b"
    r"|\bwill be part of the (?:exercise|bank|book|course|library)\b"
    r"|\bwhen (?:it is|they are|it's) (?:released|ready|published|available)\b"
    r"|\b(?:coming soon|not yet (?:written|released|available)|TODO|TBD|FIXME)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Finding:
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.text!r}"


def _strip_prose(line: str) -> str:
    """A prose line without inline maths, inline code and roles' targets (``{cite:p}`key```)."""
    line = re.sub(r"\$[^$]*\$", " ", line)
    return re.sub(r"`[^`]*`", " ", line)


def _comments(source: str) -> list[tuple[int, str]]:
    """(line offset, text) of every ``#`` comment in a code cell; lines the tokenizer rejects are skipped."""
    lines = [("pass  " + ln[1:]) if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines()]
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [(i, ln.split("#", 1)[1]) for i, ln in enumerate(lines) if ln.lstrip().startswith("#")]
    return [(tok.start[0] - 1, tok.string.lstrip("#")) for tok in tokens if tok.type == tokenize.COMMENT]


def _scan(kind: str, text: str, line: int, found: list[Finding]) -> None:
    if "{cite" in text:  # a duration reported by a cited paper is a quotation, not one of ours
        return
    for pattern in _TIMING:
        for match in pattern.finditer(text):
            if match.lastindex:  # "a second"/"a minute": a duration only when no noun follows
                after = text[match.end() :].split()
                if after and after[0].isalpha() and after[0].lower() not in _NOT_A_DURATION:
                    continue
            found.append(Finding(line, f"typed timing in {kind}", match.group(0)))
    for match in _STALE.finditer(text):
        found.append(Finding(line, f"stale promise in {kind}", match.group(0)))


@dataclass
class Cell:
    line: int  # 1-based line of the opening fence
    options: list[str]  # ":key: value" lines
    source: list[str]


def parse(text: str) -> tuple[list[tuple[int, str]], list[Cell]]:
    """Split a MyST notebook into prose lines (number, text) and code cells; other fences are skipped."""
    prose: list[tuple[int, str]] = []
    cells: list[Cell] = []
    lines = text.splitlines()
    i = 0
    if lines and lines[0] == "---":  # front matter
        i = lines.index("---", 1) + 1
    in_math = False
    while i < len(lines):
        ln = lines[i]
        fence = re.match(r"^(`{3,}|~{3,})\s*(\{[\w-]+\})?", ln)
        if fence:
            marker, directive = fence.group(1), fence.group(2)
            end = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if lines[j].startswith(marker[0] * len(marker)) and lines[j].strip() == marker
                ),
                len(lines),
            )
            body = lines[i + 1 : end]
            if directive == "{code-cell}":
                options = [b for b in body if b.startswith(":")]
                cells.append(Cell(i + 1, options, body[len(options) :]))
            elif directive in ("{dropdown}", "{admonition}", "{note}", "{tip}", "{important}", "{warning}"):
                prose.extend((i + 2 + k, b) for k, b in enumerate(body))
            i = end + 1
            continue
        stripped = ln.strip()
        one_line_math = len(stripped) > 4 and stripped.startswith("$$") and stripped.endswith("$$")
        if not one_line_math and (stripped.startswith("$$") or (in_math and stripped.endswith("$$"))):
            in_math = not in_math
        elif not in_math and not one_line_math:
            prose.append((i + 1, ln))
        i += 1
    return prose, cells


def stale_text(text: str) -> list[Finding]:
    """Typed timings and stale promises in a chapter's prose and in its code cells' comments."""
    found: list[Finding] = []
    prose, cells = parse(text)
    for number, line in prose:
        _scan("prose", _strip_prose(line), number, found)
    for cell in cells:
        offset = cell.line + len(cell.options) + 1
        for k, comment in _comments("\n".join(cell.source)):
            _scan("a code comment", comment, offset + k, found)
    return found


# ---------------------------------------------------------------------------------------------- the scanner


@pytest.mark.parametrize(
    "text",
    [
        "The graded notebook will be linked here when it is released.",
        "We train three versions for 400 steps each (about a second apiece).",
        "600 steps take 10 to 30 seconds on a laptop CPU.",
        "It learns to reverse sequences in a few seconds.",
        "```{code-cell} ipython3\nresult = train(progress=False)  # CPU, about 10-15 s\n```",
        "The exercise bank will be part of the course soon. TODO",
        "Training takes 2.5 min on a GPU.",
    ],
)
def test_scanner_flags_stale_text(text):
    assert stale_text(text), text


@pytest.mark.parametrize(
    "text",
    [
        "Positive semi-definiteness adds a second handicap.",
        "RealFormer adds a second residual path; a second view of the same sum.",
        '```{code-cell} ipython3\nprint(f"{name:30s} {ms:6.1f} ms")  # one row per pattern\n```',
        "The output printed above says how long it took. Its learning rate is $10^{-4}$ with $s = 3$.",
        "Throughput is 1,200 tokens per second on a 2 s/step schedule.",
        "The big model trained for 3.5 days on 8 GPUs {cite:p}`vaswani2017attention`.",
        "The answer will be the same at every depth; `steps=600` and 64 sequences.",
        "$$\nT = 10 s\n$$",
    ],
)
def test_scanner_leaves_legitimate_text_alone(text):
    assert not stale_text(text), stale_text(text)


def test_scanner_finds_the_errors_it_was_written_for():
    """The texts that motivated the scanner, as they stood in the chapters."""
    ch13 = (
        "## Exercises\n\nThe graded notebook for this chapter will be part of the exercise bank (`exercises/`)"
        " and will be linked\nhere when it is released.\n"
    )
    ch07 = "```{code-cell} ipython3\nresult = train_reversal(progress=False)  # CPU, about 10-15 s\n```\n"
    assert {f.kind for f in stale_text(ch13)} == {"stale promise in prose"}
    assert [f.text for f in stale_text(ch07)] == ["10-15 s"]


# ---------------------------------------------------------------------------------------------- the chapters

ids = [p.stem for p in CHAPTERS]


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_no_stale_promises_or_typed_timings(path):
    found = stale_text(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name}:\n  " + "\n  ".join(map(str, found))


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_chapter_ends_with_check_yourself_and_exercises(path):
    text = path.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings[-2:] == ["Check yourself", "Exercises"], f"{path.name}: last sections are {headings[-2:]}"
    check, exercises = text.split("\n## Check yourself\n")[1].split("\n## Exercises\n")
    assert 3 <= check.count("{dropdown}") <= 10, f"{path.name}: Check yourself needs 3 or more answered questions"
    assert 2 <= exercises.count("{dropdown}") <= 4, f"{path.name}: Exercises need 2-4 questions with hints"
    assert re.search(r"^```\{exercise\} ch\d\d-[a-z0-9-]+$", exercises, flags=re.MULTILINE), path.name


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_first_code_cell_applies_the_book_style(path):
    _, cells = parse(path.read_text(encoding="utf-8"))
    first = "\n".join(cells[0].source)
    assert "use_book_style()" in first, f"{path.name}: the first code cell must call use_book_style()"
    assert any(re.search(r"(hide-input|remove-cell|remove-input)", o) for o in cells[0].options), path.name


_PLOT = re.compile(r"\b(plt\.subplots|plt\.figure|plt\.show|plot_\w+\(|fig\.)")


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_figures_are_hidden_numbered_captioned_and_fit_the_column(path):
    problems = []
    for cell in parse(path.read_text(encoding="utf-8"))[1]:
        source, options = "\n".join(cell.source), "\n".join(cell.options)
        for size in re.findall(r"figsize=\(\s*([\d.]+)\s*,", source):
            if float(size) > 6.4:
                problems.append(f"line {cell.line}: figsize width {size} in is wider than the 6.4 in column")
        if not _PLOT.search(source) or "plt.close" in source:
            continue
        if source.count("plt.show()") > 1:
            problems.append(f"line {cell.line}: more than one figure in a cell")
        if "hide-input" not in options and "remove-input" not in options:
            problems.append(f"line {cell.line}: a plotting cell without :tags: [hide-input]")
        for key in ("caption", "name", "alt"):
            if not re.search(rf"^:\s+{key}: \S", options, flags=re.MULTILINE):
                problems.append(f"line {cell.line}: figure metadata lacks a {key}")
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_code_lines_fit_the_column(path):
    wide = [
        f"line {cell.line + len(cell.options) + 1 + k}: {len(ln)} characters"
        for cell in parse(path.read_text(encoding="utf-8"))[1]
        for k, ln in enumerate(cell.source)
        if len(ln) > COLUMN_CHARS
    ]
    assert not wide, f"{path.name}: code lines wider than {COLUMN_CHARS} characters scroll sideways:\n  " + (
        "\n  ".join(wide)
    )


def test_figure_names_are_unique_across_the_book():
    names = [
        (path.name, m)
        for path in CHAPTERS
        for m in re.findall(r"^:\s+name: (\S+)", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    ]
    seen = [n for _, n in names]
    assert len(seen) == len(set(seen)), sorted({n for n in seen if seen.count(n) > 1})


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_cell_options_are_valid_yaml_and_figures_have_text(path):
    """A colon in an unquoted caption breaks the page's cell metadata; captions and alt text are real sentences."""
    yaml = pytest.importorskip("yaml")
    for cell in parse(path.read_text(encoding="utf-8"))[1]:
        options = yaml.safe_load("\n".join(o[1:] for o in cell.options)) or {}
        figure = options.get("mystnb", {}).get("figure")
        if figure:
            alt = options["mystnb"].get("image", {}).get("alt", "")
            assert len(figure.get("caption", "").split()) >= 6, f"{path.name} line {cell.line}: caption too short"
            assert len(alt.split()) >= 4 and not alt.endswith((".svg", ".png")), f"{path.name} line {cell.line}"
            assert figure["name"].startswith(f"fig-ch{path.name[:2]}-"), f"{path.name} line {cell.line}"


def test_maths_has_no_escaped_underscore_in_text():
    """``\\text{max\\_distance}`` renders with a literal backslash in the book's maths; use a symbol instead."""
    bad = [(p.name, m) for p in CHAPTERS for m in re.findall(r"\\text\{[^}]*\\_[^}]*\}", p.read_text(encoding="utf-8"))]
    assert not bad, bad


def test_exercise_parts_have_titles_from_their_notebooks():
    """The exercise directive lists each graded part under the heading of its notebook section."""
    import sys

    yaml = pytest.importorskip("yaml")
    pytest.importorskip("sphinx")
    sys.path.insert(0, str(ROOT / "_ext"))
    try:
        from exercise_links import part_titles
    finally:
        sys.path.remove(str(ROOT / "_ext"))
    catalogue = yaml.safe_load((ROOT / "exercises" / "catalogue.yml").read_text(encoding="utf-8"))
    for entry in catalogue["exercises"]:
        titles = part_titles(ROOT / "exercises" / "student" / f"{entry['id']}.ipynb")
        assert [p["id"] for p in entry["parts"]] == list(titles), entry["id"]
        for title in titles.values():
            assert title and "points" not in title and not title[0].isdigit() and not title.startswith("test_"), title
        chapter = CHAPTERS[entry["chapter"] - 1].read_text(encoding="utf-8")
        assert f"```{{exercise}} {entry['id']}\n" in chapter, entry["id"]
