"""training/pixel_gpt.py (checkpoint ch12-pixels): a short run learns to predict digit cells, its checkpoint
loads back as the same model, and the loaded model generates valid images of the digit it is asked for."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from tfcourse import checkpoints, digits
from tfcourse.generation import generate
from tfcourse.models.gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--d-model", "32", "--layers", "1", "--heads", "2", "--d-ff", "64", "--batch", "32", "--dropout", "0"]


def _script():
    spec = importlib.util.spec_from_file_location("pixel_gpt", ROOT / "training" / "pixel_gpt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_learns_and_its_checkpoint_loads_back(tmp_path):
    script = _script()
    args = [*TINY, "--steps", "30", "--warmup", "5", "--eval-every", "10", "--lr", "1e-2"]
    result = script.main([*args, "--out", str(tmp_path), "--name", "pixels-test"])
    meta, live = result["meta"], result["model"].eval()
    evals = meta["curves"]["evals"]
    assert [s for s, _ in evals] == [0, 10, 20, 30] and meta["steps"] == 30
    assert evals[0][1] > 3.5  # an untrained model: about log2(27) bits, worse than uniform over the 17 levels
    assert evals[-1][1] < evals[0][1] - 1.0, evals  # held-out bits per cell fall
    assert 1.0 < meta["marginal_baseline_bits_per_cell"] < meta["uniform_bits_per_cell"] == round(math.log2(17), 4)
    assert meta["data"]["train_images"] + meta["data"]["heldout_images"] == 1797

    loaded, back = checkpoints.load_checkpoint("pixels-test", GPT, GPTConfig, tmp_path)
    assert loaded.config == live.config and back["heldout_bits_per_cell"] == meta["heldout_bits_per_cell"]
    heldout = digits.to_sequences(*digits.load_digits("heldout"))
    assert abs(script.bits_per_cell(loaded, heldout) - meta["heldout_bits_per_cell"]) < 1e-2

    prompts = digits.CLASS_OFFSET + torch.arange(10)[:, None]  # (10, 1): one class token per digit
    out = generate(loaded, prompts, 64, do_sample=True, generator=torch.Generator().manual_seed(0)).tokens
    assert out.shape == (10, 65) and torch.equal(out[:, :1], prompts)
    assert digits.from_sequences(out).shape == (10, 8, 8)


def test_marginal_baseline_is_the_per_cell_entropy():
    script = _script()
    gen = torch.Generator().manual_seed(0)
    # Cells that are always 0 in training and at test: nearly free (only the add-one smoothing costs).
    zeros = torch.zeros(1000, 64, dtype=torch.long)
    assert script.marginal_baseline(zeros, zeros) < 0.03
    # Cells uniform over the 17 levels: log2(17) bits.
    uniform = torch.randint(0, digits.LEVELS, (20000, 64), generator=gen)
    assert abs(script.marginal_baseline(uniform, uniform[:2000]) - math.log2(digits.LEVELS)) < 0.02
