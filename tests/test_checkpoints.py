"""Checkpoint files: exact round trips, safe loading, and the shipped set's size and provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tfcourse import checkpoints
from tfcourse.models.gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
BUDGET_BYTES = 20 * 2**20  # all checkpoints of the book together


def test_a_checkpoint_round_trips_through_float16(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=50))
    meta = {"script": "training/example.py", "provenance": checkpoints.provenance("cpu")}
    checkpoints.save_checkpoint("example", model, meta, tmp_path)
    loaded, back = checkpoints.load_checkpoint("example", GPT, GPTConfig, tmp_path)
    assert back["config"]["vocab_size"] == 50 and back["script"] == "training/example.py"
    assert checkpoints.checkpoint_names(tmp_path) == ["example"]
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        expected = model.eval()(ids)
        torch.testing.assert_close(loaded(ids), expected, atol=2e-2, rtol=1e-2)  # float16 storage
    for key, value in loaded.state_dict().items():
        assert value.dtype == model.state_dict()[key].dtype, key


def test_unknown_checkpoints_are_named(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint named 'nothing'"):
        checkpoints.load_state("nothing", tmp_path)


def test_provenance_says_which_device_made_a_checkpoint():
    origin = checkpoints.provenance("cpu")
    assert origin["device"].startswith("cpu") and origin["torch"] == torch.__version__


def test_shipped_checkpoints_fit_the_budget_and_say_where_they_come_from():
    folder = checkpoints.CHECKPOINT_DIR
    files = [p for p in folder.iterdir() if p.suffix in (".json", ".safetensors")]
    total = sum(p.stat().st_size for p in files)
    assert total <= BUDGET_BYTES, f"checkpoints take {total / 2**20:.1f} MiB (budget 20 MiB)"
    for meta_file in folder.glob("*.json"):
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        assert meta.get("script", "").startswith("training/"), f"{meta_file.name}: which script made it?"
        text = json.dumps(meta)
        assert "device" in text, f"{meta_file.name}: which device made it?"
        assert (ROOT / meta["script"]).is_file(), f"{meta_file.name}: {meta['script']} does not exist"


def test_tied_weights_are_stored_once_and_come_back_tied(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=50))  # the output layer shares the token embedding
    checkpoints.save_checkpoint("tied", model, {"script": "training/example.py"}, tmp_path)
    from safetensors.torch import load_file

    stored = load_file(tmp_path / "tied.safetensors")
    assert "lm_head.weight" not in stored and "embed.tokens.weight" in stored
    loaded, meta = checkpoints.load_checkpoint("tied", GPT, GPTConfig, tmp_path)
    assert meta["tied"] == {"lm_head.weight": "embed.tokens.weight"}
    assert loaded.lm_head.weight is loaded.embed.tokens.weight
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight.half().float())
    untied = GPT(GPTConfig.tiny(vocab_size=50, tie_weights=False))
    checkpoints.save_checkpoint("untied", untied, {"script": "training/example.py"}, tmp_path)
    assert "lm_head.weight" in load_file(tmp_path / "untied.safetensors")
    assert "tied" not in checkpoints.load_state("untied", tmp_path)[1]


def test_curves_only_records_round_trip_without_weights(tmp_path):
    meta = {"script": "training/example.py", "runs": {"a": {"losses": [3.0, 2.5]}}}
    path = checkpoints.save_curves("curves", meta, tmp_path)
    assert path.name == "curves.json" and not (tmp_path / "curves.safetensors").exists()
    assert checkpoints.load_curves("curves", tmp_path) == meta
    assert checkpoints.checkpoint_names(tmp_path) == []  # no weights: not a checkpoint
    with pytest.raises(ValueError, match="no curves record named 'other'"):
        checkpoints.load_curves("other", tmp_path)
    checkpoints.save_checkpoint("weights", GPT(GPTConfig.tiny()), {"script": "training/example.py"}, tmp_path)
    with pytest.raises(ValueError, match="weights"):
        checkpoints.save_curves("weights", meta, tmp_path)
