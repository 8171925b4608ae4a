"""training/warmup.py: the four runs start alike, learn, and the curves-only record loads back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tfcourse import checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"training_{name}", ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_four_short_runs_learn_and_the_record_loads_back(tmp_path):
    warmup = _script("warmup")
    tiny = ["--d-model", "32", "--layers", "2", "--heads", "2", "--d-ff", "64", "--context", "16", "--batch", "8"]
    result = warmup.main([*tiny, "--steps", "24", "--warmup", "8", "--lr", "1e-2", "--eval-every", "8",
                          "--eval-windows", "8", "--out", str(tmp_path)])  # fmt: skip
    assert not (tmp_path / "ch06-warmup.safetensors").exists()
    back = checkpoints.load_curves("ch06-warmup", tmp_path)
    assert back == result["meta"] and back["script"] == "training/warmup.py" and "device" in back["provenance"]
    runs = back["runs"]
    assert sorted((r["norm"], r["warmup_steps"]) for r in runs.values()) == [
        ("post", 0), ("post", 8), ("pre", 0), ("pre", 8)
    ]  # fmt: skip
    for name, run in runs.items():
        evals = [value for _, value in run["curves"]["evals"]]
        assert evals[-1] < evals[0] - 0.5, (name, evals)
        lrs = run["curves"]["lrs"]
        first = 1e-2 / 8 if run["warmup_steps"] else 1e-2  # warm-up starts at peak / warm-up steps
        assert abs(lrs[0] - first) < 0.05 * first, (name, lrs[0])
    # same initial weights: runs of one norm start from the same held-out loss
    starts = {(r["norm"], r["curves"]["evals"][0][1]) for r in runs.values()}
    assert len(starts) == 2, starts
