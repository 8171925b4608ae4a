"""The checks that exercise test cells call.

* :func:`check_function` runs a learner's function and the reference on fresh random inputs, compares the
  results with :func:`~tfcourse.grading.compare.compare`, names a known mistake when the result matches
  one, and forbids the reference while the learner's code runs.
* :func:`check_value` grades a short numeric answer by value, without revealing it.
* :func:`check_proportions` grades random behaviour (such as BERT's 80/10/10 split) by observed frequencies.
* :func:`run_learner` calls a learner's function under the same guard, for checks written by hand.

Failures raise :class:`~tfcourse.grading.compare.CheckFailed` (an ``AssertionError``), which nbgrader
records as a failed test cell; the message is the feedback.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from tfcourse.grading.compare import CheckFailed, LearnerError, compare, describe, matches
from tfcourse.grading.guard import ReferenceUsed, forbid
from tfcourse.grading.mistakes import MESSAGES, Mistake
from tfcourse.grading.proportions import check_proportions as _check_proportions

__all__ = [
    "MLM_FRACTIONS",
    "MLM_MISTAKES",
    "check_answered",
    "check_function",
    "check_proportions",
    "check_value",
    "run_learner",
]

MLM_FRACTIONS = (0.8, 0.1, 0.1)
"""BERT's split of the selected tokens: (→ [MASK], → random token, unchanged)."""
MLM_MISTAKES = {
    (0.1, 0.8, 0.1): MESSAGES["mlm-swapped"],
    (0.1, 0.1, 0.8): MESSAGES["mlm-swapped"],
    (0.8, 0.0, 0.2): "none of your selected tokens becomes a random token: 10 % should",
    (1.0, 0.0, 0.0): "all of your selected tokens become [MASK]: only 80 % should, 10 % random, 10 % unchanged",
}


def _function_name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _clone(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


def _describe_inputs(args: Mapping[str, object]) -> str:
    return ", ".join(f"{key}: {describe(value)}" for key, value in args.items())


def _report_warnings(caught: Sequence[warnings.WarningMessage], fn_name: str) -> None:
    # Warnings never cost points; show them once, on stdout, so that they do not look like a failure.
    seen = dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught)
    for text in seen:
        print(f"note: {fn_name} emitted a warning (no points lost): {text}")


def run_learner(
    fn: Callable, *args: object, forbidden: Iterable[str] = (), name: str | None = None, **kwargs: object
) -> object:
    """Call a learner's ``fn(*args, **kwargs)`` with ``forbidden`` callables blocked and warnings captured.

    Args:
        fn: the learner's function.
        forbidden: dotted paths that the exercise asks the learner not to call (see :mod:`~.guard`).
        name: how to call the function in messages; defaults to its ``__name__``.

    Returns:
        Whatever ``fn`` returns.

    Raises:
        CheckFailed: if ``fn`` is not callable or called a forbidden callable (even if it caught the error).
    """
    name = name or _function_name(fn)
    if getattr(type(fn), "remote", False):  # a learner function running in its sandbox (grading)
        return _run_remote(fn, args, kwargs, name)
    if not callable(fn):
        raise CheckFailed(f"{name} should be a function, got {describe(fn)}")
    namespaces = [fn.__globals__] if hasattr(fn, "__globals__") else []
    with warnings.catch_warnings(record=True) as caught, forbid(*forbidden, namespaces=namespaces) as guard:
        warnings.simplefilter("always")
        try:
            result = fn(*args, **kwargs)
        except ReferenceUsed:
            pass  # reported below from guard.calls, even when the learner's code swallowed it
    if guard.calls:
        raise _forbidden_call(name, guard.calls[0])
    _report_warnings(caught, name)
    return result


def _forbidden_call(name: str, path: str) -> CheckFailed:
    public = path.replace("torch._C._nn.", "torch.nn.functional.")
    return CheckFailed(
        f"{name} called {public}, which this exercise asks you to implement yourself; use basic tensor "
        "operations instead"
    )


def _run_remote(fn, args: tuple, kwargs: dict, name: str) -> object:
    """Call a learner's function in its sandbox (grading); its in-place edits are copied back onto ``args``."""
    result = fn.invoke(args, kwargs)
    if result.forbidden_calls:
        raise _forbidden_call(name, result.forbidden_calls[0])
    if not result.ok:
        raise LearnerError(name, result.error or {})
    for before, after in zip(args, result.args_after, strict=False):
        if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
            if after.shape == before.shape and after.dtype == before.dtype:
                before.copy_(after)
            else:
                raise CheckFailed(
                    f"{name} resized or retyped one of its inputs in place; it should leave them unchanged"
                )
    for text in result.warnings:
        print(f"note: {name} emitted a warning (no points lost): {text}")
    return result.value


