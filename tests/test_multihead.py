"""MultiHeadAttention: parity with torch.nn.MultiheadAttention, caching, rotary, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import assert_close, randn
from tfcourse.attention import AttentionOutput, MultiHeadAttention
from tfcourse.cache import KVCache
from tfcourse.masks import attention_mask, causal_mask, lengths_to_mask
from tfcourse.positions import RotaryEmbedding


def torch_and_ours(device, dtype=torch.float32, d=16, h=4, **kwargs):
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(d, h, batch_first=True, **kwargs).to(device=device, dtype=dtype).eval()
    return theirs, MultiHeadAttention.from_torch(theirs).eval()


def test_self_attention_matches_torch_with_padding_and_causal_masks(gen, device, dtype):
    theirs, ours = torch_and_ours(device, dtype)
    x = randn(3, 6, 16, gen=gen, device=device, dtype=dtype)
    valid = lengths_to_mask([6, 4, 1]).to(device)
    ref, ref_weights = theirs(
        x,
        x,
        x,
        key_padding_mask=~valid,  # PyTorch: True = ignore, the opposite polarity
        attn_mask=~causal_mask(6, device=device),
        need_weights=True,
        average_attn_weights=False,
    )
    out = ours(x, mask=attention_mask(k_valid=valid), causal=True, return_weights=True)
    assert isinstance(out, AttentionOutput)
    assert_close(out.output, ref, dtype)
    assert_close(out.weights, ref_weights, dtype)
    fast = ours(x, mask=attention_mask(k_valid=valid), causal=True)  # fused path, no weights
    assert_close(fast, ref, dtype)


def test_cross_attention_with_other_widths_matches_torch(gen, device):
    theirs, ours = torch_and_ours(device, kdim=10, vdim=12)
    query, key, value = randn(2, 3, 16, gen=gen), randn(2, 7, 10, gen=gen), randn(2, 7, 12, gen=gen)
    query, key, value = query.to(device), key.to(device), value.to(device)
    k_valid = lengths_to_mask([7, 2]).to(device)
    ref, _ = theirs(query, key, value, key_padding_mask=~k_valid)
    out = ours(query, key, value, mask=attention_mask(k_valid=k_valid)[:, :, :1])
    assert_close(out, ref)


def test_training_mode_matches_torch_without_dropout(gen):
    theirs, ours = torch_and_ours("cpu")
    theirs.train(), ours.train()
    x = randn(2, 5, 16, gen=gen)
    ref, _ = theirs(x, x, x, need_weights=False)
    assert_close(ours(x), ref)
    ref.sum().backward()
    ours(x).sum().backward()
    assert_close(ours.q_proj.weight.grad, theirs.in_proj_weight.grad[:16])


def test_cached_decoding_equals_full_recomputation(gen, device):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, rotary=RotaryEmbedding(4)).to(device).eval()
    x = randn(2, 9, 16, gen=gen, device=device)
    full = mha(x, causal=True)
    cache = KVCache(2, 4, max_len=12, head_dim=4, device=device)
    prompt = mha(x[:, :4], causal=True, cache=cache)
    steps = [prompt.output] + [mha(x[:, t : t + 1], causal=True, cache=cache).output for t in range(4, 9)]
    assert cache.length == 9
    assert_close(torch.cat(steps, dim=1), full)


def test_heads_do_not_divide_width():
    with pytest.raises(ValueError, match="num_heads=3 does not divide d_model=16"):
        MultiHeadAttention(16, 3)


def test_bad_inputs_are_named(gen):
    mha = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"query has width 8 \(shape \(2, 3, 8\)\)"):
        mha(randn(2, 3, 8, gen=gen))
    with pytest.raises(ValueError, match="query must have 3 dimensions"):
        mha(randn(3, 16, gen=gen))
    with pytest.raises(ValueError, match=r"key has shape \(2, 3, 10\)"):
        mha(randn(2, 3, 16, gen=gen), randn(2, 3, 10, gen=gen))
    with pytest.raises(TypeError, match="mask must be a torch.bool"):
        mha(randn(2, 3, 16, gen=gen), mask=torch.ones(3, 3))
    with pytest.raises(ValueError, match="rotary"):
        MultiHeadAttention(16, 4, rotary=RotaryEmbedding(4))(randn(1, 2, 16, gen=gen), randn(1, 3, 16, gen=gen))


def test_cache_errors_are_named(gen):
    cache = KVCache(1, 2, max_len=3, head_dim=4)
    with pytest.raises(ValueError, match="cache overflow"):
        cache.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"keys of shape \(1, 3, 1, 4\) do not fit"):
        cache.update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))
    with pytest.raises(TypeError, match="dtype"):
        cache.update(torch.zeros(1, 2, 1, 4, dtype=torch.float64), torch.zeros(1, 2, 1, 4, dtype=torch.float64))
    k, _ = cache.update(torch.ones(1, 2, 2, 4), torch.ones(1, 2, 2, 4))
    assert k.shape == (1, 2, 2, 4) and cache.length == 2
    buffer = cache.keys.data_ptr()
    cache.update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert cache.keys.data_ptr() == buffer  # written in place, never reallocated
    cache.reset()
    assert cache.length == 0


def test_kv_cache_decoding_works_under_torch_compile(gen):
    # The cache writes into fixed buffers in place, so a compiled step function keeps working as it fills.
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval()
    x = randn(1, 10, 32, gen=gen)
    cache = KVCache(1, 4, 16, 8)
    step = torch.compile(lambda t, c: mha(t, causal=True, cache=c).output, backend="aot_eager", dynamic=True)
    with torch.no_grad():
        outputs = [step(x[:, i : i + 1], cache) for i in range(10)]
        assert_close(torch.cat(outputs, dim=1), mha(x, causal=True))
