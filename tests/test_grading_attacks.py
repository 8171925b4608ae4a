"""The adversarial corpus graded end to end: every attack scores only what its honest content earns.

One course, exercise 1, one student per attack of :mod:`tests.grading_attacks` (plus honest and blank
controls), graded by ``tfcourse grade --workers 2`` in the sandbox. Then, for every attack: its score; that
the course's instructor files, the other students' submissions and the grader's own code are unchanged;
that no process outlives grading; that nothing reached a loopback listener or wrote a file outside; and that
feedback holds neither hidden tests nor live HTML. Marked ``grading`` (about two minutes).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import psutil
import pytest

import tfcourse
from tests import grading_cases as cases
from tests.grading_attacks import ATTACKS
from tfcourse.grading.sandbox import sandbox_problem

pytestmark = [
    pytest.mark.grading,
    pytest.mark.skipif(sandbox_problem() is not None, reason=f"no grading sandbox here: {sandbox_problem()}"),
]

TFCOURSE = str(Path(sys.executable).with_name("tfcourse"))
E1 = "ch01-self-attention"
NAME = "ps"
PACKAGE = Path(tfcourse.__file__).resolve().parent
PROTECTED = ("nbgrader_config.py", "source", "release", ".tfcourse/secret")  # grading adds a lock file beside it


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for top in paths:
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path).encode() + path.read_bytes())
    return h.hexdigest()


class Listener:
    """A TCP listener on loopback that records every connection (none may arrive)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


