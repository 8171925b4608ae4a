"""An assignment as a Gradescope autograder: the export (``tfcourse export gradescope``) and the grader it runs.

Gradescope's autograder contract: a zip with ``setup.sh`` (run once, as root, when Gradescope builds the
image) and ``run_autograder`` (run once per submission) at its root. At run time the zip's contents are in
``/autograder/source``, the submission in ``/autograder/submission``, Gradescope's submission metadata in
``/autograder/submission_metadata.json``, and the results go to ``/autograder/results/results.json``::

    {"score": 5.0, "output": "...", "visibility": "visible", "stdout_visibility": "hidden",
     "tests": [{"name": "ch01-self-attention:test_attention_weights", "number": "1.1", "score": 2.0,
                "max_score": 2.0, "status": "passed", "output": "passed", "visibility": "after_published"}, ...]}

The root ``/autograder`` can be moved with ``$TFCOURSE_AUTOGRADER_ROOT`` (tests run the real
``run_autograder`` in a temporary tree) and the interpreter with ``$TFCOURSE_AUTOGRADER_PYTHON``.

What the zip holds (:func:`export`): the assignment's *source* notebooks (hidden tests included: they stay in
the zip, never in the results), the released ones, the course's secret (it seeds each part's inputs, as
``tfcourse grade`` does), the pinned requirements, the course's limits, and the two scripts. ``setup.sh``
installs Debian's bubblewrap and ``tfcourse[grading]`` (from the repository at a fixed commit, or from a wheel
embedded with ``--wheel``) into ``/opt/tfcourse``, torch pinned to the constraints' version (CPU build).

How one submission is graded (:func:`grade_submission`), with the same trusted pieces as ``tfcourse grade``:

* **intake**: only the assignment's notebooks, at the top of the submission, as regular files of a sane size
  that parse as notebooks (the checks and messages of :func:`~tfcourse.grading.intake.take_in`); anything
  else is ignored and listed;
* **the notebook's structure comes from the source** (:func:`trusted_structure`), as nbgrader's sanitising
  steps (``DeduplicateIds``, ``OverwriteCells``) make it in ``tfcourse grade``: a cell's nbgrader metadata is
  the source's for the same grade id, a grade id seen twice or one the source lacks loses its metadata (it is
  then learner code, run in the sandbox; ``tfcourse grade`` fails such a notebook, 0 points, in nbgrader), and
  locked cells (tests, setup) are restored (:func:`~tfcourse.grading.runner.restore_locked_cells`). Without
  this step a learner could mark a cell of their own as a test cell, which
  :func:`~tfcourse.grading.scoring.score_notebook` would run in the grader;
* **scoring**: :func:`~tfcourse.grading.scoring.score_notebook` in the sandbox with the course's limits and
  ``Seeds(secret, student, assignment, notebook)``, the student being the submitter's e-mail (or Gradescope
  id) from the submission metadata. Each part's score and reason are those of ``tfcourse grade`` (with its
  notes on restored test cells);
* **results**: one test per part, named ``notebook:grade_id`` like the grades CSV. A part with hidden tests
  gets the export's ``hidden_visibility`` (default ``after_published``: Gradescope shows it, and the total,
  once grades are published, so resubmitting cannot probe the hidden tests); other parts are ``visible``. A
  test's output is the part's reason and the checks' messages, never test code or hidden inputs (as in
  feedback); lines of hidden test code are also removed from it, should a message quote one.

Whatever happens (nothing submitted, a crash, no sandbox), ``results.json`` gets every part with a score and
a reason. Where no sandbox can be made in the container, grading is refused (every part 0, the top-level
output says why) unless the export was made with ``--unsafe``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tfcourse.grading.structure import grade_id as _grade_id
from tfcourse.grading.structure import is_test as _is_test
from tfcourse.grading.structure import trusted_structure

__all__ = [
    "HIDDEN_VISIBILITIES",
    "MANIFEST",
    "REPOSITORY",
    "ROOT_VARIABLE",
    "Export",
    "export",
    "grade_submission",
    "main",
    "trusted_structure",
]

ROOT_VARIABLE = "TFCOURSE_AUTOGRADER_ROOT"
PYTHON_VARIABLE = "TFCOURSE_AUTOGRADER_PYTHON"
DEFAULT_ROOT = "/autograder"
VENV = "/opt/tfcourse"
MANIFEST = "tfcourse-autograder.json"
FALLBACK = "fallback-results.json"
FORMAT = 1
REPOSITORY = "https://github.com/tfcourse/tfcourse"
"""Where ``setup.sh`` installs tfcourse from when the package metadata names no repository."""
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
HIDDEN_VISIBILITIES = ("after_published", "after_due_date", "hidden", "visible")
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
MAX_OUTPUT = 20_000
_GRADING_PACKAGES = ("torch", "numpy", "nbgrader", "nbformat", "traitlets", "pyyaml", "psutil", "safetensors")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same inputs give the same zip


# -- the export ---------------------------------------------------------------------------------------------


@dataclass
class Export:
    """What :func:`export` wrote: the zip, how Gradescope will install tfcourse, and warnings for the user."""

    path: Path
    notebooks: list[str]
    install: str
    warnings: list[str] = field(default_factory=list)


def _hidden_region(source: str) -> bool:
    from tfcourse.grading.scoring import HIDDEN_BEGIN

    return HIDDEN_BEGIN in source


def _parts(source) -> list[dict]:
    """``[{grade_id, points, hidden}]`` of a source notebook's test cells, in order."""
    parts = []
    for cell in source.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            parts.append(
                {
                    "grade_id": str(meta.get("grade_id")),
                    "points": float(meta.get("points", 0) or 0),
                    "hidden": _hidden_region(cell.source),
                }
            )
    return parts


