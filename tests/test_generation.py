"""Token choice: greedy, temperature, top-k and top-p."""

from __future__ import annotations

import math

import pytest
import torch

from tfcourse.generation import choose_next_token, top_k_filter, top_p_filter

LOWEST = torch.finfo(torch.float32).min


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert top_k_filter(logits, 2).tolist() == [[LOWEST, 4.0, 3.0, LOWEST]]
    assert torch.equal(top_k_filter(logits, 10), logits)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        top_k_filter(logits, 0)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    kept = top_p_filter(logits, 0.75) > LOWEST
    assert kept.tolist() == [[True, False, True, False]]  # 0.5 + 0.3 reaches 0.75
    assert (top_p_filter(logits, 0.8) > LOWEST).tolist() == [[True, False, True, False]]
    assert (top_p_filter(logits, 0.81) > LOWEST).tolist() == [[True, False, True, True]]
    assert (top_p_filter(logits, 0.1) > LOWEST).tolist() == [[True, False, False, False]]  # never empty
    with pytest.raises(ValueError, match="top_p must be in"):
        top_p_filter(logits, 0.0)


def test_greedy_is_argmax():
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0))
    assert torch.equal(choose_next_token(logits), logits.argmax(-1))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_follows_the_tempered_softmax(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    g = torch.Generator().manual_seed(0)
    n = 40000
    draws = choose_next_token(logits.expand(n, 4), do_sample=True, temperature=temperature, generator=g)
    freq = torch.bincount(draws, minlength=4).float() / n
    expected = torch.softmax(logits / temperature, dim=0)
    bound = 5 * torch.sqrt(expected * (1 - expected) / n)  # five binomial standard deviations
    assert ((freq - expected).abs() <= bound).all(), (freq, expected)


def test_sampling_respects_top_k_and_top_p():
    logits = torch.tensor([3.0, 2.9, 0.0, -1.0, -2.0]).expand(5000, 5)
    g = torch.Generator().manual_seed(0)
    assert choose_next_token(logits, do_sample=True, top_k=2, generator=g).max() <= 1
    nucleus = choose_next_token(logits, do_sample=True, top_p=0.6, generator=g)  # p = 0.505, 0.457, …
    assert set(nucleus.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="temperature must be positive"):
        choose_next_token(logits, do_sample=True, temperature=0.0)
    assert math.isclose(float((nucleus == 0).float().mean()), 0.505 / (0.505 + 0.457), abs_tol=0.03)


# ---------------------------------------------------------------------------------------------------------
# The decoding loop: preallocated buffers, end tokens, thread policy


def _tiny_gpt():
    from tfcourse.models import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig.tiny()).eval()


def test_cached_equals_recomputed_with_end_tokens_and_padding():
    from tfcourse.generation import generate

    model = _tiny_gpt()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 64, (3, 5), generator=g)
    valid = torch.arange(5)[None, :] >= torch.tensor([[0], [2], [3]])
    ids = ids.masked_fill(~valid, 0)
    eos = int(generate(model, ids, 10, prompt_valid=valid).tokens[1, 5 + 3])  # row 1 ends at its 4th token
    cached = generate(model, ids, 10, prompt_valid=valid, eos_token_id=eos, pad_token_id=1, return_logits=True)
    full = generate(
        model, ids, 10, prompt_valid=valid, eos_token_id=eos, pad_token_id=1, return_logits=True, use_cache=False
    )
    assert torch.equal(cached.tokens, full.tokens) and torch.equal(cached.valid, full.valid)
    assert not bool(cached.valid[1, 5 + 4 :].any()) and bool((cached.tokens[1, 5 + 4 :] == 1).all())
    running = cached.valid[:, 5 - 1 : -1]  # (B, N): the step's input token is real, so its logits count
    torch.testing.assert_close(cached.logits[running], full.logits[running], atol=1e-5, rtol=1e-5)
    assert cached.logits.shape[1] == cached.tokens.shape[1] - 5


def test_zero_new_tokens_returns_the_prompt():
    from tfcourse.generation import generate

    model = _tiny_gpt()
    ids = torch.randint(0, 64, (2, 4), generator=torch.Generator().manual_seed(0))
    out = generate(model, ids, 0, return_logits=True)
    assert torch.equal(out.tokens, ids) and out.logits is None


def test_small_models_decode_on_one_thread_and_the_setting_is_restored():
    from tfcourse.generation import SINGLE_THREAD_BELOW, decoding_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with decoding_threads(_tiny_gpt()) as threads:
            assert threads == 1 == torch.get_num_threads()
        assert torch.get_num_threads() == 2
        big = torch.nn.Linear(SINGLE_THREAD_BELOW // 1000, 1000)
        with decoding_threads(big) as threads:
            assert threads == 2 == torch.get_num_threads()
        with pytest.raises(RuntimeError, match="inside"):
            with decoding_threads(_tiny_gpt()):
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
