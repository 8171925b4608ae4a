"""The performance appendix's view of the benchmark results: goals, verdicts and one figure per benchmark.

Every benchmark script writes ``benchmarks/results/NAME-DEVICE.json``. Most record one row per measurement
with a ``ratio`` and a ``goal`` text such as ``">= 1.0"``, ``"< 1.0"``, ``">= 10 at 1024 tokens (CPU)"`` (a
goal that applies only to the row measured at 1024 tokens) or ``"(for information)"`` (no goal). Two report
seconds and one overall ratio instead (``check`` and ``grading``); their goals, stated by the scripts
themselves when they print their result, are kept here (:data:`CHECK_GOAL_SECONDS`,
:data:`GRADING_GOAL_SPEEDUP`), and ``grading`` is shown as each row's speed-up over its first (serial) row.

:func:`measures` turns a benchmark's JSON into :class:`Measure` rows, each judged against its goal
(:attr:`Measure.met` is True, False, or None where no goal applies); :func:`plot` draws one benchmark: a bar
per measure coloured by its verdict, the goal marked on the bar, and missed rows labelled as such. The book's
``performance.md`` page and ``run_all.py``'s table both judge goals with :func:`goal_met`.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# A goal: a comparison and a number, optionally "at N tokens" (the row it applies to), then an optional note.
_GOAL = re.compile(r"^\s*(>=|<=|<|>)\s*([0-9.]+)\s*(?:at\s+(\d+)\s+tokens)?\s*(\(.*\))?\s*$")

SYMBOLS = {">=": "≥", "<=": "≤", "<": "<", ">": ">"}

CHECK_GOAL_SECONDS = 5.0
"""``check``: checking one exercise with ``tfcourse check`` takes at most this many seconds."""

GRADING_GOAL_SPEEDUP = 1.7
"""``grading``: the sandboxed ``tfcourse grade --workers 2`` is at least this many times as fast as serial
``nbgrader autograde`` (its first row, the baseline)."""


@dataclass(frozen=True)
class Goal:
    """A numeric goal: ``value OP bound``; ``tokens`` restricts it to the row measured at that many tokens."""

    op: str
    bound: float
    tokens: int | None = None

    def applies_to(self, what: str) -> bool:
        """Whether the goal judges the row described by ``what``."""
        return self.tokens is None or re.search(rf"\b{self.tokens} tokens\b", what) is not None

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the goal."""
        return {">=": value >= self.bound, "<=": value <= self.bound, "<": value < self.bound, ">": value > self.bound}[
            self.op
        ]

    @property
    def label(self) -> str:
        """The goal as the page prints it, e.g. ``"≥ 0.8"``."""
        return f"{SYMBOLS[self.op]}\u00a0{self.bound:g}"  # no line break inside a goal


def parse_goal(text: str) -> Goal | None:
    """The numeric goal in ``text`` (``">= 0.8"``, ``"< 1.0 (note)"``, ``">= 10 at 1024 tokens"``), else None."""
    match = _GOAL.match(text or "")
    if match is None:
        return None
    op, bound, tokens, _note = match.groups()
    return Goal(op, float(bound), int(tokens) if tokens else None)


def goal_met(ratio: float, goal: str, what: str = "") -> str:
    """``"yes"``/``"no"`` for a numeric goal that applies to the row ``what``; ``"-"`` otherwise."""
    parsed = parse_goal(goal)
    if parsed is None or not parsed.applies_to(what):
        return "-"
    return "yes" if parsed.met(ratio) else "no"


@dataclass(frozen=True)
class Measure:
    """One bar of a benchmark's figure: what was measured, its value, and its goal if one applies."""

    what: str
    detail: str
    value: float
    unit: str  # "ratio" or "s"
    goal: Goal | None

    @property
    def goal_label(self) -> str:
        """The goal as printed (``"≥ 0.8"``), or ``""``."""
        if self.goal is None:
            return ""
        return self.goal.label + ("\u00a0s" if self.unit == "s" else "")

    @property
    def met(self) -> bool | None:
        """True or False against the goal; None for a measure given for information."""
        return None if self.goal is None else self.goal.met(self.value)