def check_function(
    fn: Callable,
    reference: Callable,
    inputs: Callable[[], Mapping[str, object]],
    *,
    name: str | None = None,
    mistakes: Iterable[Mistake] = (),
    forbidden: Iterable[str] = (),
    trials: int = 3,
    atol: float | None = None,
    rtol: float | None = None,
) -> None:
    """Check ``fn`` against ``reference`` on ``trials`` fresh random inputs.

    For each trial, ``inputs()`` returns the arguments by name (called positionally, in that order); the
    reference runs first, outside any guard; then ``fn`` runs on copies with ``forbidden`` blocked.

    Args:
        fn: the learner's function.
        reference: the correct function (usually from :mod:`tfcourse`), same arguments.
        inputs: returns a fresh ``{argument name: value}`` dict each call.
        name: what the result is, for messages ("attention output"); defaults to ``"<fn name>(...)"``.
        mistakes: known wrong variants; a result that matches one is reported with its message.
        forbidden: dotted paths of callables the learner must not use.
        trials: number of input draws.
        atol: absolute tolerance (default: by dtype, see :data:`~tfcourse.grading.compare.TOLERANCES`).
        rtol: relative tolerance (same default).

    Raises:
        CheckFailed: with the first difference found, or the named mistake, and the inputs that showed it.
    """
    fn_name = _function_name(fn)
    name = name or f"the result of {fn_name}()"
    mistakes = tuple(mistakes)
    forbidden = tuple(forbidden)
    for _ in range(trials):
        args = dict(inputs())
        expected = reference(*(_clone(v) for v in args.values()))
        given = {key: _clone(value) for key, value in args.items()}
        try:
            actual = run_learner(fn, *given.values(), forbidden=forbidden, name=fn_name)
        except Exception as error:
            if not isinstance(error, CheckFailed) and hasattr(error, "add_note"):
                error.add_note(f"(raised by {fn_name} on inputs {_describe_inputs(args)})")
            raise
        for key, value in args.items():
            if isinstance(value, torch.Tensor) and not matches(given[key], value):
                raise CheckFailed(f"{fn_name} changed its input {key!r} in place; it should leave its inputs unchanged")
        try:
            compare(actual, expected, name, atol=atol, rtol=rtol)
        except CheckFailed as failure:
            for mistake in mistakes:
                variant = mistake.fn(*(_clone(v) for v in args.values()))
                if _matches_variant(actual, variant):
                    raise CheckFailed(f"{name} is wrong: {mistake.message}.") from None
            raise CheckFailed(f"{failure}\n(inputs: {_describe_inputs(args)})") from None


def _matches_variant(actual: object, variant: object) -> bool:
    """Whether ``actual`` equals a mistake's result, letting a mask broadcast to the variant's shape."""
    if isinstance(actual, torch.Tensor) and isinstance(variant, torch.Tensor) and actual.shape != variant.shape:
        try:
            actual = torch.broadcast_to(actual, variant.shape)
        except RuntimeError:
            return False
    return matches(actual, variant)


def check_answered(answer: object, name: str) -> None:
    """Raise :class:`CheckFailed` unless ``answer`` is a number (what a visible test of a numeric question checks).

    Returns nothing on purpose: a value left as the last expression of a test cell would be read by nbgrader
    as a partial-credit score.
    """
    _number(answer, name)


def _number(answer: object, name: str) -> float:
    if answer is None or answer is Ellipsis:
        raise CheckFailed(f"{name} is not answered yet: replace None with your answer (a number)")
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        raise CheckFailed(f"{name} should be a number, got {describe(answer)}")
    return float(answer)


def check_value(
    answer: object,
    expected: float,
    name: str,
    *,
    rel: float = 1e-2,
    abs_tol: float = 0.0,
    mistakes: Mapping[float, str] | Iterable[tuple[float, str]] = (),
) -> None:
    """Grade a numeric answer by value, within ``rel`` (relative) or ``abs_tol`` (absolute).

    The expected value is never shown; a wrong answer that equals a listed mistake gets that mistake's
    message.

    Args:
        answer: the learner's answer (a number, or a one-element tensor).
        expected: the right value.
        name: the variable the learner sets, e.g. ``"answer_variance"``.
        rel: relative tolerance.
        abs_tol: absolute tolerance (for answers near zero).
        mistakes: ``{wrong value: message}`` for answers that typical mistakes give.

    Raises:
        CheckFailed: if the answer is missing, not a number, or wrong.
    """
    value = _number(answer, name)

    def close(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)

    if close(value, expected):
        return
    items = mistakes.items() if isinstance(mistakes, Mapping) else mistakes
    for wrong, message in items:
        if close(value, wrong):
            raise CheckFailed(f"{name} = {value:g} is not right: {message}")
    raise CheckFailed(f"{name} = {value:g} is not right; check your reasoning and try again")


def check_proportions(
    counts: Sequence[int],
    expected: Sequence[float],
    *,
    name: str,
    labels: Sequence[str] | None = None,
    mistakes: Mapping[tuple[float, ...], str] = MLM_MISTAKES,
    tolerance: float = 0.025,
) -> None:
    """:func:`tfcourse.grading.proportions.check_proportions`, with the 80/10/10 mistakes named by default."""
    _check_proportions(counts, expected, name=name, labels=labels, mistakes=mistakes, tolerance=tolerance)
