"""Score a notebook the trusted way: the learner's cells run in a sandbox, the tests run in the grader.

The cells of a notebook play three roles:

* **learner cells** (solutions, scratch code, and the locked setup cell, whose imports the answers use)
  run in order in a :class:`~tfcourse.grading.learner.LearnerProcess`, a sandboxed process of their own;
* **setup cells** (locked code cells that are not tests) run in the grader too, so the test cells find the
  references and checks they import, from the grader's own ``tfcourse``;
* **test cells** run only in the grader, in notebook order. Before each one, every name the *source*
  notebook's solution cells define (the answers) is fetched from the sandbox: a function becomes a
  :class:`~tfcourse.grading.learner.LearnerFunction` that runs there, a value arrives as a plain value.
  Nothing else of the learner's reaches the grader's namespace, so rebinding ``check_function`` or any
  other name in a notebook changes nothing.

A part scores its points when its test cell raises nothing, and zero otherwise, with the reason. The
reference, the comparison and the named-mistake diagnosis all happen in the grader. Failures in the hidden
part of a test cell are reported without their inputs. Seeds: with a :class:`Seeds` policy (grading),
each part's inputs and each call's random state derive from (course secret, student, assignment, notebook,
part), so a re-grade gives the same score; without one (a learner's check) every run draws afresh.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import hmac
import io
import itertools
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from nbformat.notebooknode import NotebookNode
from nbgrader import utils

from tfcourse.grading import inputs
from tfcourse.grading.compare import CheckFailed, LearnerError
from tfcourse.grading.learner import LearnerCrashed, LearnerFunction, LearnerProcess
from tfcourse.grading.preprocessors import KERNEL_DIED, NOT_RUN
from tfcourse.grading.reasons import error_text, shorten
from tfcourse.grading.sandbox import Isolation
from tfcourse.grading.structure import grade_id, is_setup, is_test, meta, trusted_structure

__all__ = [
    "HIDDEN_BEGIN",
    "HIDDEN_END",
    "PartResult",
    "RunResult",
    "Seeds",
    "answer_names",
    "forbidden_paths",
    "score_notebook",
]

HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_INPUTS_NOTE = re.compile(r"\n\(inputs: .*\)\s*$", re.S)
_CHECKS = re.compile(r"^\s*(check_\w+)\(", re.M)


@dataclass(frozen=True)
class PartResult:
    """The score of one graded part (an nbgrader test cell), with the reason in words."""

    grade_id: str
    score: float
    max_score: float
    reason: str


@dataclass(frozen=True)
class RunResult:
    """A scored notebook: the copy with outputs, each part's result, errors outside test cells."""

    notebook: NotebookNode
    parts: list[PartResult]
    other_errors: list[str]

    @property
    def score(self) -> float:
        return sum(p.score for p in self.parts)

    @property
    def max_score(self) -> float:
        return sum(p.max_score for p in self.parts)


@dataclass(frozen=True)
class Seeds:
    """Deterministic seeds for grading: one stream per (secret, student, assignment, notebook, part)."""

    secret: bytes
    student: str
    assignment: str
    notebook: str

    def for_part(self, grade_id: str) -> int:
        key = "\0".join((self.student, self.assignment, self.notebook, grade_id)).encode()
        return int.from_bytes(hmac.new(self.secret, key, hashlib.sha256).digest()[:8], "little") >> 1


def answer_names(source: NotebookNode) -> list[str]:
    """Names the solution cells of ``source`` define at top level: what test cells may take from a learner."""
    names: dict[str, None] = {}
    for cell in source.cells:
        if cell.cell_type != "code" or not utils.is_solution(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[node.name] = None
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for leaf in ast.walk(target):
                        if isinstance(leaf, ast.Name):
                            names[leaf.id] = None
    return list(names)


def forbidden_paths(source: NotebookNode, namespace: dict) -> list[str]:
    """Every dotted path that a ``forbidden=`` argument in the test cells of ``source`` names.

    The expressions are evaluated in ``namespace`` (the setup cells' globals) after the test cells'
    top-level assignments of the names they use, so the sandbox can be locked before learner code runs.

    Raises:
        ValueError: when an expression cannot be evaluated ahead of time (an authoring error).
    """
    scope = dict(namespace)
    found: dict[str, None] = {}
    for cell in source.cells:
        if not is_test(cell):
            continue
        tree = ast.parse(_strip_markers(cell.source))
        expressions = [
            kw.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            for kw in node.keywords
            if kw.arg == "forbidden"
        ]
        used = {leaf.id for expr in expressions for leaf in ast.walk(expr) if isinstance(leaf, ast.Name)}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in used for t in node.targets):
                exec(compile(ast.Module([node], []), "<forbidden>", "exec"), scope)
        for expr in expressions:
            try:
                value = eval(compile(ast.Expression(expr), "<forbidden>", "eval"), scope)
            except Exception as error:
                raise ValueError(
                    f"cannot tell what test cell {grade_id(cell)} forbids ahead of time "
                    f"({ast.unparse(expr)}: {error}); use guard presets, literals or a top-level tuple"
                ) from None
            found.update(dict.fromkeys(str(p) for p in value))
    return list(found)


