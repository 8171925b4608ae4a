"""Grading random procedures by their observed frequencies, with stated error rates.

A procedure such as BERT's 80/10/10 split is checked by counting its outcomes over many draws. Each
category's observed fraction must lie within ``tolerance`` of its expected value. By the Chernoff bound on
binomial tails, ``P(|p̂ − p| ≥ t) ≤ exp(−n·KL(p + t ‖ p)) + exp(−n·KL(p − t ‖ p))`` for ``n`` draws, so:

* a **correct** procedure fails with probability at most the sum of those bounds over the categories
  (the *false-fail rate*);
* a procedure **off by at least twice the tolerance** in some category (its true fraction ``q`` with
  ``|q − p| ≥ 2t``) passes only if that category's estimate moves ``t`` towards ``p``: probability at most
  ``exp(−n·KL(q ∓ t ‖ q))`` (the *false-pass rate*).

:func:`error_rates` computes both bounds; :func:`draws_needed` the smallest ``n`` that puts both below a
rate (1e-6 by default); :func:`check_proportions` refuses to judge on fewer draws than that. With the
grader's per-student seeds the draws, and so the verdict, are the same at every re-grade.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tfcourse.grading.compare import CheckFailed

__all__ = ["MAX_ERROR_RATE", "check_proportions", "draws_needed", "error_rates"]

MAX_ERROR_RATE = 1e-6
"""Largest false-fail and false-pass rate a proportion check may have."""


def _kl(a: float, b: float) -> float:
    """Kullback-Leibler divergence between Bernoulli(a) and Bernoulli(b)."""
    if not 0 < b < 1:
        return math.inf if a != b else 0.0

    def term(x: float, y: float) -> float:
        return 0.0 if x <= 0 else x * math.log(x / y)

    return term(a, b) + term(1 - a, 1 - b)


def _tail(n: int, p: float, t: float) -> float:
    """Chernoff bound on ``P(p̂ ≥ p + t) + P(p̂ ≤ p − t)`` for ``n`` Bernoulli(p) draws."""
    up = math.exp(-n * _kl(p + t, p)) if p + t <= 1 else 0.0
    down = math.exp(-n * _kl(p - t, p)) if p - t >= 0 else 0.0
    return up + down


def error_rates(n: int, expected: Sequence[float], tolerance: float) -> tuple[float, float]:
    """``(false-fail, false-pass)`` upper bounds of :func:`check_proportions` on ``n`` draws (see module)."""
    false_fail = sum(_tail(n, p, tolerance) for p in expected if 0 < p < 1)
    false_pass = 0.0
    for p in expected:
        for q in (p - 2 * tolerance, p + 2 * tolerance):
            if 0 < q < 1:
                toward = q + tolerance if q < p else q - tolerance
                false_pass = max(false_pass, math.exp(-n * _kl(toward, q)))
    return min(false_fail, 1.0), false_pass


def draws_needed(expected: Sequence[float], tolerance: float, rate: float = MAX_ERROR_RATE) -> int:
    """The fewest draws for which both error rates of :func:`check_proportions` are below ``rate``."""
    if not 0 < tolerance < 0.5:
        raise ValueError(f"tolerance must lie in (0, 0.5), got {tolerance}")
    low, high = 1, 1
    while max(error_rates(high, expected, tolerance)) > rate:
        low, high = high, high * 2
    while low < high:
        mid = (low + high) // 2
        if max(error_rates(mid, expected, tolerance)) > rate:
            low = mid + 1
        else:
            high = mid
    return high


def check_proportions(
    counts: Sequence[int],
    expected: Sequence[float],
    *,
    name: str,
    labels: Sequence[str] | None = None,
    mistakes: Mapping[tuple[float, ...], str] | None = None,
    tolerance: float = 0.025,
) -> None:
    """Check observed category counts against expected fractions.

    Passes when every observed fraction is within ``tolerance`` of its expected value. On at least
    :func:`draws_needed` draws (checked: fewer is an authoring error), a correct procedure fails and a
    procedure off by ``2 * tolerance`` or more in any category passes, each with probability below
    :data:`MAX_ERROR_RATE` (1e-6). The default tolerance, 2.5 points, catches any category off by 5.

    Args:
        counts: how many draws fell into each category, e.g. ``(masked, random, unchanged)``.
        expected: the expected fraction of each category (summing to 1).
        name: what is being counted, for the message.
        labels: category names, for the message.
        mistakes: ``{wrong fractions: message}``; a failing count that matches one gets its message.
        tolerance: allowed deviation of each fraction (half the smallest error that must be caught).

    Raises:
        CheckFailed: naming the observed and expected fractions, or the matching mistake.
        ValueError: too few draws for the stated error rates.
    """
    counts = [int(c) for c in counts]
    if len(counts) != len(expected):
        raise CheckFailed(f"{name}: got {len(counts)} categories, expected {len(expected)}")
    total = sum(counts)
    if total == 0:
        raise CheckFailed(f"{name}: nothing was counted (no draws fell into any category)")
    needed = draws_needed(expected, tolerance)
    if total < needed:
        raise ValueError(
            f"{name}: {total} draws cannot decide within {tolerance} at a 1e-6 error rate; {needed} needed"
        )
    observed = [c / total for c in counts]

    def within(target: Sequence[float]) -> bool:
        return all(abs(o - p) <= tolerance for o, p in zip(observed, target, strict=True))

    if within(expected):
        return
    for wrong, message in (mistakes or {}).items():
        if len(wrong) == len(expected) and within(wrong):
            raise CheckFailed(f"{name} is wrong: {message}.")
    labels = labels or [f"#{i}" for i in range(len(counts))]
    shown = ", ".join(
        f"{label} {o:.3f} (expected {p:.3f})" for label, o, p in zip(labels, observed, expected, strict=True)
    )
    raise CheckFailed(f"{name}: observed fractions {shown} over {total} draws")