def load_runs(folder: Path = RESULTS) -> dict[str, dict]:
    """``{file stem: payload}`` of every results JSON in ``folder``, sorted by name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def benchmark_of(stem: str) -> str:
    """``"attention"`` for the results file ``attention-cpu``."""
    return stem.rsplit("-", 1)[0]


def measures(stem: str, run: dict) -> list[Measure]:
    """The judged measures of one results file (see the module docstring for the two layouts)."""
    name = benchmark_of(stem)
    rows = run["results"]
    if name == "check":  # seconds; the goal is on the check itself
        goal = Goal("<=", CHECK_GOAL_SECONDS)
        return [
            Measure(r["what"], "", r["seconds"], "s", goal if r["what"].startswith("tfcourse check") else None)
            for r in rows
        ]
    if name == "grading":  # speed-up over the serial baseline, the first row
        goal = Goal(">=", GRADING_GOAL_SPEEDUP)
        baseline = rows[0]["seconds"]
        return [
            Measure(
                r["what"],
                "" if i else "baseline",
                baseline / r["seconds"],
                "ratio",
                goal if "sandboxed" in r["what"] else None,
            )
            for i, r in enumerate(rows)
        ]
    out = []
    for row in run["results"]:
        goal = parse_goal(str(row.get("goal", "")))
        if goal is not None and not goal.applies_to(row["what"]):
            goal = None
        detail = row.get("shape") or ""
        out.append(Measure(row["what"], detail, row["ratio"], "ratio", goal))
    return out


def verdict(measure: Measure) -> str:
    """``"met"``, ``"missed"`` or ``"no goal"``."""
    return {True: "met", False: "missed", None: "no goal"}[measure.met]


VERDICT_COLOURS = {"met": "#0072B2", "missed": "#D55E00", "no goal": "#999999"}  # Okabe–Ito blue, vermillion


def _log_ticks(low: float, high: float) -> list[float]:
    """Readable log-axis ticks (1-2-5 steps) between ``low`` and ``high``."""
    ticks = []
    for exponent in range(-4, 5):
        for mantissa in (1, 2, 5):
            tick = mantissa * 10.0**exponent
            if low <= tick <= high:
                ticks.append(tick)
    if len(ticks) > 7:  # a wide range: decades only, so the labels never crowd
        ticks = [t for t in ticks if f"{t:g}".lstrip("0.").startswith("1")]
    return ticks


def plot(stem: str, run: dict, wrap: int = 40):
    """One benchmark's figure: a bar per measure, its goal marked, missed rows labelled. Returns the figure.

    Ratios go on a log axis (a line marks parity, 1); seconds on a linear one. Bars are blue where the goal
    is met, vermillion where it is missed (and the value is followed by "missed"), grey where no goal applies;
    a black stroke across a bar marks its goal. The title names the device the numbers came from.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    from tfcourse.style import figsize

    rows = measures(stem, run)
    labels = []
    for m in rows:
        label = textwrap.fill(m.what, wrap)
        labels.append(f"{label}\n{m.detail}" if m.detail else label)
    lines = sum(label.count("\n") + 1 for label in labels)
    height = 1.0 + 0.16 * lines + 0.12 * len(rows)
    fig, ax = plt.subplots(figsize=figsize(aspect=height / 6.4), layout="constrained")
    verdicts = [verdict(m) for m in rows]
    positions = range(len(rows))
    ax.barh(positions, [m.value for m in rows], height=0.62, color=[VERDICT_COLOURS[v] for v in verdicts])
    values = [m.value for m in rows] + [m.goal.bound for m in rows if m.goal]
    ratio = rows[0].unit == "ratio"
    if ratio:
        low, high = min(*values, 1.0) / 1.6, max(*values, 1.0) * 4.0  # room on the right for the labels
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_locator(FixedLocator(_log_ticks(low, high)))
        ax.xaxis.set_major_formatter(lambda value, _pos: f"{value:g}")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axvline(1.0, color="black", linewidth=0.6, linestyle=":")
        ax.set_xlabel("ratio (log scale; dotted line: 1)")
    else:
        ax.set_xlim(0, max(values) * 1.45)
        ax.set_xlabel("seconds")
    for i, (m, v) in enumerate(zip(rows, verdicts, strict=True)):
        if m.goal is not None:
            ax.plot([m.goal.bound] * 2, [i - 0.42, i + 0.42], color="black", linewidth=2.2, solid_capstyle="butt")
        text = f"{m.value:.2f}" if ratio else f"{m.value:.1f} s"
        if v == "missed":
            text += f"  missed (goal {m.goal_label})"
        elif v == "met":
            text += f"  (goal {m.goal_label})"
        end = max(m.value, m.goal.bound) if m.goal else m.value
        x = end * 1.12 if ratio else end + 0.02 * ax.get_xlim()[1]
        ax.text(x, i, text, va="center", fontsize=7.5, color="#D55E00" if v == "missed" else "black")
    ax.set_yticks(list(positions), labels)
    for tick, v in zip(ax.get_yticklabels(), verdicts, strict=True):
        if v == "missed":
            tick.set_color("#D55E00")
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.set_title(f"{benchmark_of(stem)}: {run['environment']['device']}, torch {run['environment']['torch']}")
    handles = [Patch(color=VERDICT_COLOURS[v], label=v) for v in ("met", "missed", "no goal") if v in verdicts]
    if any(m.goal for m in rows):
        handles.append(Line2D([], [], color="black", linewidth=2.2, label="goal"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7.5)
    return fig


def summary_table(runs: dict[str, dict]) -> str:
    """A Markdown table of every measure that has a goal: benchmark, measure, value, goal and verdict."""
    lines = ["| benchmark | measure | value | goal | verdict |", "| --- | --- | --- | --- | --- |"]
    for stem, run in runs.items():
        for m in measures(stem, run):
            if m.goal is None:
                continue
            value = f"{m.value:.2f}" if m.unit == "ratio" else f"{m.value:.1f} s"
            mark = "met" if m.met else "**missed**"
            what = f"{m.what} ({m.detail})" if m.detail else m.what
            lines.append(f"| {benchmark_of(stem)} | {what} | {value} | {m.goal_label} | {mark} |")
    return "\n".join(lines)


def tally(runs: dict[str, dict]) -> tuple[int, int]:
    """``(goals met, goals judged)`` over every results file."""
    judged = [m.met for stem, run in runs.items() for m in measures(stem, run) if m.goal is not None]
    return sum(judged), len(judged)