def _strip_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.strip() not in (HIDDEN_BEGIN, HIDDEN_END))


def _split_hidden(source: str) -> tuple[str, str]:
    """``(visible, hidden)`` top-level code of a test cell; all of it hidden if the markers are indented."""
    lines = source.splitlines()
    if HIDDEN_BEGIN not in source:
        return source, ""
    if not any(line.startswith(HIDDEN_BEGIN) for line in lines):
        return "", _strip_markers(source)
    visible, hidden, inside = [], [], False
    for line in lines:
        if line.startswith(HIDDEN_BEGIN):
            inside = True
        elif line.startswith(HIDDEN_END):
            inside = False
        else:
            (hidden if inside else visible).append(line)
            (visible if inside else hidden).append("")  # keep line numbers aligned
    return "\n".join(visible), "\n".join(hidden)


def _stream(name: str, text: str) -> NotebookNode:
    return NotebookNode(output_type="stream", name=name, text=text)


def _error(ename: str, evalue: str, traceback: Iterable[str] = ()) -> NotebookNode:
    lines = [*traceback, f"{ename}: {evalue}" if evalue else ename]
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=lines)


def _learner_error_output(error: dict) -> NotebookNode:
    ename, evalue = str(error.get("ename", "Error")), str(error.get("evalue", ""))
    frames = [str(f) for f in error.get("traceback", []) if isinstance(f, str)]
    if ename == "CellTimeout":
        return _error("CellTimeoutError", f"the cell ran past the time limit of {evalue} s and was interrupted")
    return _error(ename, evalue, ["Traceback (your code):", *frames] if frames else [])


class _Session:
    """The sandbox of one notebook, restarted (and its cells replayed) when it dies."""

    def __init__(
        self, isolation: Isolation, forbidden: list[str], timeout: float, launched: LearnerProcess | None = None
    ) -> None:
        self.isolation, self.forbidden, self.timeout = isolation, forbidden, timeout
        self.process: LearnerProcess | None = None
        self.launched = launched if launched is not None and launched.isolation == isolation else None
        if launched is not None and self.launched is None:
            launched.close()
        self.history: list[tuple[int, str]] = []

    def ensure(self) -> LearnerProcess:
        if self.process is None or not self.process.alive():
            if self.process is not None:
                self.process.close()
            fresh, self.launched = self.launched, None
            fresh = fresh or LearnerProcess(self.isolation)
            fresh.forbidden, fresh.timeout = sorted(set(self.forbidden)), float(self.timeout)
            self.process = fresh.start()
            for index, source in self.history:  # state as it was, outputs not kept again
                self.process.run_cell(index, source)
        return self.process

    def run_cell(self, index: int, source: str):
        result = self.ensure().run_cell(index, source)
        self.history.append((index, source))
        return result

    def forget_last(self) -> None:
        if self.history:
            self.history.pop()

    def close(self) -> None:
        for process in (self.process, self.launched):
            if process is not None:
                process.close()
        self.process = self.launched = None


def _seed_stream(seed: int) -> Iterator[int]:
    for n in itertools.count():
        digest = hashlib.sha256(f"{seed}:{n}".encode()).digest()
        yield int.from_bytes(digest[:4], "little")


def _reason(error: BaseException, hidden: bool) -> tuple[str, str]:
    """``(ename, message)`` of a failed test cell; the hidden part's failures lose their input descriptions."""
    if isinstance(error, CheckFailed):
        message = str(error)
        return type(error).__name__, _INPUTS_NOTE.sub("", message) if hidden else message
    if isinstance(error, LearnerCrashed):
        return KERNEL_DIED, str(error)
    if isinstance(error, LearnerError):
        notes = [] if hidden else list(getattr(error, "__notes__", []))
        return error.ename, " ".join([str(error), *(notes or [f"(raised by {error.function})"])])
    return type(error).__name__, shorten(str(error), 500)


def _run_test(source: str, namespace: dict) -> tuple[str, BaseException | None]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, "<test>", "exec"), namespace)
    except Exception as error:
        return out.getvalue(), error
    return out.getvalue(), None


