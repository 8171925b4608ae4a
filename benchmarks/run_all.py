"""Run every benchmark script and print one combined table of their ratios.

Run ``python benchmarks/run_all.py`` (this is ``make benchmark``). Each script in ``SCRIPTS`` runs in its
own process with the same ``--device``, ``--quick`` and ``--out``; its own lines are printed as it goes,
then one table gathers every row of the JSON files they wrote, with whether a numeric goal is met. A
script that fails is reported and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS

HERE = Path(__file__).resolve().parent

# Benchmark scripts in this folder, run in this order; add new ones here.
SCRIPTS = ["attention", "generation", "sparse", "variants", "models"]

# A goal the table can check: a comparison and a number, optionally followed by a note in parentheses.
# Anything else ("(teaching path)", ">= 10 at 1024 tokens") is shown but not judged.
_GOAL = re.compile(r"^\s*(>=|<=|<|>)\s*([0-9.]+)\s*(\(.*\))?\s*$")


def goal_met(ratio: float, goal: str) -> str:
    """``"yes"``/``"no"`` for goals such as ``">= 0.8"`` or ``"<= 0.11 (…)"``; ``"-"`` for descriptive ones."""
    match = _GOAL.match(goal)
    if match is None:
        return "-"
    op, bound = match.group(1), float(match.group(2))
    met = {">=": ratio >= bound, "<=": ratio <= bound, "<": ratio < bound, ">": ratio > bound}[op]
    return "yes" if met else "no"


def run_script(name: str, args: argparse.Namespace) -> list[dict]:
    """Run ``benchmarks/NAME.py`` with the shared options; return its result rows (empty if it failed)."""
    command = [sys.executable, str(HERE / f"{name}.py"), "--device", args.device, "--out", str(args.out)]
    command += ["--quick"] if args.quick else []
    print(f"\n== {name}: {' '.join(command[1:])}", flush=True)
    if subprocess.run(command).returncode != 0:
        return []
    payload = json.loads((args.out / f"{name}-{args.device}.json").read_text())
    return [{"benchmark": name, **row} for row in payload["results"]]


def table(rows: list[dict]) -> str:
    """One line per measurement: benchmark, what, shape, dtype, ratio, goal and whether it is met."""
    header = ("benchmark", "what", "shape", "dtype", "ratio", "goal", "met")
    lines = []
    for row in rows:  # every script records what, ratio and goal; shape and dtype where they apply
        goal = str(row.get("goal", "-"))
        cells = (row["benchmark"], row["what"], row.get("shape", ""), row.get("dtype", ""), f"{row['ratio']:.2f}")
        lines.append((*cells, goal, goal_met(row["ratio"], goal)))
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *lines]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes and short timings, for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    args = parser.parse_args()
    rows, failed = [], []
    for name in args.only or SCRIPTS:
        script_rows = run_script(name, args)
        rows += script_rows
        if not script_rows:
            failed.append(name)
    print("\n" + table(rows))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
