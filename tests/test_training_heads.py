"""training/heads.py: a few steps of a tiny model learn something, and the checkpoint loads back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tfcourse import checkpoints
from tfcourse.models.gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"training_{name}", ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_learns_and_its_checkpoint_loads_back(tmp_path):
    heads = _script("heads")
    tiny = ["--d-model", "32", "--layers", "1", "--heads", "2", "--d-ff", "64", "--context", "16", "--batch", "8"]
    result = heads.main([*tiny, "--steps", "30", "--lr", "1e-2", "--eval-every", "10", "--eval-windows", "8",
                         "--out", str(tmp_path)])  # fmt: skip
    meta = result["meta"]
    evals = [value for _, value in meta["curves"]["evals"]]
    assert evals[-1] < evals[0] - 0.5, evals  # from ~log(2048) ≈ 7.6 towards unigram statistics
    assert meta["steps"] == 30 and meta["script"] == "training/heads.py"
    assert "device" in meta["provenance"]
    model, back = checkpoints.load_checkpoint("ch03-heads", GPT, GPTConfig, tmp_path)
    assert back["heldout_loss"] == meta["heldout_loss"]
    assert (model.config.num_layers, model.config.num_heads) == (1, 2)
    windows = heads.heldout_windows(8, 16)
    mask = torch.ones(1, 2)
    mask[0, 1] = 0
    assert abs(heads.heldout_loss(model, windows) - meta["heldout_loss"]) < 0.05  # float16 storage
    with torch.no_grad():
        assert float(model.loss(windows, head_mask=mask)) != float(model.loss(windows))