def score_notebook(
    nb: NotebookNode,
    source: NotebookNode,
    *,
    isolation: Isolation,
    timeout: float = 60,
    seeds: Seeds | None = None,
    launched: LearnerProcess | None = None,
) -> RunResult:
    """Run ``nb`` the trusted way and score every test cell; see the module docstring.

    Args:
        nb: the notebook to grade, its locked cells already restored from ``source`` (tests included).
        source: where answer names and the test cells' ``forbidden=`` lists are read from (the instructor's
            source notebook when grading; the notebook itself for a learner's own check).
        isolation: the sandbox's limits (``unsafe=True``: a plain separate process).
        timeout: seconds one cell may run, and one test cell's calls together.
        seeds: deterministic seeds (grading); None draws fresh inputs.
        launched: a process already launched with the same ``isolation`` (its imports overlap the caller's
            work); it is used for this notebook only, and closed.

    Returns:
        The scored copy of ``nb`` with outputs, every part's result, and errors raised outside test cells.
    """
    nb = trusted_structure(nb, source)  # roles come from the source, never from the submission's metadata
    trusted: dict = {"__name__": "__tfcourse_tests__"}
    for cell in source.cells:
        if is_setup(cell):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(cell.source, "<setup>", "exec"), trusted)
    names = [n for n in answer_names(source) if n not in trusted]  # an answer never shadows the grader's names
    session = _Session(isolation, forbidden_paths(source, trusted), timeout, launched)
    parts: list[PartResult] = []
    other_errors: list[str] = []
    stopped: str | None = None
    count = 0
    try:
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            count += 1
            cell.outputs, cell.execution_count = [], count
            label = f"cell {index}" + (f" ({grade_id(cell)})" if grade_id(cell) else "")
            if is_test(cell):
                parts.append(_score_test(cell, index, session, trusted, names, timeout, seeds, stopped))
                continue
            if stopped is not None:
                if cell.source.strip():
                    cell.outputs = [_error(NOT_RUN, f"not run: {stopped}")]
                continue
            try:
                result = session.run_cell(index, cell.source)
            except LearnerCrashed as crash:
                session.forget_last()  # replaying it would crash again
                cell.outputs = [_error(KERNEL_DIED, str(crash))]
                other_errors.append(f"{label}: kernel crashed: {crash}")
                if "timed out" in str(crash):
                    stopped = f"the sandbox stopped responding in {label}"
                continue
            if result.stdout:
                cell.outputs.append(_stream("stdout", result.stdout))
            if result.stderr:
                cell.outputs.append(_stream("stderr", result.stderr))
            if result.value is not None:
                cell.outputs.append(
                    NotebookNode(
                        output_type="execute_result",
                        data={"text/plain": result.value},
                        metadata={},
                        execution_count=count,
                    )
                )
            if result.error:
                output = _learner_error_output(result.error)
                cell.outputs.append(output)
                other_errors.append(f"{label}: {output.ename}: {shorten(output.evalue, 200)}")
    finally:
        session.close()
    return RunResult(nb, parts, other_errors)


def _score_test(
    cell: NotebookNode,
    index: int,
    session: _Session,
    trusted: dict,
    names: list[str],
    timeout: float,
    seeds: Seeds | None,
    stopped: str | None,
) -> PartResult:
    found = meta(cell)
    part_id, points = found.get("grade_id", f"cell-{index}"), float(found.get("points", 0) or 0)
    if stopped is not None:
        cell.outputs = [_error(NOT_RUN, f"not run: {stopped}")]
        return PartResult(part_id, 0.0, points, f"not run: {stopped}")
    namespace = trusted  # shared by the test cells, in order, as in a notebook
    seed = seeds.for_part(part_id) if seeds is not None else int.from_bytes(os.urandom(8), "little") >> 1
    deadline = time.monotonic() + timeout
    error: BaseException | None = None
    printed = ""
    try:
        process = session.ensure()
        fetched = process.names(names)
        calls = _seed_stream(seed)
        for name, (kind, value) in fetched.items():
            namespace.pop(name, None)
            if kind == "callable":
                namespace[name] = LearnerFunction(process, name, seeds=calls, deadline=deadline)
            elif kind == "value":
                namespace[name] = value
        visible, hidden = _split_hidden(cell.source)
        with inputs.seeded(seed):
            printed, error = _run_test(visible, namespace)
            hidden_failed = False
            if error is None and hidden.strip():
                more, error = _run_test(hidden, namespace)
                printed += more
                hidden_failed = error is not None
    except LearnerCrashed as crash:
        error, hidden_failed = crash, False
    cell.outputs = [_stream("stdout", printed)] if printed else []
    if error is None:
        if not hidden.strip() and set(_CHECKS.findall(visible)) == {"check_answered"}:
            answered = "answered: its value is checked when graded"
            cell.outputs.append(_stream("stdout", f"✓ {answered}\n"))
            return PartResult(part_id, points, points, answered)
        cell.outputs.append(_stream("stdout", f"✓ {part_id} passed ({points:g} of {points:g} points)\n"))
        return PartResult(part_id, points, points, "passed")
    ename, message = _reason(error, hidden_failed)
    timed_out = (isinstance(error, LearnerCrashed) and "timed out" in message) or (
        isinstance(error, LearnerError) and error.ename == "CallTimeout"
    )
    if timed_out:
        ename = "CellTimeoutError"
        message = f"your code ran past the time limit of {timeout:g} s while this part was checked"
    output = _error(ename, message, message.splitlines()[:-1])
    cell.outputs.append(output)
    reason = message if ename in ("CheckFailed", "ReferenceUsed") else error_text(output, int(timeout))
    return PartResult(part_id, 0.0, points, shorten(reason))
