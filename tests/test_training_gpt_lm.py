"""training/gpt_lm.py (checkpoint ch07-gpt): a short run learns, and its checkpoint loads back as the same model;
the evaluation helpers it uses (fixed held-out windows, mean language-model loss)."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tfcourse import checkpoints
from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.training import evaluation_windows, lm_loss

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--d-model", "32", "--layers", "1", "--heads", "2", "--d-ff", "64", "--context", "32", "--batch", "16"]


def _script():
    spec = importlib.util.spec_from_file_location("gpt_lm", ROOT / "training" / "gpt_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_learns_and_its_checkpoint_loads_back(tmp_path):
    args = [*TINY, "--steps", "12", "--warmup", "2", "--eval-every", "4", "--eval-windows", "8"]
    result = _script().main([*args, "--out", str(tmp_path), "--name", "gpt-test"])
    meta, live = result["meta"], result["model"].eval()
    losses, evals = meta["curves"]["losses"], meta["curves"]["evals"]
    assert len(losses) == meta["steps"] == 12 and [s for s, _ in evals] == [0, 4, 8, 12]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses
    assert evals[-1][1] < evals[0][1] - 0.1, evals  # held-out loss falls too
    assert meta["heldout_perplexity"] == pytest.approx(math.exp(meta["heldout_loss"]), rel=1e-3)
    assert meta["script"] == "training/gpt_lm.py" and meta["provenance"]["device"].startswith("cpu")

    loaded, back = checkpoints.load_checkpoint("gpt-test", GPT, GPTConfig, tmp_path)
    assert loaded.config == live.config and back["heldout_loss"] == meta["heldout_loss"]
    ids = torch.randint(0, live.config.vocab_size, (3, 32), generator=torch.Generator().manual_seed(0))
    stored = copy.deepcopy(live)  # the in-memory model with its weights rounded as the file stores them
    with torch.no_grad():
        for p in stored.parameters():
            p.copy_(p.half().float())
        torch.testing.assert_close(loaded(ids), stored(ids), rtol=1e-5, atol=1e-5)
        # and float16 storage moves the loss by far less than training did
        assert abs(loaded.loss(ids).item() - live.loss(ids).item()) < 1e-2
    assert (tmp_path / "gpt-test.safetensors").stat().st_size < 2 * sum(p.numel() for p in live.parameters()) + 10_000


def test_evaluation_windows_are_fixed_and_span_the_stream():
    ids = torch.arange(1000)
    windows = evaluation_windows(ids, 5, 10)
    assert windows.shape == (5, 10) and torch.equal(windows, evaluation_windows(ids, 5, 10))
    assert windows[0, 0] == 0 and windows[-1, -1] == 999  # first and last tokens included
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(5, 9, dtype=torch.long))  # contiguous
    with pytest.raises(ValueError, match="length must be in"):
        evaluation_windows(ids, 5, 1001)
    with pytest.raises(ValueError, match="1-D stream"):
        evaluation_windows(ids[None], 5, 10)


def test_lm_loss_is_the_mean_next_token_cross_entropy():
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(dropout=0.1)).train()
    windows = torch.randint(0, 64, (7, 12))
    value = lm_loss(model, windows, batch_size=3)  # batches of 3, 3 and 1 windows
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        logits = model(windows)[:, :-1]  # (B, T-1, V): position n predicts token n + 1
        expected = F.cross_entropy(logits.reshape(-1, 64), windows[:, 1:].reshape(-1)).item()
    assert value == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="windows must be"):
        lm_loss(model, windows[0])