def _package_root() -> Path:
    import tfcourse

    return Path(tfcourse.__file__).resolve().parent


def _constraints() -> tuple[str, str]:
    """``(text, where from)``: ``requirements/constraints.txt`` next to the package, else the installed versions."""
    pinned = _package_root().parent / "requirements" / "constraints.txt"
    if pinned.is_file():
        return pinned.read_text(encoding="utf-8"), "requirements/constraints.txt"
    names = dict.fromkeys(_GRADING_PACKAGES)
    for requirement in importlib.metadata.requires("tfcourse") or []:
        name, _, marker = requirement.partition(";")
        if "extra" in marker and "grading" not in marker:  # another extra's dependency
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", name)
        if match:
            names[match.group(1)] = None
    lines = ["# Installed versions of tfcourse's grading dependencies, written by `tfcourse export gradescope`."]
    for name in names:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name).split('+')[0]}")  # CPU or CUDA build alike
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n", "the installed versions"


def _torch_pin(constraints: str) -> str:
    match = re.search(r"^torch==([^\s;#]+)", constraints, re.MULTILINE)
    if match:
        return match.group(1).split("+")[0]
    import torch

    return torch.__version__.split("+")[0]


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _source_of_package(warnings: list[str]) -> tuple[str, str]:
    """``(repository, ref)`` that installs the tfcourse running now: pip's record, the checkout, or the version."""
    dist = importlib.metadata.distribution("tfcourse")
    repository = None
    for entry in dist.metadata.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("repository", "source", "homepage") and url.strip().startswith("http"):
            repository = repository or url.strip()
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    vcs = direct.get("vcs_info") or {}
    if vcs.get("vcs") == "git" and vcs.get("commit_id"):
        return str(direct.get("url") or repository or REPOSITORY), str(vcs["commit_id"])
    repository = repository or REPOSITORY
    checkout = _package_root().parent
    commit = _git("rev-parse", "HEAD", cwd=checkout) if (checkout / ".git").exists() else None
    if commit:
        if _git("status", "--porcelain", "--", "tfcourse", cwd=checkout):
            warnings.append(
                f"the checkout has uncommitted changes under tfcourse/: Gradescope will install commit "
                f"{commit[:12]} without them (commit and push them, or pass --wheel)"
            )
        warnings.append(f"Gradescope installs commit {commit[:12]} from {repository}: it must be pushed there")
        return repository, commit
    import tfcourse

    version = getattr(tfcourse, "__version__", dist.version)
    warnings.append(f"Gradescope installs tag v{version} from {repository} (pass --ref to choose another)")
    return repository, f"v{version}"


