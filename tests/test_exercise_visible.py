"""No answers in visible test cells: no function a learner can read in a released notebook passes a part's check.

Learners see the setup cell, the stubs and the visible part of every test cell (what lies outside
``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN TESTS``). A helper there that computes a part's answer in plain
torch (a reference written out, or a mistake whose knobs default to the right answer) gives the answer away.

The test is behavioural. For every exercise it executes the released notebook (the student copy, built from
the source) in a namespace where every name the setup cell imports from ``tfcourse`` is replaced by an object
that raises when used, as it will while grading, where ``tfcourse`` is absent from the sandbox (only the
``Mistake`` record, ``CheckFailed`` and constants such as ``mistakes.MESSAGES`` or ``guard.ATTENTION`` keep
working, and the ``check_*`` calls record their arguments instead of running). Every function defined there
(named helpers, lambdas, the functions of ``Mistake`` objects, callables handed to a check) is a candidate.
For every graded part whose solution is a function taking as many positional arguments, the part's visible
check runs with the candidate in place of the learner's function; it must never pass. While a candidate is
collected for one part, the learner's other functions are the real solutions, so a helper that is the answer
once a learner's earlier part is plugged in is caught too.

The self-tests plant answers into copies of the sources (ch08's old ``_pooled_reference``; every part's own
solution, renamed) and check that they are flagged, and that the same code is not flagged when it calls
``tfcourse`` or sits in the hidden region.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import re
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType, ModuleType

import nbformat
import pytest

from tfcourse.grading import CheckFailed, Mistake
from tfcourse.grading.authoring import parse, student_notebook_text
from tfcourse.grading.catalogue import load_catalogue

CATALOGUE = load_catalogue()
VISIBLE = "<visible "  # file name prefix of code compiled from the released test cells
CHECKS = ("check_function", "check_value", "check_answered", "check_proportions")
KEPT = (Mistake, CheckFailed)  # records and exceptions: they compute nothing
REPEATS = 2  # runs of each visible check per candidate (inputs are random)
CANDIDATE_SECONDS = 30


# ---------------------------------------------------------------------------------------------------------------
# The namespace a released notebook sees while grading: tfcourse raises when used


class Unavailable:
    """Stands in for something imported from tfcourse: any use other than attribute access raises."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _fail(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is not available while grading (tfcourse is not installed there)")

    def __getattr__(self, attr: str) -> Unavailable:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Unavailable(f"{self._name}.{attr}")

    __call__ = __iter__ = __getitem__ = __setitem__ = __bool__ = __len__ = __enter__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fail
    __neg__ = __eq__ = __lt__ = __gt__ = __le__ = __ge__ = __index__ = __float__ = __int__ = _fail
    __instancecheck__ = __mro_entries__ = _fail
    __hash__ = object.__hash__


