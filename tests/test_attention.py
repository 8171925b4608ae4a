"""Scaled dot-product attention: parity with PyTorch, the fused path, invariants and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_close, randn
from tfcourse.attention import attention_reference, entropy_invariant_scale, scaled_dot_product_attention
from tfcourse.entropy import entropy
from tfcourse.masks import attention_mask, causal_mask, lengths_to_mask, mask_to_bias


def qkv(gen, b=2, h=3, tq=5, tk=7, dh=8, dv=None, device="cpu", dtype=torch.float32):
    return (
        randn(b, h, tq, dh, gen=gen, device=device, dtype=dtype),
        randn(b, h, tk, dh, gen=gen, device=device, dtype=dtype),
        randn(b, h, tk, dv or dh, gen=gen, device=device, dtype=dtype),
    )


# ---------------------------------------------------------------------------------------------------------
# Parity of the plain path with PyTorch's own attention


@pytest.mark.parametrize("tq,tk", [(5, 5), (4, 9), (9, 3)])
def test_reference_matches_torch_with_boolean_padding_mask(gen, device, dtype, tq, tk):
    q, k, v = qkv(gen, tq=tq, tk=tk, device=device, dtype=dtype)
    mask = attention_mask(k_valid=lengths_to_mask([tk, max(1, tk - 2)]).to(device))[:, :, :1]  # (B, 1, 1, Tk)
    ours, _ = attention_reference(q, k, v, mask)
    theirs = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert_close(ours, theirs, dtype)


def test_reference_matches_torch_with_float_bias(gen, device, dtype):
    q, k, v = qkv(gen, device=device, dtype=dtype)
    bias = randn(1, 3, 5, 7, gen=gen, device=device)
    ours, _ = attention_reference(q, k, v, bias=bias)
    theirs = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias)
    assert_close(ours, theirs, dtype)


def test_reference_matches_torch_causal(gen, device, dtype):
    q, k, v = qkv(gen, tq=6, tk=6, device=device, dtype=dtype)
    ours = scaled_dot_product_attention(q, k, v, causal=True, impl="reference")
    theirs = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    assert_close(ours, theirs, dtype)


def test_explicit_scale_and_value_width(gen, device):
    q, k, v = qkv(gen, dv=5, device=device)
    ours, _ = attention_reference(q, k, v, scale=0.3)
    assert ours.shape == (2, 3, 5, 5)
    assert_close(ours, F.scaled_dot_product_attention(q, k, v, scale=0.3))


# ---------------------------------------------------------------------------------------------------------
# The fused path agrees with the plain one, including fully masked rows


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_equals_reference(gen, device, dtype, causal, with_bias):
    q, k, v = qkv(gen, tq=4, tk=6, device=device, dtype=dtype)
    valid_q, valid_k = lengths_to_mask([4, 2], max_len=4), lengths_to_mask([6, 3], max_len=6)
    mask = attention_mask(valid_q, valid_k).to(device)
    bias = randn(1, 3, 4, 6, gen=gen, device=device) if with_bias else None
    fused = scaled_dot_product_attention(q, k, v, mask, bias, causal=causal, impl="fused")
    plain = scaled_dot_product_attention(q, k, v, mask, bias, causal=causal, impl="reference")
    assert_close(fused, plain, dtype)
    assert torch.equal(fused[1, :, 2:], torch.zeros_like(fused[1, :, 2:]))  # padded queries give zeros


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_fully_masked_rows_give_zeros_and_finite_gradients(gen, device, impl):
    q, k, v = (x.requires_grad_() for x in qkv(gen, device=device))
    mask = torch.ones(2, 1, 5, 7, dtype=torch.bool, device=device)
    mask[0, :, 1] = False  # query 1 of sequence 0 may attend to nothing
    out = scaled_dot_product_attention(q, k, v, mask, impl=impl)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, :, 1], torch.zeros_like(out[0, :, 1]))
    out.square().sum().backward()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
    assert torch.equal(q.grad[0, :, 1], torch.zeros_like(q.grad[0, :, 1]))


def test_float16_bias_from_mask_does_not_overflow(gen):
    q, k, v = qkv(gen, dtype=torch.float16)
    mask = torch.zeros(2, 1, 5, 7, dtype=torch.bool)
    mask[..., :2] = True
    out = scaled_dot_product_attention(q, k, v, bias=mask_to_bias(mask, torch.float16), impl="fused")
    assert torch.isfinite(out).all()


def test_weights_are_returned_only_on_request_and_are_distributions(gen):
    q, k, v = qkv(gen)
    mask = causal_mask(5, 7)
    out = scaled_dot_product_attention(q, k, v, mask)
    assert isinstance(out, torch.Tensor)
    out2, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert weights.shape == (2, 3, 5, 7) and weights.dtype == torch.float32
    assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert torch.equal(weights[..., ~mask], torch.zeros_like(weights[..., ~mask]))
    assert_close(out, out2)


def test_dropout_keeps_the_expectation(gen):
    torch.manual_seed(0)
    q, k, v = qkv(gen, b=1, h=1, tq=2, tk=4)
    plain = scaled_dot_product_attention(q, k, v)
    mean = torch.stack([scaled_dot_product_attention(q, k, v, dropout_p=0.5, impl="reference") for _ in range(4000)])
    assert (mean.mean(0) - plain).abs().max() < 0.1
    assert mean.std(0).min() > 0  # dropout really happened


# ---------------------------------------------------------------------------------------------------------
# Invariants


def test_permutation_equivariance_without_positions(gen):
    x = randn(1, 1, 6, 8, gen=gen)
    perm = torch.randperm(6, generator=gen)
    out = scaled_dot_product_attention(x, x, x)
    out_perm = scaled_dot_product_attention(x[:, :, perm], x[:, :, perm], x[:, :, perm])
    assert_close(out_perm, out[:, :, perm])
    assert not torch.allclose(out_perm, out)  # the test would notice a non-equivariant change


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_causal_outputs_ignore_future_tokens(gen, impl):
    q, k, v = qkv(gen, tq=8, tk=8)
    out = scaled_dot_product_attention(q, k, v, causal=True, impl=impl)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 5:] += 10.0
    v2[:, :, 5:] -= 10.0
    out2 = scaled_dot_product_attention(q, k2, v2, causal=True, impl=impl)
    assert_close(out2[:, :, :5], out[:, :, :5])
    assert not torch.allclose(out2[:, :, 5:], out[:, :, 5:])


def test_scaling_by_sqrt_d_restores_unit_variance(gen):
    d = 256
    q, k = randn(20000, d, gen=gen), randn(20000, d, gen=gen)
    dots = (q * k).sum(-1)
    assert abs(dots.var().item() / d - 1) < 0.05
    assert abs((dots / math.sqrt(d)).var().item() - 1) < 0.05


def row_entropy(n: int, d: int, scale, gen) -> float:
    q = randn(1, 1, 64, d, gen=gen) * 2.0  # sharp scores, as in a trained model
    k = randn(1, 1, n, d, gen=gen) * 2.0
    _, weights = scaled_dot_product_attention(q, k, k[..., :1], scale=scale, return_weights=True)
    return entropy(weights).mean().item()


def test_entropy_invariant_scale_keeps_entropy_flat(gen):
    d, lengths = 64, [256, 1024, 4096]
    standard = [row_entropy(n, d, None, gen) for n in lengths]
    invariant = [row_entropy(n, d, entropy_invariant_scale(n, d, train_len=512), gen) for n in lengths]
    spread_standard = max(standard) - min(standard)
    spread_invariant = max(invariant) - min(invariant)
    assert standard[-1] > standard[0] + 0.5  # with 1/√d the rows blur as n grows
    assert spread_invariant < 0.35 * spread_standard


def test_entropy_invariant_scale_values():
    assert entropy_invariant_scale(512, 64, 512) == pytest.approx(1 / 8)
    assert entropy_invariant_scale(1024, 64, 512) == pytest.approx(math.log(1024) / math.log(512) / 8)
    per_row = entropy_invariant_scale(torch.tensor([512, 1024]), 64, 512)
    assert torch.allclose(per_row, torch.tensor([1 / 8, math.log(1024) / math.log(512) / 8]))
    with pytest.raises(ValueError, match="n must be at least 1"):
        entropy_invariant_scale(torch.tensor([0, 3]), 64)
    with pytest.raises(ValueError, match="train_len must be at least 2"):
        entropy_invariant_scale(8, 64, train_len=1)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_tensor_scale_per_row(gen, impl):
    q, k, v = qkv(gen)
    scale = torch.rand(2, 1, 1, 1, generator=gen)
    ours = scaled_dot_product_attention(q, k, v, scale=scale, impl=impl)
    for b in range(2):
        assert_close(ours[b], F.scaled_dot_product_attention(q[b], k[b], v[b], scale=scale[b].item()))


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_errors_name_the_argument_and_shapes(gen):
    q, k, v = qkv(gen)
    with pytest.raises(ValueError, match=r"q and k need the same head width.*\(2, 3, 5, 8\)"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="k and v need the same length"):
        scaled_dot_product_attention(q, k, v[..., :3, :])
    with pytest.raises(TypeError, match="mask must be a torch.bool"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 7))
    with pytest.raises(ValueError, match="mask of shape"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(7, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask has shape"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(1, 2, 3, 5, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="share a dtype"):
        scaled_dot_product_attention(q, k.double(), v)
    with pytest.raises(TypeError, match="q must be a floating-point"):
        scaled_dot_product_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="impl must be one of"):
        scaled_dot_product_attention(q, k, v, impl="flash")
    with pytest.raises(ValueError, match="dropout_p"):
        scaled_dot_product_attention(q, k, v, dropout_p=1.5)


@settings(max_examples=60, deadline=None)
@given(
    shape_q=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    shape_k=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    mask_shape=st.lists(st.integers(1, 5), min_size=1, max_size=5),
)
def test_fuzzed_shapes_either_work_or_raise_a_named_error(shape_q, shape_k, mask_shape):
    q, k = torch.randn(*shape_q), torch.randn(*shape_k)
    mask = torch.ones(*mask_shape, dtype=torch.bool)
    try:
        out = scaled_dot_product_attention(q, k, k, mask=mask)
    except ValueError as err:
        assert any(name in str(err) for name in ("q", "k", "v", "mask"))
        assert "(" in str(err)  # the shapes seen are part of the message
        return
    # Accepted calls really are well formed and agree with the plain path.
    assert out.shape == (*shape_q[:-1], shape_k[-1])
    assert_close(out, scaled_dot_product_attention(q, k, k, mask=mask, impl="reference"))
