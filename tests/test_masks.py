"""Masks: literal values drawn by hand, the finfo bias, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from tfcourse.masks import attention_mask, causal_mask, lengths_to_mask, mask_to_bias


def grid(rows: str) -> torch.Tensor:
    """Parse a mask drawn as rows of 0/1 characters separated by spaces."""
    return torch.tensor([[c == "1" for c in row] for row in rows.split()])


def test_lengths_to_mask_literal():
    expected = grid("1110 1000 0000 1111")
    assert torch.equal(lengths_to_mask(torch.tensor([3, 1, 0, 4])), expected)
    assert torch.equal(lengths_to_mask([2], max_len=3), grid("110"))


def test_causal_mask_square_literal():
    assert torch.equal(causal_mask(3), grid("100 110 111"))


def test_causal_mask_is_bottom_right_aligned_for_cached_decoding():
    # Two new queries after two cached tokens: query 0 is position 2, query 1 is position 3.
    assert torch.equal(causal_mask(2, 4), grid("1110 1111"))
    # A single new token sees everything so far.
    assert torch.equal(causal_mask(1, 5), grid("11111"))


def test_causal_mask_rejects_more_queries_than_keys():
    with pytest.raises(ValueError, match="tq <= tk"):
        causal_mask(4, 2)


def test_attention_mask_masks_padded_queries_and_keys():
    valid = lengths_to_mask([3, 2])
    mask = attention_mask(valid, causal=True)
    assert mask.shape == (2, 1, 3, 3)
    assert torch.equal(mask[0, 0], grid("100 110 111"))
    assert torch.equal(mask[1, 0], grid("100 110 000"))  # the padded query's row is empty


def test_attention_mask_cross_attention_uses_both_paddings():
    q_valid = lengths_to_mask([2, 1], max_len=2)
    k_valid = lengths_to_mask([3, 1], max_len=3)
    mask = attention_mask(q_valid, k_valid)
    assert mask.shape == (2, 1, 2, 3)
    assert torch.equal(mask[0, 0], grid("111 111"))
    assert torch.equal(mask[1, 0], grid("100 000"))


def test_attention_mask_with_keys_only_keeps_every_query():
    mask = attention_mask(k_valid=lengths_to_mask([1, 2], max_len=2))
    assert mask.shape == (2, 1, 2, 2)
    assert torch.equal(mask[0, 0], grid("10 10"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_mask_to_bias_uses_the_dtype_minimum(dtype):
    bias = mask_to_bias(grid("10 01"), dtype)
    assert bias.dtype == dtype
    assert bias[0, 0] == 0 and bias[1, 1] == 0
    assert bias[0, 1] == torch.finfo(dtype).min
    assert torch.isfinite(bias).all()  # -1e9 would have become -inf in float16


def test_mask_errors_name_the_argument():
    with pytest.raises(TypeError, match="q_valid must be a torch.bool"):
        attention_mask(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="k_valid must have 2 dimensions"):
        attention_mask(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch size"):
        attention_mask(torch.ones(2, 3, dtype=torch.bool), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="exceeds max_len"):
        lengths_to_mask([5], max_len=3)
    with pytest.raises(ValueError, match="non-negative"):
        lengths_to_mask([-1])
    with pytest.raises(TypeError, match="mask must be a torch.bool"):
        mask_to_bias(torch.ones(2, 2))
