"""The benchmark scripts keep running (a smoke test; no timing is asserted, the machine is noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["attention", "generation", "sparse", "variants", "models"])
def test_benchmark_runs_and_writes_ratios(script, tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), "--quick", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / f"{script}-cpu.json").read_text())
    assert payload["environment"]["torch"].startswith("2.13.0")
    assert payload["results"], "no measurement recorded"
    for row in payload["results"]:
        assert row["ratio"] > 0
        assert f"ratio={row['ratio']:.2f}" in result.stdout


def test_run_all_prints_one_table_of_every_scripts_ratios(tmp_path):
    options = ["--quick", "--device", "cpu", "--out", str(tmp_path), "--only", "sparse"]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), *options],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "sparse-cpu.json").read_text())["results"]
    table = result.stdout.split("benchmark  ", 1)[1]  # the combined table comes after the scripts' own output
    assert table.count("\nsparse ") == len(rows)
    for row in rows:
        assert f"{row['ratio']:.2f}" in table and row["what"] in table


def test_check_benchmark_runs_and_writes_its_ratio(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "check.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "check-cpu.json").read_text())
    assert payload["ratio"] > 0 and all(row["seconds"] > 0 for row in payload["results"])
