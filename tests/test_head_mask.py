"""head_mask on MultiHeadAttention, the layer stacks and GPT: multiplying each head's output before Ω_c."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import assert_close, randn
from tfcourse.analysis import ablate_heads
from tfcourse.attention import MultiHeadAttention
from tfcourse.blocks import Encoder
from tfcourse.cache import KVCache
from tfcourse.models.gpt import GPT, GPTConfig


def _without_head_columns(mha: MultiHeadAttention, heads: list[int]) -> MultiHeadAttention:
    """A copy whose output projection ignores ``heads``: their columns of Ω_c set to zero."""
    other = copy.deepcopy(mha)
    dh = mha.head_dim
    with torch.no_grad():
        for h in heads:
            other.out_proj.weight[:, h * dh : (h + 1) * dh] = 0
    return other


@pytest.mark.parametrize("return_weights", [False, True])
def test_a_mask_of_ones_changes_nothing(device, dtype, gen, return_weights):
    mha = MultiHeadAttention(16, 4).to(device=device, dtype=dtype).eval()
    x = randn(2, 5, 16, gen=gen, device=device, dtype=dtype)
    with torch.no_grad():
        plain = mha(x, causal=True, return_weights=return_weights)
        for ones in (torch.ones(4, device=device), torch.ones(2, 4, dtype=torch.bool, device=device)):
            masked = mha(x, causal=True, return_weights=return_weights, head_mask=ones)
            if return_weights:
                torch.testing.assert_close(masked.output, plain.output, rtol=0, atol=0)
                torch.testing.assert_close(masked.weights, plain.weights, rtol=0, atol=0)
            else:
                torch.testing.assert_close(masked, plain, rtol=0, atol=0)


def test_masking_a_head_equals_zeroing_its_columns_of_the_output_projection(device, dtype, gen):
    mha = MultiHeadAttention(16, 4).to(device=device, dtype=dtype).eval()
    x = randn(3, 6, 16, gen=gen, device=device, dtype=dtype)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0], device=device)
    with torch.no_grad():
        masked = mha(x, causal=True, head_mask=mask)
        expected = _without_head_columns(mha, [1, 3])(x, causal=True)
        with ablate_heads({mha: [1, 3]}):
            hooked = mha(x, causal=True)
    assert_close(masked, expected, dtype)
    assert_close(masked, hooked, dtype)
    assert not torch.allclose(masked, mha(x, causal=True).detach())


def test_a_per_example_mask_masks_each_row_on_its_own(gen):
    mha = MultiHeadAttention(16, 4).eval()
    x = randn(2, 5, 16, gen=gen)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        both = mha(x, head_mask=mask)
        for b in range(2):
            alone = mha(x[b : b + 1], head_mask=mask[b].float())
            torch.testing.assert_close(both[b : b + 1], alone)


def test_fractional_multipliers_scale_each_heads_contribution(gen):
    mha = MultiHeadAttention(8, 2).eval()
    x = randn(1, 4, 8, gen=gen)
    with torch.no_grad():
        bias = mha.out_proj.bias
        head0 = mha(x, head_mask=torch.tensor([1.0, 0.0])) - bias
        head1 = mha(x, head_mask=torch.tensor([0.0, 1.0])) - bias
        mixed = mha(x, head_mask=torch.tensor([0.25, -2.0]))
    torch.testing.assert_close(mixed, bias + 0.25 * head0 - 2.0 * head1)


def test_head_mask_works_during_cached_decoding(gen):
    mha = MultiHeadAttention(8, 2).eval()
    x = randn(1, 4, 8, gen=gen)
    mask = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        full = mha(x, causal=True, head_mask=mask)
        cache = KVCache(1, 2, 4, 4)
        steps = [mha(x[:, t : t + 1], causal=True, cache=cache, head_mask=mask).output for t in range(4)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_head_mask_rejects_wrong_shapes_and_dtypes():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(3, 4, 8)
    with pytest.raises(ValueError, match=r"\(H,\) = \(2,\)"):
        mha(x, head_mask=torch.ones(3))
    with pytest.raises(ValueError, match=r"got \(2, 2\)"):
        mha(x, head_mask=torch.ones(2, 2))
    with pytest.raises(TypeError, match="int64"):
        mha(x, head_mask=torch.ones(2, dtype=torch.long))
    with pytest.raises(TypeError, match="list"):
        mha(x, head_mask=[1, 0])


# ------------------------------------------------------------------------------------------------ stacks, GPT


def _gpt(norm: str = "pre") -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.tiny(num_layers=3, norm=norm)).eval()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_gpt_head_mask_removes_exactly_that_layers_head(gen, norm):
    model = _gpt(norm)
    ids = torch.randint(0, 64, (2, 10), generator=gen)
    mask = torch.ones(3, 4)
    with torch.no_grad():
        plain = model(ids)
        torch.testing.assert_close(model(ids, head_mask=mask), plain, rtol=0, atol=0)
        mask[1, 2] = 0
        masked = model(ids, head_mask=mask)
        surgery = copy.deepcopy(model)
        layer = surgery.decoder.layers[1]
        layer.self_attn = _without_head_columns(layer.self_attn, [2])
        torch.testing.assert_close(masked, surgery(ids))
        torch.testing.assert_close(model.loss(ids, head_mask=mask), surgery.loss(ids))
    assert not torch.allclose(masked, plain)


def test_gpt_head_mask_gradient_is_the_loss_sensitivity_to_each_head(gen):
    model = _gpt().double()
    ids = torch.randint(0, 64, (2, 10), generator=gen)
    mask = torch.ones(3, 4, dtype=torch.float64, requires_grad=True)
    model.loss(ids, head_mask=mask).backward()
    eps = 1e-6
    with torch.no_grad():
        for layer, head in [(0, 0), (2, 3)]:
            bump = torch.zeros(3, 4, dtype=torch.float64)
            bump[layer, head] = eps
            slope = (model.loss(ids, head_mask=mask + bump) - model.loss(ids, head_mask=mask - bump)) / (2 * eps)
            assert float(mask.grad[layer, head]) == pytest.approx(float(slope), rel=1e-5, abs=1e-9)


def test_encoder_head_mask_and_bad_stack_shapes(gen):
    torch.manual_seed(0)
    encoder = Encoder(2, 16, 4, 32).eval()
    x = randn(2, 5, 16, gen=gen)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x, head_mask=torch.ones(2, 4)), encoder(x), rtol=0, atol=0)
        per_example = torch.ones(2, 2, 4)
        per_example[0, 1, 3] = 0  # layer 0, example 1, head 3
        out = encoder(x, head_mask=per_example)
        torch.testing.assert_close(out[0], encoder(x[:1])[0])
        assert not torch.allclose(out[1], encoder(x[1:])[0])
    with pytest.raises(ValueError, match=r"L = 2, got \(3, 4\)"):
        encoder(x, head_mask=torch.ones(3, 4))