def _limits(root: Path) -> tuple[int, int]:
    """``(timeout, memory_mb)`` of the course's grading, as :func:`~tfcourse.grading.course.make_api` sets them."""
    from tfcourse.grading.course import load_config
    from tfcourse.grading.settings import Limits

    config = load_config(root)
    section = config.GradeInSandbox
    timeout = int(section.timeout) if "timeout" in section else int(config.Execute.get("timeout", Limits().timeout))
    memory = int(section.memory_mb) if "memory_mb" in section else Limits().memory_mb
    return timeout, memory


_SETUP = """\
#!/usr/bin/env bash
# Written by `tfcourse export gradescope`. Gradescope runs it once, as root, when it builds the autograder image:
# it installs bubblewrap (the grading sandbox) and tfcourse with its grading tools into {venv}.
set -euo pipefail
SOURCE="${{{root_variable}:-{default_root}}}/source"
VENV={venv}
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends bubblewrap util-linux ca-certificates git python3 python3-venv python3-pip
python3 - <<'EOF'
import sys
if sys.version_info < {python!r}:
    raise SystemExit(
        "tfcourse autograder: the pinned requirements need Python {python_text} or newer and this image has "
        + sys.version.split()[0] + ": choose a newer base image in Gradescope's autograder settings "
        "(Ubuntu 24.04 has Python 3.12), or export from an older Python"
    )
EOF
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
# torch first, the CPU build of the pinned version (no GPU here; the CUDA build is several GB)
"$VENV/bin/python" -m pip install --index-url {torch_index} "torch=={torch}"
"$VENV/bin/python" -m pip install -c "$SOURCE/constraints.txt" {package}
chmod -R go= "$SOURCE"  # the hidden tests and the course secret: root only (the sandbox does not show them at all)
"$VENV/bin/python" -c "from tfcourse.grading.sandbox import sandbox_problem as p; print('sandbox:', p() or 'ok')"
"""

_RUN = """\
#!/usr/bin/env bash
# Written by `tfcourse export gradescope`. Gradescope runs it once per submission: it grades
# $ROOT/submission with tfcourse's grader and writes $ROOT/results/results.json.
set -u
ROOT="${{{root_variable}:-{default_root}}}"
PYTHON="${{{python_variable}:-{venv}/bin/python}}"
mkdir -p "$ROOT/results"
rm -f "$ROOT/results/results.json"
"$PYTHON" -m tfcourse.grading.gradescope --root "$ROOT"
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
    # the grader could not even start (an installation problem): every part 0, with the reason
    cp "$ROOT/source/{fallback}" "$ROOT/results/results.json"
fi
exit $status
"""


def _zip_add(archive: zipfile.ZipFile, name: str, data: bytes | str, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data.encode("utf-8") if isinstance(data, str) else data)


