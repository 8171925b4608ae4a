"""The performance appendix judges each goal right, marks it on its figure, and keeps its axis labels readable."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import report

ENV = {"device": "test CPU, 2 threads", "torch": "2.13.0", "python": "3.11"}


def ratio_run(*rows: tuple[str, float, str]) -> dict:
    return {"environment": ENV, "results": [{"what": w, "ratio": r, "goal": g, "dtype": "float32"} for w, r, g in rows]}


@pytest.mark.parametrize(
    ("goal", "what", "ratio", "expected"),
    [
        (">= 1.0", "forward", 0.95, "no"),
        (">= 1.0", "forward", 1.0, "yes"),
        ("< 1.0", "sparse", 1.0, "no"),
        ("<= 1.2 (note)", "RoPE", 1.05, "yes"),
        (">= 10 at 1024 tokens (CPU)", "tiny GPT generate 1024 tokens", 10.7, "yes"),
        (">= 10 at 1024 tokens (CPU)", "tiny GPT generate 1024 tokens", 9.9, "no"),
        (">= 10 at 1024 tokens (CPU)", "tiny GPT generate 512 tokens", 4.7, "-"),  # not the row it judges
        ("(teaching path)", "reference", 0.1, "-"),
    ],
)
def test_goal_verdicts(goal, what, ratio, expected):
    assert report.goal_met(ratio, goal, what) == expected


def test_seconds_and_speed_up_benchmarks_get_their_goals():
    check = {"environment": ENV, "results": [{"what": "bare kernel start", "seconds": 0.7},
                                              {"what": "tfcourse check (ch01)", "seconds": 5.5}]}  # fmt: skip
    kernel, checked = report.measures("check-cpu", check)
    assert kernel.goal is None and checked.met is False and checked.goal_label == "≤\u00a05\u00a0s"
    grading = {"environment": ENV, "ratio": 2.0, "results": [
        {"what": "nbgrader autograde (serial)", "seconds": 200.0},
        {"what": "tfcourse grade --workers 2 (sandboxed autograde + CSV)", "seconds": 100.0}]}  # fmt: skip
    serial, sandboxed = report.measures("grading-cpu", grading)
    assert serial.value == 1.0 and serial.goal is None
    assert sandboxed.value == pytest.approx(2.0) and sandboxed.met is True


def test_figure_marks_every_goal_labels_missed_rows_and_names_the_device():
    run = ratio_run(("met row", 2.0, ">= 1.0"), ("missed row", 0.5, ">= 0.8"), ("info row", 0.1, "(for information)"))
    fig = report.plot("attention-cpu", run)
    ax = fig.axes[0]
    goal_strokes = [line for line in ax.get_lines() if line.get_linewidth() > 2]
    assert sorted(line.get_xdata()[0] for line in goal_strokes) == [0.8, 1.0]
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("0.50") and "missed (goal ≥\u00a00.8)" in t for t in texts), texts
    assert not any("missed" in t for t in texts if t.startswith(("2.00", "0.10"))), texts
    red = [t.get_text() for t in ax.get_yticklabels() if t.get_color() == report.VERDICT_COLOURS["missed"]]
    assert red == ["missed row"]
    assert ENV["device"] in ax.get_title()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["met", "missed", "no goal", "goal"]


def test_log_axis_labels_do_not_crowd():
    run = ratio_run(("a", 0.05, "< 1.0"), ("b", 10.7, ">= 10 at 1024 tokens"))
    fig = report.plot("sparse-cpu", run)
    ax = fig.axes[0]
    fig.canvas.draw()
    major = [t for t in ax.get_xticklabels() if t.get_text()]
    assert 3 <= len(major) <= 7, [t.get_text() for t in major]
    assert all(not t.get_text() for t in ax.xaxis.get_minorticklabels())  # no 2×10⁻¹-style minor labels
    boxes = sorted((t.get_window_extent() for t in major), key=lambda box: box.x0)
    assert all(left.x1 < right.x0 for left, right in itertools.pairwise(boxes)), "tick labels overlap"


def test_committed_results_have_a_verdict_for_each_goal():
    runs = report.load_runs()
    assert runs, "no committed benchmark results"
    met, judged = report.tally(runs)
    table = report.summary_table(runs)
    assert judged == table.count("\n") - 1  # one table row per judged measure
    assert table.count("| met |") == met