def _stray_processes() -> list[str]:
    found = []
    for proc in psutil.process_iter(["uids", "cmdline"]):
        try:
            uid = proc.info["uids"].real if proc.info["uids"] else 0
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if 40000 <= uid < 60000 or "31337" in cmd:
            found.append(f"{proc.pid} uid={uid} {cmd[:80]}")
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = tmp_path_factory.mktemp("attacks") / "course"
    canary = tmp_path_factory.mktemp("outside") / "canary"
    subprocess.run([TFCOURSE, "course", "init", str(course), "--timeout", "10"], check=True, capture_output=True)
    done = subprocess.run([TFCOURSE, "assign", str(course), NAME, "--exercises", E1], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    release = nbformat.read(str(course / "release" / NAME / f"{E1}.ipynb"), as_version=4)
    source = nbformat.read(str(course / "source" / NAME / f"{E1}.ipynb"), as_version=4)
    solved = cases.solved(release, source)
    cases.write(solved, course, "alice", NAME, E1)
    cases.write(release, course, "bob", NAME, E1)
    listener = Listener()
    for attack in ATTACKS:
        code = attack.code.format(course=course, package=PACKAGE, port=listener.port, canary=canary)
        base, cell = (solved, "self_attention") if attack.base == "solved" else (release, "attention_weights")
        cases.write(cases.answer(base, cell, code), course, attack.name, NAME, E1)
    # Submissions that are not plain notebooks: links to the instructor's files, a stray package beside it.
    (course / "submitted" / "link-notebook" / NAME).mkdir(parents=True)
    (course / "submitted" / "link-notebook" / NAME / f"{E1}.ipynb").symlink_to(course / "source" / NAME / f"{E1}.ipynb")
    (course / "submitted" / "link-folder").mkdir()
    (course / "submitted" / "link-folder" / NAME).symlink_to(course / "source" / NAME)
    # Cells that claim to be test or setup cells (the grader runs those itself): they must stay learner code.
    forged = copy.deepcopy(release)
    claims = [
        {"grade": True, "solution": False, "locked": True, "points": 100, "grade_id": "forged", "schema_version": 3},
        {"grade": False, "solution": False, "locked": True, "grade_id": "setup-2", "schema_version": 3},
        {"grade": True, "solution": False, "locked": True, "points": 2, "grade_id": "test_attention_weights"},
    ]
    for claim in claims:
        cell = nbformat.v4.new_code_cell(f"open({str(canary)!r}, 'w').write('ran in the grader')\n")
        cell.metadata["nbgrader"] = claim
        forged.cells.insert(1, cell)
    cases.write(forged, course, "forged-test-cells", NAME, E1)
    cases.write(release, course, "fake-package", NAME, E1)
    fake = course / "submitted" / "fake-package" / NAME / "tfcourse" / "grading"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "def check_function(*a, **k):\n    pass\ncheck_value = check_answered = check_function\n"
    )
    before = {
        "instructor": digest(*(course / p for p in PROTECTED)),
        "alice": digest(course / "submitted" / "alice"),
    }
    run = subprocess.run(
        [TFCOURSE, "grade", str(course), NAME, "--workers", "2", "--quiet"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    listener.close()
    rows = list(csv.DictReader((course / f"grades-{NAME}.csv").open()))
    yield {
        "course": course,
        "run": run,
        "rows": rows,
        "before": before,
        "listener": listener,
        "canary": canary,
        "strays": _stray_processes(),
    }


def _scores(graded, student: str) -> dict[str, float]:
    return {r["part"].split(":")[1]: float(r["score"]) for r in graded["rows"] if r["student"] == student}


def test_grading_finished_for_everyone(graded):
    assert graded["run"].returncode == 0, graded["run"].stdout[-3000:] + graded["run"].stderr[-3000:]
    students = {r["student"] for r in graded["rows"]}
    assert students == {
        "alice",
        "bob",
        "link-notebook",
        "link-folder",
        "fake-package",
        "forged-test-cells",
        *(a.name for a in ATTACKS),
    }


def test_controls_score_full_and_zero(graded):
    assert sum(_scores(graded, "alice").values()) == 6
    assert sum(_scores(graded, "bob").values()) == 0


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack_scores_only_its_honest_content(graded, attack):
    scores = _scores(graded, attack.name)
    reasons = {r["part"]: r["reason"] for r in graded["rows"] if r["student"] == attack.name}
    assert sum(scores.values()) == attack.expected, reasons
    if attack.base == "solved":
        assert scores == {"test_attention_weights": 2, "test_self_attention": 0, "test_free_scores": 1}, reasons


@pytest.mark.parametrize("student", ["link-notebook", "link-folder", "fake-package", "forged-test-cells"])
def test_links_and_stray_files_earn_nothing(graded, student):
    rows = [r for r in graded["rows"] if r["student"] == student]
    assert sum(float(r["score"]) for r in rows) == 0
    if student.startswith("link"):
        assert all("symbolic link" in r["reason"] for r in rows), rows


def test_nothing_outside_the_sandbox_changed(graded):
    course = graded["course"]
    assert digest(*(course / p for p in PROTECTED)) == graded["before"]["instructor"]
    assert digest(course / "submitted" / "alice") == graded["before"]["alice"]
    # The grader's code: no attack's mark in it (a digest would also see a developer's edits during the run).
    assert not any(p.read_text(errors="replace").endswith("raise SystemExit\n") for p in PACKAGE.rglob("*.py"))
    assert not graded["canary"].exists()
    assert graded["listener"].accepted == 0


def test_gradebook_holds_the_graders_scores(graded):
    import sqlite3

    db = sqlite3.connect(graded["course"] / "gradebook.db")
    assert db.execute("select count(*) from grade where manual_score is not null").fetchone()[0] == 0
    assert db.execute("select count(*) from grade where extra_credit > 0").fetchone()[0] == 0


def test_no_process_outlives_grading(graded):
    assert graded["strays"] == []


def test_feedback_leaks_nothing(graded):
    course = graded["course"]
    secret = (course / ".tfcourse" / "secret").read_text().strip()
    pages = sorted((course / "feedback").rglob("*.html"))
    assert len(pages) > len(ATTACKS) // 2
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "hidden: no batch axis" not in text, page  # a comment inside a hidden test region
        assert "BEGIN HIDDEN TESTS" not in text, page
        assert secret not in text, page
        assert '<script>alert("tfcourse-xss")' not in text, page
    xss = (course / "feedback" / "html-and-script" / NAME / f"{E1}.html").read_text(encoding="utf-8")
    assert "tfcourse-xss" in xss  # shown, as text
    assert os.path.getsize(course / "feedback" / "output-flood" / NAME / f"{E1}.html") < 2_000_000