class DataOnly:
    """A tfcourse module as seen while grading: constants (``MESSAGES``, ``ATTENTION``) pass, callables raise."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def __getattr__(self, attr: str) -> object:
        value = getattr(self._module, attr)
        if isinstance(value, ModuleType):
            return DataOnly(value) if _from_tfcourse(value) else value
        return Unavailable(f"{self._module.__name__}.{attr}") if callable(value) else value


def _from_tfcourse(value: object) -> bool:
    name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None) or ""
    return name == "tfcourse" or name.startswith("tfcourse.")


@dataclass
class Recorder:
    """Replaces the check functions while the definitions run: keeps the callables handed to them."""

    calls: list[tuple[tuple, dict]] = field(default_factory=list)

    def check(self, *args, **kwargs) -> None:
        self.calls.append((args, kwargs))


def grading_namespace(setup: dict, recorder: Recorder) -> dict:
    """``setup`` (the setup cell's real globals) with everything from tfcourse made unavailable."""
    namespace = {}
    for name, value in setup.items():
        if name in CHECKS:
            namespace[name] = recorder.check
        elif any(value is kept for kept in KEPT) or not _from_tfcourse(value):
            namespace[name] = value
        elif isinstance(value, ModuleType):
            namespace[name] = DataOnly(value)
        else:
            namespace[name] = Unavailable(name)
    return namespace


# ---------------------------------------------------------------------------------------------------------------
# A notebook's cells, and running them statement by statement


@dataclass(frozen=True)
class Part:
    """A graded part whose answer is a function: the learner's function name and its positional arity."""

    test_id: str
    name: str
    arity: int


@dataclass
class Notebook:
    """The parsed source (solutions, hidden tests) and the released copy (stubs, visible tests) of one exercise."""

    id: str
    setup: str
    solutions: dict[str, str]  # solution cell id -> source (with the solution)
    stubs: dict[str, str]  # solution cell id -> released source
    visible: dict[str, str]  # test cell id -> released (visible) source
    order: list[tuple[str, str]]  # ("solution" | "tests", id) in notebook order
    parts: list[Part]


def load_notebook(source: Path) -> Notebook:
    """Read an exercise source and build its released copy as ``exercises/build.py`` does."""
    specs = parse(source.read_text(encoding="utf-8"), str(source))
    released = nbformat.reads(student_notebook_text(source), as_version=4)
    by_id = {c.metadata["nbgrader"]["grade_id"]: c.source for c in released.cells if "nbgrader" in c.metadata}
    setup = next(s.source for s in specs if s.kind == "locked" and s.cell_type == "code")
    solutions = {s.grade_id: s.source for s in specs if s.kind == "solution"}
    tests = [s.grade_id for s in specs if s.kind == "tests"]
    order = [(s.kind, s.grade_id) for s in specs if s.kind in ("solution", "tests")]
    parts = []
    for test_id in tests:
        solution = solutions.get(test_id.removeprefix("test_"))
        functions = [n for n in ast.parse(solution).body if isinstance(n, ast.FunctionDef)] if solution else []
        if len(functions) == 1:
            node = functions[0]
            parts.append(Part(test_id, node.name, len(node.args.posonlyargs) + len(node.args.args)))
    return Notebook(
        id=source.stem,
        setup=setup,
        solutions=solutions,
        stubs={i: by_id[i] for i in solutions},
        visible={i: by_id[i] for i in tests},
        order=order,
        parts=parts,
    )


_DEFINITIONS = (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.Import, ast.ImportFrom)


def run_statements(code: str, namespace: dict, filename: str, *, definitions_only: bool = False) -> None:
    """Execute ``code`` one top-level statement at a time; a statement that raises is skipped, as while grading."""
    for statement in ast.parse(code).body:
        if definitions_only and not isinstance(statement, _DEFINITIONS):
            continue
        with contextlib.suppress(Exception):
            exec(compile(ast.Module([statement], type_ignores=[]), filename, "exec"), namespace)


def _walk(value: object, depth: int = 0) -> Iterator[object]:
    yield value
    if depth < 3 and isinstance(value, (list, tuple, set, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _walk(item, depth + 1)


def visible_functions(book: Notebook, part: Part) -> dict[str, FunctionType]:
    """Every function the released test cells define, executed with tfcourse unavailable.

    The learner's function of ``part`` is its stub; the learner's other functions are the real solutions.
    """
    namespace = {"__name__": "__visible__"}
    exec(book.setup, namespace)
    recorder = Recorder()
    namespace = grading_namespace(namespace, recorder) | {"__name__": "__visible__"}
    for kind, cell_id in book.order:
        if kind == "solution":
            solution = book.stubs[cell_id] if cell_id == part.test_id.removeprefix("test_") else book.solutions[cell_id]
            run_statements(solution, namespace, f"<solution {book.id}:{cell_id}>")
        else:
            run_statements(book.visible[cell_id], namespace, f"{VISIBLE}{book.id}:{cell_id}>")
    found: dict[int, tuple[str, FunctionType]] = {}

    def add(label: str, value: object) -> None:
        for item in _walk(value):
            fn = item.fn if isinstance(item, Mistake) else item
            if isinstance(fn, FunctionType) and fn.__code__.co_filename.startswith(VISIBLE):
                name = f"Mistake {item.name!r}" if isinstance(item, Mistake) else fn.__qualname__
                found.setdefault(id(fn), (f"{name} ({label})", fn))

    for name, value in list(namespace.items()):
        add(name, value)
    for args, kwargs in recorder.calls:
        for value in (*args, *kwargs.values()):
            add("passed to a check", value)
    return dict(found.values())


def takes(fn: FunctionType, arity: int) -> bool:
    """Whether ``fn`` can be called with ``arity`` positional arguments and nothing else."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind == p.KEYWORD_ONLY and p.default is p.empty for p in parameters):
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return len(required) <= arity
    return len(required) <= arity <= len(positional)


@contextlib.contextmanager
def _time_limit(seconds: int):
    def expired(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_namespace(book: Notebook) -> dict:
    """Real tfcourse, every real solution, and the definitions of every visible test cell: where checks run."""
    namespace = {"__name__": "__check__"}
    exec(book.setup, namespace)
    for kind, cell_id in book.order:
        if kind == "solution":
            run_statements(book.solutions[cell_id], namespace, f"<solution {book.id}:{cell_id}>")
        else:
            run_statements(book.visible[cell_id], namespace, f"<check {book.id}:{cell_id}>", definitions_only=True)
    return namespace


def passes_visible_check(book: Notebook, part: Part, candidate: FunctionType) -> bool:
    """Whether the released test cell of ``part`` passes with ``candidate`` as the learner's function."""
    code = compile(book.visible[part.test_id], f"<check {book.id}:{part.test_id}>", "exec")
    namespace = check_namespace(book)
    namespace[part.name] = candidate  # also where the helpers of other cells look the learner's function up
    for _ in range(REPEATS):
        try:
            with warnings.catch_warnings(), _time_limit(CANDIDATE_SECONDS), contextlib.redirect_stdout(None):
                warnings.simplefilter("ignore")
                exec(code, namespace)
        except Exception:  # any failure (a CheckFailed, a candidate's error, the time limit): it did not pass
            continue
        return True
    return False


def leaks(book: Notebook, parts: list[Part] | None = None) -> list[str]:
    """``"test_id: candidate"`` for every visible function that passes a part's visible check."""
    found = []
    for part in book.parts if parts is None else parts:
        for label, candidate in visible_functions(book, part).items():
            if takes(candidate, part.arity) and passes_visible_check(book, part, candidate):
                found.append(f"{part.test_id}: {label}")
    return found


# ---------------------------------------------------------------------------------------------------------------
# The exercises


@pytest.mark.parametrize("exercise", CATALOGUE, ids=lambda e: e.id)
def test_no_visible_function_passes_a_visible_check(exercise):
    book = load_notebook(exercise.source)
    assert book.parts, "an exercise with no function to write?"
    assert leaks(book) == [], (
        "a function that learners can read in the released notebook passes a part's check: move it into the "
        "hidden region or compute it through tfcourse"
    )


# Phrases that state an answer which the part asks the learner to find; released text must not hold them.
ANSWER_PHRASES = {
    "ch02-scaling": ["log(train_len)·√d", "log(train_len) * math.sqrt", "divide by log(train_len)"],
    "ch08-bert": ["torch.tanh(F.linear(hidden[:, 0]"],
}


@pytest.mark.parametrize("exercise", CATALOGUE, ids=lambda e: e.id)
def test_released_text_does_not_state_known_answers(exercise):
    student = exercise.notebook.parents[1] / "student" / exercise.notebook.name
    text = "\n".join(cell.source for cell in nbformat.read(student, as_version=4).cells)
    assert [p for p in ANSWER_PHRASES.get(exercise.id, []) if p in text] == []


# ---------------------------------------------------------------------------------------------------------------
# Self-tests: planted answers are found


def _planted(tmp_path: Path, exercise_id: str, test_id: str, code: str, *, hidden: bool = False) -> Notebook:
    """A copy of the exercise with ``code`` at the top of the visible (or the hidden) part of a test cell."""
    source = next(e.source for e in CATALOGUE if e.id == exercise_id)
    text = source.read_text(encoding="utf-8")
    header = re.search(rf"^# %% tests id={test_id} points=\S+\n", text, re.MULTILINE)
    assert header, test_id
    if hidden:
        start = text.index("### BEGIN HIDDEN TESTS\n", header.end()) + len("### BEGIN HIDDEN TESTS\n")
    else:
        start = header.end()
    copy = tmp_path / exercise_id / f"{exercise_id}.py"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text[:start] + code.strip("\n") + "\n\n\n" + text[start:], encoding="utf-8")
    return load_notebook(copy)


def _part(book: Notebook, test_id: str) -> list[Part]:
    return [p for p in book.parts if p.test_id == test_id]


# ch08's visible reference before this test existed: the answer, word for word.
OLD_POOLED_REFERENCE = """
def _old_pooled_reference(hidden, weight, bias):
    return torch.tanh(F.linear(hidden[:, 0], weight, bias))  # as in tfcourse.models.bert.BertModel.forward
"""


def test_self_test_flags_the_old_ch08_pooled_reference(tmp_path):
    book = _planted(tmp_path, "ch08-bert", "test_pooled_output", OLD_POOLED_REFERENCE)
    assert "test_pooled_output: _old_pooled_reference (_old_pooled_reference)" in leaks(
        book, _part(book, "test_pooled_output")
    )


def test_self_test_flags_a_mistake_whose_function_is_the_answer(tmp_path):
    code = (
        "_planted_mistakes = [Mistake('unscaled', 'not scaled', "
        "lambda q, k: torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1))]"
    )
    book = _planted(tmp_path, "ch01-self-attention", "test_attention_weights", code)
    assert "test_attention_weights: Mistake 'unscaled' (_planted_mistakes)" in leaks(
        book, _part(book, "test_attention_weights")
    )


def test_self_test_flags_a_helper_that_is_the_answer_given_an_earlier_part(tmp_path):
    # residual_step's answer once the learner's own layer_norm (part 1) is plugged in
    code = """
def _arrangement(x, w, gamma, beta, pre_ln):
    return x + layer_norm(x, gamma, beta) @ w if pre_ln else layer_norm(x + x @ w, gamma, beta)
"""
    book = _planted(tmp_path, "ch06-layer", "test_residual_step", code)
    assert "test_residual_step: _arrangement (_arrangement)" in leaks(book, _part(book, "test_residual_step"))


def test_self_test_accepts_tfcourse_calls_and_hidden_helpers(tmp_path):
    through_tfcourse = """
def _through_tfcourse(hidden, weight, bias):
    model = ref_bert.BertModel(ref_bert.BertConfig.tiny()).eval()
    return model(hidden)
"""
    book = _planted(tmp_path, "ch08-bert", "test_pooled_output", through_tfcourse)
    assert not [found for found in leaks(book, _part(book, "test_pooled_output")) if "_through_tfcourse" in found]
    book = _planted(tmp_path / "hidden", "ch08-bert", "test_pooled_output", OLD_POOLED_REFERENCE, hidden=True)
    assert not [found for found in leaks(book, _part(book, "test_pooled_output")) if "_old_pooled" in found]


def _renamed_solution(book: Notebook, part: Part) -> str:
    code = book.solutions[part.test_id.removeprefix("test_")]
    code = "\n".join(line for line in code.splitlines() if "### BEGIN SOLUTION" not in line and "### END" not in line)
    return re.sub(rf"^def {part.name}\(", f"def _planted_{part.name}(", code, count=1, flags=re.MULTILINE)


@pytest.mark.parametrize("exercise", CATALOGUE, ids=lambda e: e.id)
def test_self_test_every_part_flags_its_own_solution(exercise, tmp_path):
    # Proves each part's visible check can be passed from a visible cell, so the test above is not vacuous.
    book = load_notebook(exercise.source)
    problems = []
    for part in book.parts:
        if not passes_visible_check(book, part, check_namespace(book)[part.name]):
            problems.append(f"{part.test_id}: the visible check fails with the part's own solution")
            continue
        planted = _planted(tmp_path / part.test_id, exercise.id, part.test_id, _renamed_solution(book, part))
        if f"{part.test_id}: _planted_{part.name} (_planted_{part.name})" not in leaks(
            planted, _part(planted, part.test_id)
        ):
            problems.append(f"{part.test_id}: its own solution, planted in the visible cell, is not flagged")
    assert problems == []
