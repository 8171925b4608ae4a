"""What a learner does, end to end, with the package as it is released and without the repository.

Build the sdist and, from it, the wheel (``python -m build``, as a release does); make a fresh virtual
environment outside the repository; install torch into it first (the exact version of
requirements/constraints.txt), then ``<wheel>[exercises]`` constrained by the same file, and check that torch
was left alone; then, in an empty folder, ``tfcourse exercises``, ``tfcourse get`` and ``tfcourse check``.

Slow (it installs Jupyter and nbgrader into the new environment): marked ``packaging``, and part of the
default run. It skips only when the package index cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tfcourse.grading.catalogue import load_catalogue

from .conftest import ROOT

pytestmark = pytest.mark.packaging

CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
EXERCISE = "ch01-self-attention"
# pip's messages when it cannot reach an index (after its retries), as opposed to a real resolution failure.
_UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|No route to host|ConnectTimeoutError|ProxyError"
)
_TORCH_PROBE = (
    "import json, os, torch; s = os.stat(torch.__file__); "
    "print(json.dumps({'version': torch.__version__, 'file': torch.__file__, 'inode': s.st_ino, "
    "'mtime_ns': s.st_mtime_ns}))"
)


def _pinned(name: str) -> str:
    """``name==version`` as pinned in requirements/constraints.txt."""
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.strip()
    raise AssertionError(f"{name} is not pinned in {CONSTRAINTS}")


def _run(command: list, *, cwd: Path, what: str, timeout: float, env: dict | None = None, index: bool = False):
    """Run ``command``; fail with its output if it fails (skip instead when ``index`` and pip could not connect)."""
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        log = result.stdout + result.stderr
        if index and (unreachable := _UNREACHABLE.search(log)):
            line = next(x for x in log.splitlines() if unreachable.group(0) in x)
            pytest.skip(f"the package index is unreachable ({what}): {line.strip()[:300]}")
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{log[-8000:]}")
    return result


def _learner_env(venv: Path) -> dict[str, str]:
    """The shell of a learner who activated ``venv``: nothing of this checkout or of the test's environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TFCOURSE_EXERCISES")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class Learner:
    venv: Path
    env: dict[str, str]
    wheel: Path
    sdist: Path
    torch_before: dict
    torch_after: dict

    def command(self, name: str) -> Path:
        return self.venv / "bin" / name


@pytest.fixture(scope="module")
def learner(tmp_path_factory) -> Learner:
    base = tmp_path_factory.mktemp("packaging")
    assert not base.resolve().is_relative_to(ROOT), "the learner's environment must lie outside the repository"
    dist = base / "dist"
    _run(
        [sys.executable, "-m", "build", "--outdir", dist, ROOT],
        cwd=base,
        what="python -m build",
        timeout=900,
        index=True,
    )
    (wheel,), (sdist,) = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=base, what="python -m venv", timeout=300)
    python, env = venv / "bin" / "python", _learner_env(venv)
    pip = [python, "-m", "pip", "install", "--retries", "2", "-c", CONSTRAINTS]
    _run([*pip, _pinned("torch")], cwd=base, env=env, what="installing torch", timeout=900, index=True)
    probe = [python, "-c", _TORCH_PROBE]
    before = json.loads(_run(probe, cwd=base, env=env, what="importing torch", timeout=300).stdout)
    _run([*pip, f"{wheel}[exercises]"], cwd=base, env=env, what="installing the wheel", timeout=1500, index=True)
    after = json.loads(_run(probe, cwd=base, env=env, what="importing torch", timeout=300).stdout)
    return Learner(venv, env, wheel, sdist, before, after)


def test_installing_the_wheel_keeps_the_torch_already_there(learner):
    assert learner.torch_before["version"].split("+")[0] == _pinned("torch").split("==")[1]
    assert Path(learner.torch_before["file"]).is_relative_to(learner.venv)
    assert learner.torch_after == learner.torch_before  # same version, same file, not rewritten


