"""training/sparsity.py (checkpoint ch12-sparsity): a short run learns, the checkpoint loads back, and the
sparsity summary it stores is what keys_for_mass gives on the recorded attention."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tfcourse import checkpoints
from tfcourse.analysis import keys_for_mass
from tfcourse.models.gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--d-model", "32", "--layers", "2", "--heads", "2", "--d-ff", "64", "--context", "32", "--batch", "16"]


def _script():
    spec = importlib.util.spec_from_file_location("sparsity", ROOT / "training" / "sparsity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_learns_and_its_checkpoint_loads_back(tmp_path):
    script = _script()
    args = [*TINY, "--steps", "12", "--warmup", "2", "--eval-every", "4", "--eval-windows", "8"]
    result = script.main([*args, "--out", str(tmp_path), "--name", "sparsity-test"])
    meta = result["meta"]
    losses, evals = meta["curves"]["losses"], meta["curves"]["evals"]
    assert len(losses) == 12 and [s for s, _ in evals] == [0, 4, 8, 12]
    assert evals[-1][1] < evals[0][1] - 0.1, evals
    for when in ("untrained", "trained"):
        summary = meta["sparsity"][when]
        assert len(summary["keys_per_head"]) == 2 and len(summary["keys_per_head"][0]) == 2  # (L, H)
        assert 1 <= summary["keys_mean"] <= summary["available_keys"] == 24.5  # queries 16..31 see 17..32 keys

    loaded, back = checkpoints.load_checkpoint("sparsity-test", GPT, GPTConfig, tmp_path)
    windows = script.heldout_windows(8, 32)
    weights = script.attention_maps(loaded, windows)  # (L, B, H, T, T)
    assert weights.shape == (2, 8, 2, 32, 32)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 8, 2, 32))
    assert torch.all(weights.triu(1) == 0)  # causal: no weight on later keys
    # The stored summary is reproduced from the loaded (float16-rounded) weights, up to rounding.
    recomputed = keys_for_mass(weights, 0.9)[..., 16:].float().mean(dim=(1, 3))  # (L, H)
    stored = torch.tensor(back["sparsity"]["trained"]["keys_per_head"])
    assert (recomputed - stored).abs().max() < 0.5
    # The untrained model is the same seed's initialisation.
    fresh = script.build_model(script.parse_args(TINY))
    untrained = keys_for_mass(script.attention_maps(fresh.eval(), windows), 0.9)[..., 16:].float().mean(dim=(1, 3))
    torch.testing.assert_close(
        untrained, torch.tensor(back["sparsity"]["untrained"]["keys_per_head"]), atol=0.01, rtol=0
    )