def export(
    course: Path | str,
    assignment: str,
    out: Path | str,
    *,
    wheel: Path | str | None = None,
    unsafe: bool = False,
    repository: str | None = None,
    ref: str | None = None,
    hidden_visibility: str = "after_published",
) -> Export:
    """Write the Gradescope autograder zip of ``assignment`` (see the module docstring).

    Args:
        course: the course folder (``tfcourse course init``).
        assignment: the assignment, assigned already (``source/ASSIGNMENT/*.ipynb``).
        out: the zip to write (replaced if it exists).
        wheel: a built ``tfcourse-*.whl`` to embed and install instead of installing from the repository.
        unsafe: grade without a sandbox where the container cannot make one (learner code then runs as root
            in Gradescope's container, where it can read the hidden tests and forge its results).
        repository, ref: where ``setup.sh`` installs tfcourse from (default: the package's metadata and the
            commit or version running now).
        hidden_visibility: Gradescope visibility of the parts that have hidden tests.

    Raises:
        FileNotFoundError: no course, no such assignment, no such wheel.
        ValueError: an invalid option.
    """
    from tfcourse.grading.course import course_secret, load_config
    from tfcourse.grading.runner import read_notebook, release_version

    if hidden_visibility not in HIDDEN_VISIBILITIES:
        raise ValueError(
            f"hidden_visibility must be one of {', '.join(HIDDEN_VISIBILITIES)}, got {hidden_visibility!r}"
        )
    root = Path(course).resolve()
    config = load_config(root)  # fails with a hint when this is not a course
    folder = root / "source" / assignment
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no source notebooks in {folder}; run `tfcourse assign {root} {assignment}` first")
    warnings: list[str] = []
    timeout, memory_mb = _limits(root)
    constraints, constraints_from = _constraints()
    torch = _torch_pin(constraints)
    notebooks: dict[str, dict] = {}
    files: dict[str, bytes] = {}
    for path in paths:
        source = read_notebook(path)
        parts = _parts(source)
        if not parts:
            warnings.append(f"{path.name} has no graded parts")
        notebooks[path.stem] = {"parts": parts}
        files[f"notebooks/{path.name}"] = path.read_bytes()
        released = root / "release" / assignment / path.name
        if released.is_file():
            files[f"release/{path.name}"] = released.read_bytes()
        else:
            import nbformat

            files[f"release/{path.name}"] = nbformat.writes(release_version(source)).encode("utf-8")
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file() or not wheel.name.startswith("tfcourse-") or wheel.suffix != ".whl":
            raise FileNotFoundError(f"{wheel} is not a tfcourse wheel (build one with `python -m build --wheel`)")
        files[f"wheels/{wheel.name}"] = wheel.read_bytes()
        package = f'"$SOURCE/wheels/{wheel.name}[grading]"'
        install = {"wheel": f"wheels/{wheel.name}"}
        described = f"the embedded wheel {wheel.name}"
    else:
        if ref is None or repository is None:
            found_repository, found_ref = _source_of_package([] if ref is not None else warnings)
            repository, ref = repository or found_repository, ref or found_ref
        url = repository if repository.startswith("git+") else f"git+{repository}"
        package = f'"tfcourse[grading] @ {url}@{ref}"'
        install = {"repository": repository, "ref": ref}
        described = f"{repository} at {ref}"
    import tfcourse

    manifest = {
        "format": FORMAT,
        "assignment": assignment,
        "course_id": str(config.CourseDirectory.get("course_id", "")),
        "notebooks": notebooks,
        "timeout": timeout,
        "memory_mb": memory_mb,
        "unsafe": bool(unsafe),
        "hidden_visibility": hidden_visibility,
        "tfcourse": getattr(tfcourse, "__version__", "unknown"),
        "python": list(sys.version_info[:2]),
        "torch": torch,
        "install": install,
        "constraints_from": constraints_from,
    }
    python = tuple(sys.version_info[:2])
    setup = _SETUP.format(
        root_variable=ROOT_VARIABLE,
        default_root=DEFAULT_ROOT,
        venv=VENV,
        python=python,
        python_text=".".join(map(str, python)),
        torch_index=TORCH_CPU_INDEX,
        torch=torch,
        package=package,
    )
    run = _RUN.format(
        root_variable=ROOT_VARIABLE,
        default_root=DEFAULT_ROOT,
        python_variable=PYTHON_VARIABLE,
        venv=VENV,
        fallback=FALLBACK,
    )
    fallback = _zero_results(manifest, "the autograder could not start; your instructor has been told (see stdout)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    with zipfile.ZipFile(partial, "w") as archive:
        _zip_add(archive, "setup.sh", setup, 0o755)
        _zip_add(archive, "run_autograder", run, 0o755)
        _zip_add(archive, MANIFEST, json.dumps(manifest, indent=1) + "\n")
        _zip_add(archive, "constraints.txt", constraints)
        _zip_add(archive, "secret", course_secret(root) + b"\n", 0o600)
        _zip_add(archive, FALLBACK, json.dumps(fallback, indent=1) + "\n")
        for name, data in sorted(files.items()):
            _zip_add(archive, name, data, 0o600 if name.startswith("notebooks/") else 0o644)
    os.replace(partial, out)
    return Export(out, list(notebooks), described, warnings)


# -- grading one submission -----------------------------------------------------------------------------------


@dataclass
class _Intake:
    accepted: dict[str, bytes] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # notebook: why it is not graded
    ignored: list[str] = field(default_factory=list)


def _mirror(entry: os.DirEntry, target: Path) -> None:
    """Put at ``target`` what :func:`~tfcourse.grading.intake.take_in` needs to judge ``entry`` as it would the
    original: the file itself (a hard link, else a copy, or an empty file of its size if it is too large to
    grade anyway), the same link, or a FIFO standing for anything that is not a regular file."""
    from tfcourse.grading.intake import MAX_NOTEBOOK_BYTES

    info = entry.stat(follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(entry.path), target)
    elif not stat.S_ISREG(info.st_mode):
        os.mkfifo(target)
    else:
        try:
            os.link(entry.path, target, follow_symlinks=False)
        except OSError:
            if info.st_size > MAX_NOTEBOOK_BYTES:
                with open(target, "wb") as handle:
                    handle.truncate(info.st_size)
            else:
                shutil.copyfile(entry.path, target, follow_symlinks=False)


def _take_in(folder: Path, assignment: str, notebooks: list[str], stage: Path) -> _Intake:
    """Gradescope's submission folder through :func:`~tfcourse.grading.intake.take_in` (its checks and messages).

    ``take_in`` reads ``submitted/<student>/<assignment>/`` of a course folder, so the top-level entries of the
    submission are mirrored into such a folder under ``stage`` (nothing is followed or opened there).
    """
    from tfcourse.grading.intake import take_in

    intake = _Intake()
    if folder.is_symlink() or not folder.is_dir():
        intake.notes = dict.fromkeys(notebooks, "not submitted (the submission holds no files)")
        return intake
    mirror = stage / "submitted" / "submission" / assignment
    mirror.mkdir(parents=True)
    wanted = {f"{nb}.ipynb" for nb in notebooks}
    names = []
    for entry in os.scandir(folder):
        names.append(entry.name)
        if entry.name in wanted:
            _mirror(entry, mirror / entry.name)
    taken = take_in(stage, assignment, "submission", notebooks)
    for notebook in taken.accepted:
        intake.accepted[notebook] = (taken.folder / f"{notebook}.ipynb").read_bytes()
    intake.notes.update(taken.refused)
    for notebook in taken.missing:
        elsewhere = _find_nested(folder, f"{notebook}.ipynb")
        hint = f" (found {elsewhere}: upload {notebook}.ipynb itself, not a folder)" if elsewhere else ""
        intake.notes[notebook] = f"not submitted{hint}"
    intake.ignored = sorted(set(names) - {f"{nb}.ipynb" for nb in notebooks})
    return intake


def _find_nested(folder: Path, filename: str, limit: int = 2000) -> str | None:
    """Where ``filename`` lies deeper in the submission (for a hint only; links are not followed)."""
    seen = 0
    for top, dirs, names in os.walk(folder):
        seen += len(dirs) + len(names)
        if filename in names and Path(top) != folder:
            return str((Path(top) / filename).relative_to(folder))
        if seen > limit:
            return None
    return None


def _restored_notes(submitted, released) -> dict[str, str]:
    """The notes of ``tfcourse grade`` on test cells that the submission deleted or edited (they are restored)."""
    mine = {_grade_id(c): c.get("source", "") for c in submitted.cells}
    notes = {}
    for cell in released.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade"):
            continue
        grade_id = meta.get("grade_id")
        if grade_id not in mine:
            notes[grade_id] = " (the deleted test cell was put back)"
        elif mine[grade_id] != cell.source:
            notes[grade_id] = " (the edited test cell was restored)"
    return notes


def _hidden_lines(source) -> list[str]:
    """The lines of every hidden-test region of ``source`` long enough to be recognised in a message."""
    from tfcourse.grading.scoring import HIDDEN_BEGIN, HIDDEN_END

    found = []
    for cell in source.cells:
        inside = False
        for line in cell.get("source", "").splitlines():
            if line.strip() == HIDDEN_BEGIN:
                inside = True
            elif line.strip() == HIDDEN_END:
                inside = False
            elif inside and len(line.strip()) >= 16:
                found.append(line.strip())
    return sorted(set(found), key=len, reverse=True)


def _without_hidden(text: str, hidden: list[str]) -> str:
    for line in hidden:
        text = text.replace(line, "[hidden test]")
    return text


def _feedback(cell) -> tuple[str, str]:
    """A test cell's outputs as feedback shows them (what the checks printed, each error as ``ename: evalue``),
    and the same without the ``ename:`` prefixes."""
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    shown, bare = [], []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            text = str(output.get("text", "")).rstrip("\n")
            if text and not text.startswith("✓"):  # the pass line: the reason says "passed"
                shown.append(text)
                bare.append(text)
        elif output.get("output_type") == "error":
            ename, evalue = str(output.get("ename", "")), str(output.get("evalue", ""))
            shown.append(f"{ename}: {evalue}" if evalue else ename)
            bare.append(evalue or ename)
    return ansi.sub("", "\n".join(shown)), ansi.sub("", "\n".join(bare))


def _output(reason: str, note: str, feedback: tuple[str, str], hidden: list[str]) -> str:
    """The part's reason as in the grades CSV, then the checks' full messages where the reason shortened them."""

    def flat(text: str) -> str:
        return " ".join(text.split())

    text = reason + note
    shown, bare = feedback
    if shown and flat(reason) not in (flat(shown), flat(bare)):
        text += "\n\n" + shown
    text = _without_hidden(text, hidden)
    return text if len(text) <= MAX_OUTPUT else text[: MAX_OUTPUT - 1] + "…"


def _test(number: str, name: str, score: float, points: float, output: str, visibility: str) -> dict:
    return {
        "name": name,
        "number": number,
        "score": score,
        "max_score": points,
        "status": "passed" if score >= points else "failed",
        "output": output,
        "output_format": "text",
        "visibility": visibility,
    }


def _visibility(manifest: dict, part: dict) -> str:
    return manifest.get("hidden_visibility", "after_published") if part.get("hidden") else "visible"


def _zero_results(manifest: dict, reason: str, output: str | None = None) -> dict:
    """Every part of every notebook at 0 with ``reason``: the results of a submission that could not be graded."""
    tests = []
    for i, (notebook, info) in enumerate(manifest["notebooks"].items(), start=1):
        for j, part in enumerate(info["parts"], start=1):
            name = f"{notebook}:{part['grade_id']}"
            tests.append(_test(f"{i}.{j}", name, 0.0, part["points"], reason, _visibility(manifest, part)))
    return {
        "score": 0.0,
        "output": output if output is not None else f"Not graded: {reason}",
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def _student(root: Path) -> str:
    """The submitter's e-mail (or Gradescope user id) from ``submission_metadata.json``; ``anonymous`` without."""
    try:
        metadata = json.loads((root / "submission_metadata.json").read_text(encoding="utf-8"))
        user = (metadata.get("users") or [{}])[0]
        for key in ("email", "id"):
            if user.get(key) not in (None, ""):
                return str(user[key])
    except (OSError, ValueError, AttributeError, IndexError, TypeError):
        pass
    return "anonymous"


def _bound_paths() -> list[Path]:
    """The host folders the sandbox shows (read-only): the system and the Python installation."""
    from tfcourse.grading.sandbox import _SYSTEM

    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return sorted(prefixes | {Path(p).resolve() for p in _SYSTEM if Path(p).exists()})


def _exposed(paths: list[Path]) -> list[str]:
    """Those of ``paths`` that lie inside a folder the sandbox shows."""
    bound = _bound_paths()
    return [str(p) for p in paths if any(p.resolve().is_relative_to(b) for b in bound)]


def grade_submission(root: Path | str) -> dict:
    """Grade ``ROOT/submission`` with the autograder in ``ROOT/source``; return Gradescope's results object."""
    from tfcourse.grading.learner import LearnerProcess
    from tfcourse.grading.reasons import shorten
    from tfcourse.grading.runner import read_notebook
    from tfcourse.grading.sandbox import Isolation, sandbox_problem
    from tfcourse.grading.scoring import Seeds, score_notebook

    root = Path(root)
    source_dir = root / "source"
    manifest = json.loads((source_dir / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{MANIFEST} is of format {manifest.get('format')!r}; this tfcourse reads format {FORMAT}")
    assignment, notebooks = manifest["assignment"], list(manifest["notebooks"])
    lines = [f"tfcourse autograder for {assignment}"]
    problem = sandbox_problem()
    exposed = _exposed([source_dir, root / "results"]) if problem is None else []
    if exposed:  # a misplaced root: the sandbox would show the hidden tests and the secret
        return _zero_results(
            manifest,
            "not graded: the autograder is installed where the grading sandbox would show it",
            f"{lines[0]}: NOT GRADED. The autograder's files ({', '.join(exposed)}) lie inside a folder that "
            "the grading sandbox shows (the Python installation or the system); move them elsewhere.",
        )
    if problem is not None and not manifest.get("unsafe"):
        return _zero_results(
            manifest,
            "not graded: no grading sandbox can be made in this container",
            f"{lines[0]}: NOT GRADED. No grading sandbox can be made in this container: {problem}. Your "
            "instructor needs to fix the autograder (or export it with --unsafe); resubmitting will not help.",
        )
    isolation = Isolation(memory_mb=int(manifest["memory_mb"]), unsafe=problem is not None)
    if problem is not None:
        lines.append(f"graded WITHOUT the grading sandbox (exported with --unsafe): {problem}")
    student = _student(root)
    secret = (source_dir / "secret").read_bytes().strip()
    # as the worker of `tfcourse grade` does: the learner's process imports torch while the grader takes the
    # submission in; score_notebook uses it for one notebook, then closes it
    launched = LearnerProcess(isolation).launch()
    try:
        stage = Path(tempfile.mkdtemp(prefix=".tfcourse-intake-", dir=root))  # beside the submission: hard links work
        try:
            intake = _take_in(root / "submission", assignment, notebooks, stage)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if intake.ignored:
            lines.append(f"ignored in your submission: {shorten(', '.join(intake.ignored), 500)}")
        tests, total, hidden_parts, other_errors, held = [], 0.0, 0, [], []
        for i, notebook in enumerate(notebooks, start=1):
            parts = manifest["notebooks"][notebook]["parts"]
            source = read_notebook(source_dir / "notebooks" / f"{notebook}.ipynb")
            hidden = _hidden_lines(source)
            reasons: dict[
                str, tuple[float, str, str, tuple[str, str]]
            ] = {}  # grade id: (score, reason, note, feedback)
            note = intake.notes.get(notebook)
            if note is None:
                launched = launched or LearnerProcess(isolation).launch()
                try:
                    import nbformat

                    submitted = nbformat.reads(intake.accepted[notebook].decode("utf-8"), as_version=4)
                    restored = _restored_notes(submitted, read_notebook(source_dir / "release" / f"{notebook}.ipynb"))
                    result = score_notebook(
                        trusted_structure(submitted, source),
                        source,
                        isolation=isolation,
                        timeout=int(manifest["timeout"]),
                        seeds=Seeds(secret, student, assignment, notebook),
                        launched=launched,
                    )
                except Exception as error:  # a notebook nbgrader could not grade either: its parts score 0
                    print(f"{notebook}: grading failed:\n{traceback.format_exc()}", flush=True)
                    note = f"could not grade this notebook: {shorten(f'{type(error).__name__}: {error}', 200)}"
                finally:
                    launched.close()  # closed already unless something failed before scoring began
                    launched = None
                if note is None:
                    cells = {_grade_id(c): c for c in result.notebook.cells if _is_test(c)}
                    for part in result.parts:
                        feedback = _feedback(cells.get(part.grade_id, {}))
                        reasons[part.grade_id] = (part.score, part.reason, restored.get(part.grade_id, ""), feedback)
                    first_test = next((k for k, c in enumerate(result.notebook.cells) if _is_test(c)), None)
                    secret_inputs = manifest.get("hidden_visibility") != "visible" and any(p["hidden"] for p in parts)
                    for error in result.other_errors:
                        cell = re.match(r"cell (\d+)", error)
                        later = cell is None or (first_test is not None and int(cell.group(1)) > first_test)
                        # a cell after a test may show what the learner's functions were called with, hidden inputs
                        # included: those errors wait as the hidden parts do (the instructor sees them in stdout)
                        (held if secret_inputs and later else other_errors).append(f"{notebook}: {error}")
                    lines.append(f"{notebook}.ipynb: graded")
            if note is not None:
                lines.append(note if note.startswith(f"{notebook}.ipynb") else f"{notebook}.ipynb: {note}")
            for j, part in enumerate(parts, start=1):
                unscored = (0.0, note or "no score was recorded", "", ("", ""))
                score, reason, restored_note, feedback = reasons.get(part["grade_id"], unscored)
                score = min(float(score), float(part["points"]))
                total += score
                visibility = _visibility(manifest, part)
                hidden_parts += visibility != "visible"
                output = _output(reason, restored_note, feedback, hidden)
                tests.append(
                    _test(f"{i}.{j}", f"{notebook}:{part['grade_id']}", score, part["points"], output, visibility)
                )
        if other_errors:
            shown = [f"  {shorten(e, 300)}" for e in other_errors[:10]]
            more = [f"  … and {len(other_errors) - 10} more"] if len(other_errors) > 10 else []
            lines += ["errors in your cells outside the tests:", *shown, *more]
        if held:
            print("errors in cells after a test (not shown to the student):", *held, sep="\n  ", flush=True)
            lines.append(
                f"{len(held)} error{'s' if len(held) > 1 else ''} in your cells after the first test cell "
                "not shown here (such cells can see the hidden tests' inputs); `tfcourse check` shows them"
            )
        if hidden_parts:
            when = {
                "after_published": "when grades are published",
                "after_due_date": "after the due date",
                "hidden": "never (your instructor sees them)",
            }[manifest.get("hidden_visibility", "after_published")]
            lines.append(
                f"{hidden_parts} of {len(tests)} parts are also checked by hidden tests: their results and your total "
                f"are shown {when}. `tfcourse check NOTEBOOK.ipynb` runs the visible tests on your own machine."
            )
        return {
            "score": total,
            "output": "\n".join(lines),
            "output_format": "text",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": tests,
            "extra_data": {"tfcourse": manifest.get("tfcourse"), "sandbox": problem is None},
        }
    finally:
        if launched is not None:  # no notebook was graded
            launched.close()


def _write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m tfcourse.grading.gradescope [--root ROOT]``: what ``run_autograder`` runs."""
    parser = argparse.ArgumentParser(prog="python -m tfcourse.grading.gradescope", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(os.environ.get(ROOT_VARIABLE) or DEFAULT_ROOT))
    args = parser.parse_args(argv)
    started = time.monotonic()
    results_path = args.root / "results" / "results.json"
    try:
        manifest = json.loads((args.root / "source" / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"cannot read the autograder's {MANIFEST}: {error}", flush=True)
        return 1  # run_autograder copies the fallback results
    status = 0
    try:
        results = grade_submission(args.root)
    except Exception as error:
        print(f"grading failed:\n{traceback.format_exc()}", flush=True)
        results = _zero_results(manifest, f"grading failed: {type(error).__name__}: {str(error)[:200]}")
        status = 1
    results["execution_time"] = round(time.monotonic() - started, 1)
    _write(results_path, results)
    buffer = io.StringIO()
    for test in results["tests"]:
        first = test["output"].splitlines()[0] if test["output"] else ""
        print(f"{test['name']}: {test['score']:g} / {test['max_score']:g} [{test['visibility']}] {first}", file=buffer)
    print(f"{results['output']}\n\n{buffer.getvalue()}total {results['score']:g}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
