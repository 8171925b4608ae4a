"""training/txl_memory.py (checkpoint ch10-txl-memory): a short run learns, memory lengths are all scored, and
the checkpoint loads back as the trained Transformer-XL."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from tfcourse import checkpoints
from tfcourse.models.transformer_xl import TransformerXL, TransformerXLConfig, evaluate_long_sequence

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("txl_memory", ROOT / "training" / "txl_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_learns_and_its_checkpoint_loads_back(tmp_path):
    script = _script()
    args = ["--steps", "20", "--batch", "8", "--segment", "16", "--train-mem", "16", "--quiet"]
    meta = script.main([*args, "--eval-streams", "2", "--eval-len", "300", "--out", str(tmp_path)])
    for log in (meta["training"], meta["vanilla"]["training"]):
        losses = log["losses"]
        assert len(losses) == 20 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert set(meta["evaluation"]) == {str(m) for m in script.EVAL_MEMORIES}
    for row in meta["evaluation"].values():
        assert row["perplexity"] == pytest.approx(math.exp(row["loss"]), rel=1e-3)
        assert len(row["loss_by_position_in_segment"]) == 16

    model, saved = checkpoints.load_checkpoint("ch10-txl-memory", TransformerXL, TransformerXLConfig, tmp_path)
    assert saved["train_mem"] == model.config.mem_len == 16 and saved["script"] == "training/txl_memory.py"
    # The loaded (float16-rounded) weights reproduce the recorded held-out loss with 32 positions of memory.
    heldout = script.streams(script.subword.corpus_ids("bpe", "heldout"), 2, 300)
    loss = float(-evaluate_long_sequence(script.with_memory(model, 32), heldout, 16).mean())
    assert abs(loss - saved["evaluation"]["32"]["loss"]) < 0.01


def test_with_memory_keeps_the_weights_and_changes_only_the_memory(gen):
    script = _script()
    model = TransformerXL(TransformerXLConfig.tiny(mem_len=4)).eval()
    longer = script.with_memory(model, 12)
    assert longer.config.mem_len == 12 and longer.config.d_model == model.config.d_model
    for (name, a), (_, b) in zip(model.state_dict().items(), longer.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 64, (1, 24), generator=gen)
    # Without memory both models compute the same thing; with memory the longer one sees further back.
    torch.testing.assert_close(model(ids[:, :8]).logits, longer(ids[:, :8]).logits)
    short, long_ = (evaluate_long_sequence(m, ids, 4)[0] for m in (model, longer))
    torch.testing.assert_close(short[:7], long_[:7])  # within the first 4 + 4 tokens nothing is forgotten
    assert not torch.allclose(short[8:], long_[8:])
