"""training/funnel_pooling.py (ch11-funnel-pooling.json): a short run of the three block layouts learns, and
pooling lowers the counted FLOPs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("funnel_pooling", ROOT / "training" / "funnel_pooling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_learns_and_pooling_costs_fewer_flops(tmp_path):
    script = _script()
    args = ["--steps", "20", "--batch", "8", "--length", "32", "--eval-windows", "16", "--quiet"]
    script.main([*args, "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "ch11-funnel-pooling.json").read_text())
    runs = saved["runs"]
    assert list(runs) == list(script.BLOCKS) and saved["script"] == "training/funnel_pooling.py"
    for name, run in runs.items():
        losses, evals = run["training"]["losses"], run["training"]["evals"]
        assert len(losses) == 20 and evals[0][0] == 0 and evals[-1][0] == 20
        assert evals[-1][1] < evals[0][1] - 0.3, (name, evals)  # the held-out loss falls (one fixed masking)
        assert run["block_lengths"][0] == 32 and 0 <= run["heldout_accuracy"] <= 1
    flops = [run["forward_flops"] for run in runs.values()]
    assert flops[0] > flops[1] > flops[2], flops  # each pooling step removes work
    encoder = [run["encoder_flops"] for run in runs.values()]
    assert encoder[0] > encoder[1] > encoder[2] and all(e < f for e, f in zip(encoder, flops, strict=True))
    # Pooling changes no parameter: the three models have the same size.
    assert len({run["parameters"] for run in runs.values()}) == 1


def test_the_masked_lm_head_is_tied_and_scores_every_token(gen):
    script = _script()
    config = script.FunnelConfig.tiny(vocab_size=script.subword.VOCAB_SIZE, block_sizes=(1, 1))
    model = script.FunnelMaskedLM(config).eval()
    ids = torch.randint(5, config.vocab_size, (2, 10), generator=gen)
    with torch.no_grad():
        logits = model(ids)
        expected = model.funnel(ids) @ model.funnel.embed.weight.T + model.bias
    assert logits.shape == (2, 10, config.vocab_size)
    torch.testing.assert_close(logits, expected)
    assert 0.5 < float(logits.std()) < 3.0  # unit-sized logits at initialisation (loss near log V)
