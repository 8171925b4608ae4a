"""Label-smoothed cross-entropy against PyTorch's, and the models' losses that use it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcourse.losses import cross_entropy
from tfcourse.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig, shift_targets


def torch_reference(logits, targets, epsilon, reduction="mean"):
    """PyTorch's loss, which wants the class axis second."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100, label_smoothing=epsilon, reduction=reduction)
    return out.reshape(targets.shape) if reduction == "none" else out


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_pytorch_with_ignored_positions(gen, epsilon, reduction):
    logits = torch.randn(3, 7, 11, generator=gen) * 3
    targets = torch.randint(0, 11, (3, 7), generator=gen)
    targets[0, 4:] = -100  # padding
    targets[2, 0] = -100
    mine = cross_entropy(logits, targets, label_smoothing=epsilon, reduction=reduction)
    torch.testing.assert_close(mine, torch_reference(logits, targets, epsilon, reduction), atol=1e-5, rtol=1e-5)


def test_formula_literal():
    logits = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.25)]])  # p = (1/2, 1/4, 1/4)
    target = torch.tensor([0])
    nll = math.log(2)
    uniform = (math.log(2) + 2 * math.log(4)) / 3  # mean over classes of -log p
    out = cross_entropy(logits, target, label_smoothing=0.3)
    assert math.isclose(float(out), 0.7 * nll + 0.3 * uniform, rel_tol=1e-6)


def test_gradients_match_pytorch(gen):
    logits = torch.randn(5, 9, generator=gen, requires_grad=True)
    targets = torch.tensor([1, -100, 8, 0, 3])
    (grad_mine,) = torch.autograd.grad(cross_entropy(logits, targets, label_smoothing=0.2), logits)
    (grad_ref,) = torch.autograd.grad(torch_reference(logits, targets, 0.2), logits)
    torch.testing.assert_close(grad_mine, grad_ref, atol=1e-6, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    vocab=st.integers(2, 12),
    epsilon=st.floats(0.0, 1.0),
    scale=st.floats(0.1, 20.0),
    seed=st.integers(0, 2**16),
    ignored=st.floats(0.0, 0.8),
)
def test_property_matches_pytorch(batch, vocab, epsilon, scale, seed, ignored):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 5, vocab, generator=g) * scale
    targets = torch.randint(0, vocab, (batch, 5), generator=g)
    targets[torch.rand(batch, 5, generator=g) < ignored] = -100
    targets[0, 0] = 0  # at least one position counts
    mine = cross_entropy(logits, targets, label_smoothing=epsilon)
    torch.testing.assert_close(mine, torch_reference(logits, targets, epsilon), atol=1e-4, rtol=1e-5)


def test_errors_are_named():
    logits = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match="targets must have the shape of logits"):
        cross_entropy(logits, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        cross_entropy(logits, torch.full((2, 3), 5))
    with pytest.raises(TypeError, match="integer class ids"):
        cross_entropy(logits, torch.zeros(2, 3))


def test_model_losses_take_label_smoothing(gen):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.tiny()).eval()
    ids = torch.randint(0, 64, (2, 9), generator=gen)
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[1, 6:] = False
    logits = gpt(ids, valid=valid)[:, :-1]
    targets = ids[:, 1:].masked_fill(~valid[:, 1:], -100)
    assert torch.equal(gpt.loss(ids, valid), gpt.loss(ids, valid, label_smoothing=0.0))
    torch.testing.assert_close(gpt.loss(ids, valid), torch_reference(logits, targets, 0.0))
    torch.testing.assert_close(gpt.loss(ids, valid, label_smoothing=0.1), torch_reference(logits, targets, 0.1))

    seq2seq = Seq2Seq(Seq2SeqConfig.tiny()).eval()
    src = torch.randint(3, 32, (2, 6), generator=gen)
    tgt = torch.randint(3, 32, (2, 5), generator=gen)
    tgt[1, 3:] = seq2seq.config.pad_id
    plain = seq2seq.loss(src, tgt)
    smoothed = seq2seq.loss(src, tgt, label_smoothing=0.1)
    per_position = seq2seq.loss(src, tgt, reduction="none", label_smoothing=0.1)
    assert per_position.shape == (2, 5) and not torch.isclose(plain, smoothed)
    tgt_in, tgt_out = shift_targets(tgt, seq2seq.config.bos_id, seq2seq.config.pad_id)
    reference = torch_reference(seq2seq(src, tgt_in), tgt_out, 0.1)
    torch.testing.assert_close(smoothed, reference, atol=1e-5, rtol=1e-5)