def test_the_wheel_carries_the_student_notebooks_and_no_solutions(learner):
    ids = {e.id for e in load_catalogue(validate=False)}
    data = "tfcourse/_data/exercises/"
    with zipfile.ZipFile(learner.wheel) as wheel:
        names = [n for n in wheel.namelist() if n.startswith(data)]
        texts = {n: wheel.read(n).decode("utf-8") for n in names}
    assert f"{data}catalogue.yml" in names
    assert {n.removeprefix(f"{data}student/") for n in names if n.endswith(".ipynb")} == {f"{i}.ipynb" for i in ids}
    assert all(n.startswith(f"{data}student/") for n in names if n.endswith(".ipynb"))
    for name, text in texts.items():
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, name
    with tarfile.open(learner.sdist) as sdist:
        members = [m.split("/", 1)[1] for m in sdist.getnames() if "/" in m]
    assert "exercises/catalogue.yml" in members and "setup.py" in members
    assert {m for m in members if m.startswith("exercises/") and m.endswith(".ipynb")} == {
        f"exercises/student/{i}.ipynb" for i in ids
    }
    assert not [m for m in members if m.startswith("tests/") or (m.startswith("exercises/") and m.endswith(".py"))]


def test_the_installed_package_finds_every_notebook_without_the_repository(learner, tmp_path):
    script = (
        "import json, tfcourse\n"
        "from tfcourse.grading.catalogue import bank_dir, load_catalogue, packaged_bank, student_notebook\n"
        "exercises = load_catalogue()\n"  # validated: parts and points against each notebook
        "missing = [e.id for e in exercises if not student_notebook(e.id).is_file()]\n"
        "print(json.dumps({'package': tfcourse.__file__, 'bank': str(bank_dir()), 'packaged': str(packaged_bank()),"
        " 'ids': [e.id for e in exercises], 'missing': missing}))"
    )
    found = json.loads(
        _run(
            [learner.command("python"), "-c", script], cwd=tmp_path, env=learner.env, what="the catalogue", timeout=300
        ).stdout.splitlines()[-1]
    )
    assert Path(found["package"]).is_relative_to(learner.venv)
    assert found["bank"] == found["packaged"]
    assert sorted(found["ids"]) == sorted(e.id for e in load_catalogue(validate=False))
    assert found["missing"] == []


def test_a_learner_gets_and_checks_a_notebook(learner, tmp_path):
    assert not tmp_path.resolve().is_relative_to(ROOT)
    run = {"cwd": tmp_path, "env": learner.env, "timeout": 600}

    listing = _run([learner.command("tfcourse"), "exercises"], what="tfcourse exercises", **run).stdout
    assert EXERCISE in listing
    get_line, check_line = listing.rstrip("\n").splitlines()[-2:]
    assert "tfcourse get ID" in get_line and "tfcourse check ID.ipynb" in check_line

    _run([learner.command("tfcourse"), "get", EXERCISE], what="tfcourse get", **run)
    notebook = tmp_path / f"{EXERCISE}.ipynb"
    assert notebook.read_bytes() == (ROOT / "exercises" / "student" / notebook.name).read_bytes()

    check = subprocess.run(
        [str(learner.command("tfcourse")), "check", notebook.name], capture_output=True, text=True, **run
    )
    out = check.stdout + check.stderr
    assert check.returncode == 1, out  # ran, and an unsolved notebook does not pass
    assert "visible tests" in out
    assert re.search(r"^part\s+points\s+feedback", out, re.MULTILINE), out
    assert re.search(r"^test_attention_weights\s+0 / 2\s", out, re.MULTILINE), out
    assert re.search(r"^total\s+0 / \d", out, re.MULTILINE), out
    assert "error outside the tests" not in out, out


def test_the_installed_package_carries_the_corpus_tokenizers_and_checkpoints(learner, tmp_path):
    script = (
        "import json\n"
        "from tfcourse import checkpoints, corpus, subword\n"
        "held = subword.corpus_ids('bpe', 'heldout')\n"
        "print(json.dumps({'plays': len(corpus.plays()), 'held': held.numel(),"
        " 'wordpiece': subword.load_tokenizer('wordpiece').get_vocab_size(),"
        " 'checkpoints': checkpoints.checkpoint_names(), 'folder': str(checkpoints.CHECKPOINT_DIR)}))"
    )
    found = json.loads(
        _run(
            [learner.command("python"), "-c", script], cwd=tmp_path, env=learner.env, what="the corpus", timeout=300
        ).stdout.splitlines()[-1]
    )
    assert found["plays"] == 38 and found["held"] > 50_000 and found["wordpiece"] == 2048
    assert Path(found["folder"]).is_relative_to(learner.venv)
    from tfcourse import checkpoints

    assert found["checkpoints"] == checkpoints.checkpoint_names()  # every checkpoint of the book is packaged
