"""``tfcourse export gradescope``: the autograder zip, and its real ``run_autograder`` on real submissions.

One course (exercise 1, parts ``test_attention_weights`` 2 points, ``test_self_attention`` 3 and
``test_free_scores`` 1, all with hidden tests) is exported; the zip is unpacked into a temporary
``/autograder`` tree per submission (``$TFCOURSE_AUTOGRADER_ROOT``) and its ``run_autograder`` is run as
Gradescope runs it, with the packages of this environment (``setup.sh`` is only checked, not run). Every
``results.json`` is checked against Gradescope's contract (:func:`check_contract`) and for the expected
scores, and none may hold hidden test code or the course secret. Honest, blank and wrong submissions are
also graded by ``tfcourse grade``: the scores and reasons must be the same. Marked ``grading`` (about two
minutes).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from tests import grading_cases as cases
from tests.grading_attacks import ATTACKS
from tfcourse.grading import gradescope
from tfcourse.grading.mistakes import MESSAGES
from tfcourse.grading.sandbox import sandbox_problem

TFCOURSE = str(Path(sys.executable).with_name("tfcourse"))
E1 = "ch01-self-attention"
NAME = "ps"
PARTS = {"test_attention_weights": 2.0, "test_self_attention": 3.0, "test_free_scores": 1.0}
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}
TOP_FIELDS = {
    "score",
    "execution_time",
    "output",
    "output_format",
    "test_output_format",
    "test_name_format",
    "visibility",
    "stdout_visibility",
    "extra_data",
    "tests",
    "leaderboard",
}
TEST_FIELDS = {
    "score",
    "max_score",
    "status",
    "name",
    "name_format",
    "number",
    "output",
    "output_format",
    "tags",
    "visibility",
    "extra_data",
}
needs_sandbox = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no grading sandbox: {sandbox_problem()}")
pytestmark = pytest.mark.grading


# -- Gradescope's contract ------------------------------------------------------------------------------------


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_contract(results: dict, parts: list[str]) -> None:
    """``results`` is a valid Gradescope results object with one test per part, in order.

    Gradescope's autograder specification: optional top-level fields of known types; tests with numeric
    scores, a score no higher than its maximum, a visibility among Gradescope's four and a known output
    format; the top-level score (which overrides the tests' total on Gradescope) equal to that total.
    """
    assert isinstance(results, dict), results
    assert set(results) <= TOP_FIELDS, set(results) - TOP_FIELDS
    assert _number(results["score"]), results["score"]
    for key in ("output", "output_format", "visibility", "stdout_visibility"):
        assert isinstance(results.get(key, ""), str), key
    assert results.get("visibility", "visible") in VISIBILITIES
    assert results.get("stdout_visibility", "hidden") in VISIBILITIES
    assert results.get("output_format", "simple_format") in FORMATS
    assert _number(results.get("execution_time", 0)) and results.get("execution_time", 0) >= 0
    assert isinstance(results.get("extra_data", {}), dict)
    tests = results["tests"]
    assert isinstance(tests, list) and tests
    for test in tests:
        assert isinstance(test, dict) and set(test) <= TEST_FIELDS, test
        assert isinstance(test["name"], str) and test["name"], test
        assert _number(test["score"]) and _number(test["max_score"]), test
        assert 0 <= test["score"] <= test["max_score"], test
        assert isinstance(test["output"], str), test
        assert test["visibility"] in VISIBILITIES, test
        assert test.get("output_format", "text") in FORMATS, test
        assert test.get("status", "passed") in {"passed", "failed"}, test
        if "status" in test:
            assert (test["status"] == "passed") == (test["score"] >= test["max_score"]), test
        assert isinstance(test.get("number", ""), str), test
    numbers = [t["number"] for t in tests if "number" in t]
    assert len(numbers) == len(set(numbers)), numbers
    assert [t["name"] for t in tests] == parts
    assert math.isclose(results["score"], sum(t["score"] for t in tests), abs_tol=1e-9)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _hidden_lines(source: nbformat.NotebookNode) -> list[str]:
    lines, inside = [], False
    for cell in source.cells:
        for line in cell.source.splitlines():
            if line.strip() == "### BEGIN HIDDEN TESTS":
                inside = True
            elif line.strip() == "### END HIDDEN TESTS":
                inside = False
            elif inside and len(line.strip()) >= 16:
                lines.append(line.strip())
    return lines


# -- the course, the export and the submissions -----------------------------------------------------------------


def _unpack(archive: Path, root: Path) -> None:
    """Unpack as Gradescope does: the zip into ``root/source``, ``run_autograder`` copied to ``root``."""
    source = root / "source"
    source.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            path = Path(zipped.extract(info, source))
            path.chmod(info.external_attr >> 16 & 0o777)
    shutil.copy2(source / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()


def _run(root: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    variables = {**os.environ, gradescope.ROOT_VARIABLE: str(root), gradescope.PYTHON_VARIABLE: sys.executable}
    return subprocess.run(
        [str(root / "run_autograder")],
        cwd=root,
        env={**variables, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _metadata(root: Path, user: dict) -> None:
    (root / "submission_metadata.json").write_text(json.dumps({"id": 1, "users": [user], "assignment": {}}))


def _blank_with(code: str, release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return cases.answer(release, "attention_weights", code)


def _wrong(solved: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Part 1 unscaled (a named mistake, which part 2 inherits), and the test cell of part 3 edited away."""
    return cases.answer(cases.answer(solved, "attention_weights", cases.UNSCALED_WEIGHTS), "test_free_scores", "pass\n")


def _leaking(solved: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Solved, but part 1's function records the dtypes it is called with, and a cell after its test shows them."""
    nb = cases.answer(
        solved,
        "attention_weights",
        "_seen = set()\n\n\ndef attention_weights(q, k):\n    _seen.add(str(q.dtype))\n"
        "    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n",
    )
    at = next(i for i, c in enumerate(nb.cells) if cases.grade_id(c) == "test_attention_weights")
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("raise RuntimeError('seen: ' + ' '.join(sorted(_seen)))"))
    return nb


def _forged(release: nbformat.NotebookNode, canary: Path) -> nbformat.NotebookNode:
    """A blank notebook with cells of its own marked as test cells: run in the grader, they would write ``canary``."""
    nb = copy.deepcopy(release)

    def forged(grade_id: str, code: str) -> nbformat.NotebookNode:
        meta = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id, "points": 100}
        return nbformat.v4.new_code_cell(code, metadata={"nbgrader": {**meta, "schema_version": 3}})

    write = f"open({str(canary)!r}, 'a').write('forged')\n"
    nb.cells.insert(0, forged("test_attention_weights", write))  # an existing test's id, before the real cell
    nb.cells.append(forged("test_forged", write + "answer_free_scores = 21\n"))  # an id the source lacks
    nb.cells.append(forged("test_forged", write))  # and twice
    return nb


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("gradescope")
    course = base / "course"
    subprocess.run([TFCOURSE, "course", "init", str(course)], check=True, capture_output=True)
    done = subprocess.run(
        [TFCOURSE, "assign", str(course), NAME, "--exercises", E1, "--no-validate"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    archive = base / "autograder.zip"
    done = subprocess.run(
        [TFCOURSE, "export", "gradescope", str(course), NAME, "-o", str(archive)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    unsafe = base / "autograder-unsafe.zip"
    gradescope.export(course, NAME, unsafe, unsafe=True, ref="main")
    release = nbformat.read(str(course / "release" / NAME / f"{E1}.ipynb"), as_version=4)
    source = nbformat.read(str(course / "source" / NAME / f"{E1}.ipynb"), as_version=4)
    return {
        "base": base,
        "course": course,
        "zip": archive,
        "unsafe_zip": unsafe,
        "cli": done,
        "release": release,
        "source": source,
        "solved": cases.solved(release, source),
        "secret": (course / ".tfcourse" / "secret").read_text().strip(),
    }


def _submissions(ex: dict) -> dict:
    """``{student: (what to put into the submission folder, metadata user)}``."""
    release, solved, base = ex["release"], ex["solved"], ex["base"]
    rebind = next(a for a in ATTACKS if a.name == "rebind-checks")
    root = _root(ex, "read-source")
    read_source = (
        "import glob, json, os, re\n"
        f"for _p in glob.glob('{root}/source/**/*.ipynb', recursive=True):\n"
        "    for _c in json.load(open(_p))['cells']:\n"
        "        _s = ''.join(_c['source'])\n"
        "        if 'BEGIN SOLUTION' in _s:\n"
        "            exec(re.sub('### (BEGIN|END) SOLUTION', '', _s))\n"
        f"print(os.listdir('{root}'))\n"
        f"print(open('{root}/source/secret').read())\n"
    )
    return {
        "honest": (solved, {"id": "honest"}),
        "blank": (release, {"id": "blank"}),
        "wrong": (_wrong(solved), {"id": "wrong"}),
        "rebind": (_blank_with(rebind.code, release), {"email": "rebind@example.edu", "id": 3}),
        "read-source": (_blank_with(read_source, release), {"email": "reader@example.edu"}),
        "forged-tests": (_forged(release, base / "canary"), {"email": "forger@example.edu"}),
        "leaks-inputs": (_leaking(solved), {"email": "leak@example.edu"}),
        "exits": (_blank_with("import os\nos._exit(1)\n", release), {"email": "exits@example.edu"}),
        "missing": ({"work/" + f"{E1}.ipynb": solved, "notes.txt": "my notes"}, {"email": "m@example.edu"}),
        "garbled": ("{ this is not a notebook", {"email": "g@example.edu"}),
        "link": ("link", {"email": "l@example.edu"}),
    }


def _root(ex: dict, student: str) -> Path:
    return ex["base"] / "runs" / student / "autograder"


def _prepare(ex: dict, student: str, content, user: dict, archive: Path | None = None) -> Path:
    root = _root(ex, student)
    _unpack(archive or ex["zip"], root)
    _metadata(root, user)
    folder = root / "submission"
    target = folder / f"{E1}.ipynb"
    if isinstance(content, nbformat.NotebookNode):
        nbformat.write(content, str(target))
    elif content == "link":
        target.symlink_to(root / "source" / "notebooks" / f"{E1}.ipynb")
    elif isinstance(content, str):
        target.write_text(content)
    else:
        for name, value in content.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, str):
                (folder / name).write_text(value)
            else:
                nbformat.write(value, str(folder / name))
    return root


@pytest.fixture(scope="module")
def graded(exported):
    if sandbox_problem() is not None:
        pytest.skip(f"no grading sandbox here: {sandbox_problem()}")
    ex = exported
    roots = {}
    for student, (content, user) in _submissions(ex).items():
        roots[student] = _prepare(ex, student, content, user)
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(roots, pool.map(_run, roots.values()), strict=True))
    out = {}
    for student, run in runs.items():
        path = roots[student] / "results" / "results.json"
        assert path.is_file(), f"{student}: no results.json\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        out[student] = {"run": run, "results": json.loads(path.read_text()), "root": roots[student]}
    return out


PART_NAMES = [f"{E1}:{p}" for p in PARTS]


def _scores(results: dict) -> dict[str, float]:
    return {t["name"].split(":")[1]: t["score"] for t in results["tests"]}


# -- the zip ------------------------------------------------------------------------------------------------------


def test_the_zip_follows_gradescopes_layout(exported):
    with zipfile.ZipFile(exported["zip"]) as zipped:
        infos = {info.filename: info for info in zipped.infolist()}
        setup = zipped.read("setup.sh").decode()
        manifest = json.loads(zipped.read(gradescope.MANIFEST))
        constraints = zipped.read("constraints.txt").decode()
        secret = zipped.read("secret").decode().strip()
        notebook = zipped.read(f"notebooks/{E1}.ipynb").decode()
        fallback = json.loads(zipped.read(gradescope.FALLBACK))
    for script in ("setup.sh", "run_autograder"):
        assert infos[script].external_attr >> 16 & 0o777 == 0o755, script
    assert infos["secret"].external_attr >> 16 & 0o777 == 0o600
    assert secret == exported["secret"]
    assert "### BEGIN HIDDEN TESTS" in notebook  # the source notebook, hidden tests included
    assert f"release/{E1}.ipynb" in infos
    torch_pin = next(line for line in constraints.splitlines() if line.startswith("torch=="))
    assert f'"{torch_pin}"' in setup and "download.pytorch.org/whl/cpu" in setup
    assert "apt-get install" in setup and "bubblewrap" in setup
    assert '"tfcourse[grading] @ git+https://' in setup and '-c "$SOURCE/constraints.txt"' in setup
    assert subprocess.run(["bash", "-n", "-c", setup]).returncode == 0
    assert manifest["assignment"] == NAME and manifest["unsafe"] is False
    assert [p["grade_id"] for p in manifest["notebooks"][E1]["parts"]] == list(PARTS)
    assert all(p["hidden"] for p in manifest["notebooks"][E1]["parts"])
    check_contract(fallback, PART_NAMES)
    assert "hidden tests and the course secret" in exported["cli"].stdout


def test_a_wheel_can_be_embedded(exported, tmp_path):
    wheel = tmp_path / "tfcourse-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK not really a wheel")
    out = gradescope.export(exported["course"], NAME, tmp_path / "ag.zip", wheel=wheel)
    with zipfile.ZipFile(out.path) as zipped:
        assert zipped.read(f"wheels/{wheel.name}") == wheel.read_bytes()
        setup = zipped.read("setup.sh").decode()
    assert f'"$SOURCE/wheels/{wheel.name}[grading]"' in setup and "git+" not in setup
    with pytest.raises(FileNotFoundError):
        gradescope.export(exported["course"], NAME, tmp_path / "x.zip", wheel=tmp_path / "other.whl")
    with pytest.raises(FileNotFoundError, match="no source notebooks"):
        gradescope.export(exported["course"], "nope", tmp_path / "y.zip", ref="main")


# -- grading ------------------------------------------------------------------------------------------------------


@needs_sandbox
def test_every_results_json_follows_the_contract(graded):
    for student, done in graded.items():
        check_contract(done["results"], PART_NAMES)
        assert done["results"]["extra_data"]["sandbox"] is True, student
        visibility = {t["visibility"] for t in done["results"]["tests"]}
        assert visibility == {"after_published"}, (student, visibility)  # every part has hidden tests


@needs_sandbox
def test_honest_blank_and_wrong_score_what_they_earn(graded):
    honest = graded["honest"]["results"]
    assert honest["score"] == 6 and all(t["output"] == "passed" for t in honest["tests"]), honest
    assert graded["blank"]["results"]["score"] == 0
    wrong = graded["wrong"]["results"]
    scores = _scores(wrong)
    assert scores == {"test_attention_weights": 0, "test_self_attention": 0, "test_free_scores": 1}, wrong
    assert wrong["tests"][0]["output"] == f"attention weights is wrong: {MESSAGES['missing-scale']}."
    assert wrong["tests"][2]["output"] == "passed (the edited test cell was restored)"


@needs_sandbox
@pytest.mark.parametrize("student", ["rebind", "read-source", "forged-tests", "exits"])
def test_hostile_submissions_score_nothing(graded, exported, student):
    results = graded[student]["results"]
    assert results["score"] == 0, results
    assert all(t["output"] for t in results["tests"])  # a reason for every part
    assert not (exported["base"] / "canary").exists()  # no forged cell ran in the grader


@needs_sandbox
@pytest.mark.parametrize(
    ("student", "reason"),
    [
        ("missing", f"not submitted (found work/{E1}.ipynb"),
        ("garbled", "is not a valid notebook"),
        ("link", "symbolic link"),
    ],
)
def test_unusable_submissions_get_every_part_at_zero_with_the_reason(graded, student, reason):
    results = graded[student]["results"]
    assert results["score"] == 0
    assert all(reason in t["output"] for t in results["tests"]), results["tests"]
    if student == "missing":
        assert "ignored in your submission: notes.txt, work" in results["output"]


@needs_sandbox
def test_no_results_json_holds_hidden_tests_or_the_secret(graded, exported):
    hidden = [*_hidden_lines(exported["source"]), "BEGIN HIDDEN TESTS", "hidden: no batch axis"]
    assert len(hidden) > 10
    for student, done in graded.items():
        text = "\n".join(_strings(done["results"]))
        for line in hidden:
            assert line not in text, (student, line)
        assert exported["secret"] not in text, student
        assert exported["secret"] not in done["run"].stdout + done["run"].stderr, student


@needs_sandbox
def test_what_waits_for_publication_does_not_show_earlier(graded):
    results = graded["leaks-inputs"]["results"]
    assert results["score"] == 6, results
    shown = [results["output"], *(t["output"] for t in results["tests"] if t["visibility"] == "visible")]
    assert not any("torch.float64" in text for text in shown), shown  # a hidden test's dtype
    assert "1 error in your cells after the first test cell not shown here" in results["output"]
    assert "seen: torch.float32 torch.float64" in graded["leaks-inputs"]["run"].stdout  # the instructor sees it


@needs_sandbox
def test_the_sandbox_does_not_show_the_autograders_source(graded):
    root = graded["read-source"]["root"]
    assert (root / "source" / "secret").is_file()  # there for the grader, absent in the sandbox
    assert "FileNotFoundError" in graded["read-source"]["results"]["output"]
    assert gradescope._exposed([root / "source"]) == []
    assert gradescope._exposed([Path(sys.prefix) / "autograder" / "source"]) != []


@needs_sandbox
def test_scores_and_reasons_are_those_of_tfcourse_grade(graded, exported):
    course = exported["course"]
    students = ["honest", "blank", "wrong"]
    for student in students:
        content, _ = _submissions(exported)[student]
        cases.write(content, course, student, NAME, E1)
    done = subprocess.run(
        [TFCOURSE, "grade", str(course), NAME, "--no-feedback", "--quiet", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = list(csv.DictReader((course / f"grades-{NAME}.csv").open()))
    for student in students:
        expected = [(r["part"], float(r["score"]), r["reason"]) for r in rows if r["student"] == student]
        tests = graded[student]["results"]["tests"]
        got = [(t["name"], t["score"], t["output"].split("\n\n")[0]) for t in tests]
        assert got == expected, student


def test_without_a_sandbox_grading_is_refused_unless_exported_unsafe(exported, tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH without bubblewrap
    bin_dir.mkdir()
    for tool in ("bash", "mkdir", "rm", "cp"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    solved, user = exported["solved"], {"id": "honest"}
    refused = _prepare(exported, "refused", solved, user)
    run = _run(refused, {"PATH": str(bin_dir)})
    results = json.loads((refused / "results" / "results.json").read_text())
    check_contract(results, PART_NAMES)
    assert results["score"] == 0, run.stdout + run.stderr
    assert "No grading sandbox can be made" in results["output"] and "bubblewrap" in results["output"]
    assert all("no grading sandbox" in t["output"] for t in results["tests"])
    unsafe = _prepare(exported, "unsafe", solved, user, exported["unsafe_zip"])
    run = _run(unsafe, {"PATH": str(bin_dir)})
    results = json.loads((unsafe / "results" / "results.json").read_text())
    check_contract(results, PART_NAMES)
    assert results["score"] == 6, run.stdout + run.stderr
    assert "WITHOUT the grading sandbox" in results["output"]
    assert results["extra_data"]["sandbox"] is False


def test_a_broken_installation_still_writes_results(exported):
    root = _prepare(exported, "broken", exported["solved"], {"id": "x"})
    run = _run(root, {gradescope.PYTHON_VARIABLE: "/nonexistent/python"})
    assert run.returncode != 0
    results = json.loads((root / "results" / "results.json").read_text())
    check_contract(results, PART_NAMES)
    assert results["score"] == 0 and "could not start" in results["tests"][0]["output"]


# -- the pieces, without grading ----------------------------------------------------------------------------------


def test_forged_test_cells_lose_their_metadata(exported, tmp_path):
    source = exported["source"]
    nb = gradescope.trusted_structure(_forged(exported["release"], tmp_path / "canary"), source)
    tests = [(c.metadata["nbgrader"]["grade_id"], c.source) for c in nb.cells if gradescope._is_test(c)]
    assert tests == [(c.metadata["nbgrader"]["grade_id"], c.source) for c in source.cells if gradescope._is_test(c)]
    # the first cell claiming test_attention_weights became that test (so it now runs first, before the answer it
    # checks, as nbgrader's DeduplicateIds would have it); the others are plain learner code, run in the sandbox
    assert cases.grade_id(nb.cells[0]) == "test_attention_weights" and "forged" not in nb.cells[0].source
    forged = [c for c in nb.cells if "forged" in c.source]
    assert len(forged) == 2 and all("nbgrader" not in c.metadata for c in forged)
    # a solution cell turned into a test cell, or into markdown, gets the source's metadata and type back
    nb = copy.deepcopy(exported["solved"])
    cell = next(c for c in nb.cells if cases.grade_id(c) == "self_attention")
    cell.metadata.nbgrader.update(grade=True, solution=False, points=50)
    cell.cell_type = "markdown"
    fixed = gradescope.trusted_structure(nb, source)
    cell = next(c for c in fixed.cells if cases.grade_id(c) == "self_attention")
    assert cell.cell_type == "code" and cell.metadata.nbgrader["solution"] and not gradescope._is_test(cell)


def test_the_student_comes_from_the_submission_metadata(tmp_path):
    assert gradescope._student(tmp_path) == "anonymous"
    for user, expected in [({"email": "a@b.edu", "id": 7}, "a@b.edu"), ({"id": 7}, "7"), ({"name": "x"}, "anonymous")]:
        _metadata(tmp_path, user)
        assert gradescope._student(tmp_path) == expected
    (tmp_path / "submission_metadata.json").write_text("not json")
    assert gradescope._student(tmp_path) == "anonymous"


def test_the_contract_checker_rejects_what_gradescope_would(exported):
    good = gradescope._zero_results(json.loads(json.dumps(_manifest(exported))), "why")
    check_contract(good, PART_NAMES)
    for breaking in (
        lambda r: r.update(score=1.0),
        lambda r: r["tests"][0].update(score=5.0),
        lambda r: r["tests"][0].update(visibility="later"),
        lambda r: r["tests"][0].update(score="0"),
        lambda r: r["tests"].pop(),
        lambda r: r.update(colour="red"),
    ):
        bad = copy.deepcopy(good)
        breaking(bad)
        with pytest.raises(AssertionError):
            check_contract(bad, PART_NAMES)


def _manifest(exported) -> dict:
    with zipfile.ZipFile(exported["zip"]) as zipped:
        return json.loads(zipped.read(gradescope.MANIFEST))
