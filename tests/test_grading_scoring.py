"""Grader-side scoring: answer names, forbidden lists, deterministic seeds; proportion checks' error rates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests import grading_cases as cases
from tfcourse.grading import CheckFailed
from tfcourse.grading.proportions import check_proportions, draws_needed, error_rates
from tfcourse.grading.runner import read_notebook, release_version, restore_locked_cells
from tfcourse.grading.sandbox import Isolation
from tfcourse.grading.scoring import Seeds, answer_names, forbidden_paths, score_notebook

EXERCISES = Path(__file__).resolve().parents[1] / "exercises"
SOURCES = sorted(EXERCISES.glob("ch*/ch*.ipynb"))
E1 = EXERCISES / "ch01-self-attention" / "ch01-self-attention.ipynb"


def _setup_namespace(source):
    namespace: dict = {}
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("locked") and not meta.get("grade") and not meta.get("solution"):
            exec(cell.source, namespace)
    return namespace


def test_answer_names_are_what_the_solution_cells_define():
    assert answer_names(read_notebook(E1)) == ["attention_weights", "self_attention", "answer_free_scores"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_every_exercise_says_ahead_of_time_what_it_forbids(path):
    source = read_notebook(path)
    paths = forbidden_paths(source, _setup_namespace(source))
    assert paths, "every exercise forbids the references of what it asks for"
    assert all(p.startswith(("tfcourse.", "torch.")) for p in paths)


def _flaky(release, source):
    # Right about half the time: which trials go wrong depends on the random state of the learner's process.
    code = (
        "def attention_weights(q, k):\n"
        "    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
        "    return w if torch.rand(()) < 0.7 else w.flip(-1)\n"
    )
    nb = cases.answer(cases.solved(release, source), "attention_weights", code)
    restore_locked_cells(nb, source)
    return nb


def test_a_regrade_gives_the_same_score_and_message():
    source = read_notebook(E1)
    nb = _flaky(release_version(source), source)
    unsafe = Isolation(unsafe=True)
    outcomes = set()
    for student in ("ann", "ann", "ann"):
        result = score_notebook(nb, source, isolation=unsafe, timeout=30, seeds=Seeds(b"k", student, "ps", "n"))
        outcomes.add(tuple((p.grade_id, p.score, p.reason) for p in result.parts))
    assert len(outcomes) == 1
    others = set()
    for student in ("ben", "cat", "dan", "eve"):
        result = score_notebook(nb, source, isolation=unsafe, timeout=30, seeds=Seeds(b"k", student, "ps", "n"))
        others.add(tuple((p.grade_id, p.reason) for p in result.parts))
    assert len(others | outcomes) > 1  # other students draw other inputs


# -- proportions -------------------------------------------------------------------------------------------------
def _exact_two_sided(n: int, p: float, t: float) -> float:
    def pmf(k: int) -> float:
        return math.exp(
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * math.log(p)
            + (n - k) * math.log1p(-p)
        )

    return sum(pmf(k) for k in range(n + 1) if abs(k / n - p) > t)


@pytest.mark.parametrize(("n", "p", "t"), [(400, 0.1, 0.03), (1000, 0.8, 0.025), (600, 0.15, 0.04)])
def test_the_stated_bound_is_at_least_the_exact_binomial_tail(n, p, t):
    bound, _ = error_rates(n, (p, 1 - p), t)
    assert _exact_two_sided(n, p, t) <= bound / 2 + 1e-15  # the bound sums both categories' (equal) tails


def test_error_rates_are_below_one_in_a_million_at_the_needed_draws():
    for expected, tolerance in (((0.8, 0.1, 0.1), 0.025), ((0.15, 0.85), 0.0075)):
        n = draws_needed(expected, tolerance)
        assert max(error_rates(n, expected, tolerance)) <= 1e-6
        assert max(error_rates(n - 1, expected, tolerance)) > 1e-6


def _draw(split, n, generator):
    u = torch.rand(n, generator=generator)
    a, b = split[0], split[0] + split[1]
    return [int((u < a).sum()), int(((u >= a) & (u < b)).sum()), int((u >= b).sum())]


def test_a_correct_split_always_passes_and_a_wrong_one_always_fails():
    generator = torch.Generator().manual_seed(0)
    n = draws_needed((0.8, 0.1, 0.1), 0.025)
    for _ in range(200):
        check_proportions(_draw((0.8, 0.1, 0.1), n, generator), (0.8, 0.1, 0.1), name="split")
        for wrong in ((0.8, 0.02, 0.18), (0.75, 0.15, 0.1), (0.85, 0.1, 0.05)):
            with pytest.raises(CheckFailed):
                check_proportions(_draw(wrong, n, generator), (0.8, 0.1, 0.1), name="split")


def test_too_few_draws_is_an_authoring_error():
    with pytest.raises(ValueError, match="needed"):
        check_proportions([80, 10, 10], (0.8, 0.1, 0.1), name="split")


def test_failures_in_hidden_tests_do_not_describe_their_inputs():
    source = read_notebook(E1)
    release = release_version(source)
    wrong_dtype = (
        "def attention_weights(q, k):\n"
        "    q, k = q.float(), k.float()\n"
        "    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
    )
    unscaled = "def attention_weights(q, k):\n    return torch.softmax(q @ k.transpose(-2, -1), dim=-1)\n"
    reasons = {}
    for label, code in (("hidden", wrong_dtype), ("visible", unscaled)):
        nb = cases.answer(cases.solved(release, source), "attention_weights", code)
        restore_locked_cells(nb, source)
        result = score_notebook(nb, source, isolation=Isolation(unsafe=True), timeout=30)
        reasons[label] = next(p.reason for p in result.parts if p.grade_id == "test_attention_weights")
    assert "float64" in reasons["hidden"] and "(inputs:" not in reasons["hidden"]
    assert "√d_k" in reasons["visible"] or "scale" in reasons["visible"]


def test_cells_that_claim_to_be_tests_stay_learner_code(tmp_path):
    import nbformat

    source = read_notebook(E1)
    nb = release_version(source)
    canary = tmp_path / "canary"
    forged = nbformat.v4.new_code_cell(f"open({str(canary)!r}, 'w').write('x')")
    forged.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 50, "grade_id": "forged"}
    nb.cells.insert(1, forged)
    result = score_notebook(nb, source, isolation=Isolation(), timeout=30)
    assert [p.grade_id for p in result.parts] == ["test_attention_weights", "test_self_attention", "test_free_scores"]
    assert result.score == 0 and not canary.exists()
