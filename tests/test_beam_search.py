"""Beam search: its invariants, its scores against a full recomputation, and the cache's beam reorder.

Parity with Hugging Face ``generate`` lives in ``tests/test_gpt2_hf.py``.
"""

from __future__ import annotations

import pytest
import torch

from tfcourse.cache import KVCache
from tfcourse.generation import beam_search, generate
from tfcourse.models import GPT, GPTConfig


def tiny_gpt(device="cpu") -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=32, d_model=32, num_layers=2, max_len=64)).to(device).eval()
    with torch.no_grad():  # sharper distributions than the default initialisation: fewer near-ties
        model.embed.tokens.weight.mul_(4.0)
    return model


def left_padded(gen, lengths, vocab=32):
    width = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), width), generator=gen)
    valid = torch.arange(width)[None, :] >= (width - torch.tensor(lengths))[:, None]
    return ids.masked_fill(~valid, 0), valid


def sequence_log_prob(model, tokens, valid, prompt_len):
    """Σ log p of the generated part of each row, by one full forward pass (no cache, no beams)."""
    with torch.no_grad():
        log_probs = model(tokens, valid=valid).float().log_softmax(-1)[:, :-1]  # (B, T-1, V)
    picked = log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, T-1)
    generated = valid[:, 1:].clone()
    generated[:, : prompt_len - 1] = False
    return (picked * generated).sum(-1)


def test_one_beam_is_greedy_decoding(gen):
    model = tiny_gpt()
    ids, valid = left_padded(gen, [6, 3, 5])
    beams = beam_search(model, ids, 12, num_beams=1, prompt_valid=valid)
    greedy = generate(model, ids, 12, prompt_valid=valid)
    assert torch.equal(beams.tokens, greedy.tokens)
    eos = int(greedy.tokens[1, 8])  # a token greedy decoding really produces
    beams = beam_search(model, ids, 12, num_beams=1, prompt_valid=valid, eos_token_id=eos, pad_token_id=1)
    greedy = generate(model, ids, 12, prompt_valid=valid, eos_token_id=eos, pad_token_id=1)
    width = beams.tokens.shape[1]
    assert int(beams.lengths[1]) < 12  # row 1 really ended
    assert torch.equal(beams.tokens, greedy.tokens[:, :width])
    assert torch.equal(beams.valid, greedy.valid[:, :width])


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_scores_are_length_penalised_log_probabilities(gen, length_penalty):
    model = tiny_gpt()
    ids, valid = left_padded(gen, [5, 2])
    base = beam_search(model, ids, 8, num_beams=3, prompt_valid=valid)
    eos = int(base.tokens[0, 5 + 3])
    out = beam_search(
        model, ids, 8, num_beams=3, length_penalty=length_penalty, eos_token_id=eos, prompt_valid=valid,
        num_return_sequences=3,
    )  # fmt: skip
    assert out.tokens.shape[0] == 6 and bool((out.lengths < 8).any())  # some hypotheses really ended
    total = sequence_log_prob(model, out.tokens, out.valid, prompt_len=5)
    torch.testing.assert_close(out.scores, total / out.lengths.float() ** length_penalty, atol=1e-4, rtol=1e-4)
    assert bool((out.scores.view(2, 3).diff(dim=1) <= 0).all())  # best first
    ended = out.lengths < out.tokens.shape[1] - 5
    last = out.tokens[torch.arange(6), 5 + out.lengths - 1]
    assert bool((last[ended] == eos).all())  # a shorter hypothesis ends with the end token
    assert not bool(out.valid[torch.arange(6)[ended], (5 + out.lengths)[ended]].any())


def test_padded_rows_search_as_they_would_alone(gen):
    model = tiny_gpt()
    lengths = [7, 3, 5]
    ids, valid = left_padded(gen, lengths)
    together = beam_search(model, ids, 9, num_beams=4, prompt_valid=valid, num_return_sequences=2)
    for row, length in enumerate(lengths):
        alone = beam_search(model, ids[row : row + 1, -length:], 9, num_beams=4, num_return_sequences=2)
        torch.testing.assert_close(together.scores[2 * row : 2 * row + 2], alone.scores, atol=1e-5, rtol=1e-5)
        mine = together.tokens[2 * row : 2 * row + 2, ids.shape[1] :]
        assert torch.equal(mine[:, : alone.tokens.shape[1] - length], alone.tokens[:, length:])


def test_beams_are_distinct_and_at_least_as_good_as_greedy(gen):
    model = tiny_gpt()
    ids = torch.randint(3, 32, (2, 4), generator=gen)
    out = beam_search(model, ids, 10, num_beams=4, length_penalty=0.0, num_return_sequences=4)
    for b in range(2):
        rows = out.tokens[4 * b : 4 * b + 4].tolist()
        assert len({tuple(r) for r in rows}) == 4
    greedy = generate(model, ids, 10).tokens
    greedy_score = sequence_log_prob(model, greedy, torch.ones_like(greedy, dtype=torch.bool), prompt_len=4)
    assert bool((out.scores.view(2, 4)[:, 0] >= greedy_score - 1e-5).all())


def test_beam_search_errors_are_named():
    model = tiny_gpt()
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="num_return_sequences=5 exceeds num_beams=4"):
        beam_search(model, ids, 3, num_return_sequences=5)
    with pytest.raises(ValueError, match="needs a vocabulary of at least 34"):
        beam_search(model, ids, 3, num_beams=17)
    with pytest.raises(ValueError, match="early_stopping must be"):
        beam_search(model, ids, 3, early_stopping="sometimes")
    with pytest.raises(ValueError, match="exceeds the model's context"):
        beam_search(model, ids, 62)
    with pytest.raises(ValueError, match="eos_token_id=32 is outside"):
        beam_search(model, ids, 3, eos_token_id=32)


def test_cache_reorder_gathers_rows_without_allocating():
    cache = KVCache(3, 2, 8, 4)
    keys, values = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    cache.update(keys, values)
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    assert torch.equal(cache.keys[:, :, :5], keys[index]) and torch.equal(cache.values[:, :, :5], values[index])
    assert cache.length == 5
    first = cache.keys.data_ptr()
    cache.reorder(torch.tensor([1, 2, 0]))
    cache.reorder(torch.tensor([0, 1, 2]))
    assert cache.keys.data_ptr() == first  # two buffers, swapped back and forth
    assert torch.equal(cache.keys[:, :, :5], keys[index][[1, 2, 0]])
    with pytest.raises(ValueError, match=r"index must have shape \(B,\) = \(3,\)"):
        cache.reorder(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="index must be an integer tensor"):
        cache.reorder(torch.tensor([0.0, 1.0, 2.0]))
