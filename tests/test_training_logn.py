"""training/logn_extrapolation.py (ch02-logn-extrapolation.json) and the log-n attention scale it trains with:
``keys_per_query``, ``MultiHeadAttention(logn_train_len=…)`` and ``GPTConfig(attention_scale="logn")``."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from tfcourse.attention import MultiHeadAttention, attention_reference, keys_per_query, merge_heads, split_heads
from tfcourse.models.gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("logn_extrapolation", ROOT / "training" / "logn_extrapolation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_keys_per_query_counts_what_each_query_may_see():
    assert keys_per_query(3, 3, causal=True)[:, 0].tolist() == [1, 2, 3]
    assert keys_per_query(2, 5, causal=True)[:, 0].tolist() == [4, 5]  # bottom-right aligned, as with a cache
    assert keys_per_query(2, 4)[:, 0].tolist() == [4, 4]
    valid = torch.tensor([[True, True, False, True], [False, False, False, False]])
    counts = keys_per_query(4, 4, valid[:, None, None, :], causal=True)  # (B, 1, Tq, 1)
    assert counts.shape == (2, 1, 4, 1)
    assert counts[0, 0, :, 0].tolist() == [1, 2, 2, 3] and counts[1, 0, :, 0].tolist() == [1, 1, 1, 1]


def test_logn_attention_matches_an_explicit_per_row_scale(gen):
    d, heads, t, train_len = 32, 4, 12, 5
    attn = MultiHeadAttention(d, heads, logn_train_len=train_len).eval()
    x = torch.randn(2, t, d, generator=gen)
    ours = attn(x, causal=True)
    q, k, v = (split_heads(p(x), heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))  # (B, H, T, Dh)
    n = torch.arange(1, t + 1, dtype=torch.float64)  # query i sees i + 1 keys
    scale = (torch.log(n) / (math.log(train_len) * math.sqrt(d // heads))).float()[:, None]  # (T, 1)
    reference, _ = attention_reference(q, k, v, torch.ones(t, t).tril().bool(), scale=scale)
    torch.testing.assert_close(ours, attn.out_proj(merge_heads(reference)), atol=1e-5, rtol=1e-5)
    # At n = train_len the scale is exactly 1/√Dh: row train_len - 1 agrees with standard attention.
    standard = MultiHeadAttention(d, heads).eval()
    standard.load_state_dict(attn.state_dict())
    torch.testing.assert_close(ours[:, train_len - 1], standard(x, causal=True)[:, train_len - 1])
    assert not torch.allclose(ours[:, -1], standard(x, causal=True)[:, -1], atol=1e-4)


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal"])
def test_logn_gpt_cached_decoding_equals_a_full_pass(positions, gen):
    config = GPTConfig.tiny(positions=positions, attention_scale="logn", logn_train_len=4)
    model = GPT(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 10), generator=gen)
    full = model(ids)
    caches = model.new_caches(2)
    steps = [model(ids[:, :3], caches=caches)] + [model(ids[:, i : i + 1], caches=caches) for i in range(3, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_gpt_config_rejects_unknown_scales():
    with pytest.raises(ValueError, match="attention_scale"):
        GPTConfig.tiny(attention_scale="cubic")
    with pytest.raises(ValueError, match="logn_train_len"):
        GPTConfig.tiny(attention_scale="logn", logn_train_len=1)


def test_a_short_run_learns_and_writes_its_curves(tmp_path):
    args = ["--steps", "20", "--batch", "8", "--train-len", "16", "--eval-windows", "2", "--quiet"]
    meta = _script().main([*args, "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "ch02-logn-extrapolation.json").read_text())
    assert saved["test_lengths"] == [16, 32, 64, 128] and saved["script"] == "training/logn_extrapolation.py"
    assert set(saved["runs"]) == {"rotary/standard", "rotary/logn", "sinusoidal/standard", "sinusoidal/logn"}
    for key, run in saved["runs"].items():
        losses = run["training"]["losses"]
        assert len(losses) == 20 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, (key, losses)
        assert len(run["loss_per_position"]) == 127
        assert run["heldout_loss_at_length"]["16"] == pytest.approx(sum(run["loss_per_position"][:15]) / 15, abs=1e-3)
    assert (
        saved["configs"]["rotary/logn"]["attention_scale"]
        == "logn"
        == meta["configs"]["sinusoidal/logn"]["attention_scale"]
    )
