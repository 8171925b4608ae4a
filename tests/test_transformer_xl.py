"""Transformer-XL: relative scores against an explicit loop, recurrence against one masked pass, the
stop-gradient on the memory, causality, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import assert_close, randn
from tfcourse.models.transformer_xl import (
    RelativeMultiHeadAttention,
    TransformerXL,
    TransformerXLConfig,
    TransformerXLLayer,
    evaluate_long_sequence,
    relative_attention_scores,
    relative_position_embeddings,
    xl_attention_mask,
)
from tfcourse.positions import sinusoidal_positions


def tiny_xl(device="cpu", **overrides) -> TransformerXL:
    torch.manual_seed(0)
    return TransformerXL(TransformerXLConfig.tiny(**overrides)).to(device).eval()


def segment_band_mask(total: int, segment_len: int, mem_len: int) -> torch.Tensor:
    """The one-pass mask equivalent to recurrence: a query in the segment starting at ``s`` sees keys
    ``s - mem_len ≤ j ≤`` itself (the memory holds exactly the ``mem_len`` positions before ``s``)."""
    pos = torch.arange(total)
    start = pos // segment_len * segment_len  # (T,) first position of each query's segment
    return (pos[None, :] <= pos[:, None]) & (pos[None, :] >= start[:, None] - mem_len)  # (T, T)


# ---------------------------------------------------------------------------------------------------------
# Relative scores


@pytest.mark.parametrize("tq,tk", [(5, 5), (3, 8), (1, 6)])
def test_relative_scores_equal_the_four_terms_for_every_valid_pair(gen, tq, tk):
    b, h, dh = 2, 3, 4
    q, k = randn(b, h, tq, dh, gen=gen), randn(b, h, tk, dh, gen=gen)
    r, u, v = randn(h, tk, dh, gen=gen), randn(h, dh, gen=gen), randn(h, dh, gen=gen)
    scores = relative_attention_scores(q, k, r, u, v)
    assert scores.shape == (b, h, tq, tk) and scores.dtype == torch.float32
    mlen = tk - tq
    for i in range(tq):
        for j in range(mlen + i + 1):  # keys at or before query i, which sits at position mlen + i
            r_ij = r[:, tk - 1 - (mlen + i - j)]  # (H, Dh): row of distance i - j
            a = (q[..., i, :] * k[..., j, :]).sum(-1)  # content-content
            b_ = (q[..., i, :] * r_ij).sum(-1)  # content-position
            c = (u * k[..., j, :]).sum(-1)  # global content bias
            d = (v * r_ij).sum(-1)  # global position bias
            torch.testing.assert_close(scores[..., i, j], (a + b_ + c + d) / math.sqrt(dh), atol=1e-5, rtol=1e-5)


def test_relative_attention_module_equals_an_explicit_gather(gen):
    torch.manual_seed(0)
    attn = RelativeMultiHeadAttention(16, 2).eval()
    b, m, t, h, dh = 2, 3, 4, 2, 8
    x, memory = randn(b, t, 16, gen=gen), randn(b, m, 16, gen=gen)
    out, weights = attn(x, relative_position_embeddings(m + t, 16), memory, return_weights=True)

    # Every (i, j) pair gathers its own R_{i-j} from the ordinary increasing table: no rel_shift.
    context = torch.cat([memory, x], dim=1)  # (B, Tk, D)
    distance = (m + torch.arange(t))[:, None] - torch.arange(m + t)[None, :]  # (T, Tk)
    r = attn.r_proj(sinusoidal_positions(m + t, 16)[distance.clamp(min=0)])  # (T, Tk, D)
    q = attn.q_proj(x).view(b, t, h, dh)
    k, v = attn.k_proj(context).view(b, m + t, h, dh), attn.v_proj(context).view(b, m + t, h, dh)
    scores = torch.einsum("bihd,bjhd->bhij", q + attn.u, k)  # (B, H, T, Tk)
    scores = scores + torch.einsum("bihd,ijhd->bhij", q + attn.v, r.view(t, m + t, h, dh))
    scores = (scores / math.sqrt(dh)).masked_fill(distance < 0, -torch.inf)
    expected_weights = scores.softmax(-1)
    expected = attn.out_proj(torch.einsum("bhij,bjhd->bihd", expected_weights, v).reshape(b, t, 16))
    assert_close(weights, expected_weights)
    assert_close(out, expected)


def test_attention_mask_literal():
    assert xl_attention_mask(2, 2).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    same = xl_attention_mask(3, 2, same_length=True, mem_len=3)
    assert same.int().tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert same.sum(-1).tolist() == [3, 3, 3]  # every query sees mem_len keys


# ---------------------------------------------------------------------------------------------------------
# Recurrence equals one pass with the equivalent mask


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_layer_with_memory_equals_the_layer_on_the_concatenation(gen, norm):
    torch.manual_seed(0)
    layer = TransformerXLLayer(16, 4, 32, norm=norm).eval()
    memory, x = randn(2, 5, 16, gen=gen), randn(2, 3, 16, gen=gen)
    with_memory = layer(x, relative_position_embeddings(8, 16), memory)
    one_pass = layer(torch.cat([memory, x], dim=1), relative_position_embeddings(8, 16))  # (B, 8, D)
    assert_close(with_memory, one_pass[:, 5:])


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("num_layers", [2, 3])
def test_two_segments_with_memory_equal_one_causal_pass(gen, norm, num_layers):
    # With mem_len ≥ the first segment, segment 2 sees all of segment 1 at every layer, exactly as in one
    # causal pass over both, where segment 1's states never depend on segment 2.
    model = tiny_xl(norm=norm, num_layers=num_layers, mem_len=8)
    ids = torch.randint(0, 64, (2, 14), generator=gen)
    logits1, memory = model(ids[:, :6])
    logits2, memory = model(ids[:, 6:], memory)
    full, full_memory = model(ids)
    assert_close(logits1, full[:, :6])
    assert_close(logits2, full[:, 6:])
    for mine, theirs in zip(memory, full_memory, strict=True):  # every layer's input, last 8 positions
        assert_close(mine, theirs)


@pytest.mark.parametrize("mem_len", [4, 6, 10])
def test_recurrence_equals_one_pass_with_the_segment_band_mask(gen, mem_len):
    # With a shorter memory, segment k's queries see the mem_len positions before it and nothing older;
    # layer by layer the memory is the previous layer's output there, computed under the same rule.
    model = tiny_xl(num_layers=3, mem_len=mem_len)
    ids = torch.randint(0, 64, (2, 16), generator=gen)
    memory, pieces = None, []
    for start in range(0, 16, 4):
        logits, memory = model(ids[:, start : start + 4], memory)
        assert memory[0].shape[1] == min(start + 4, mem_len)
        pieces.append(logits)
    one_pass, one_pass_memory = model(ids, mask=segment_band_mask(16, 4, mem_len))
    assert_close(torch.cat(pieces, dim=1), one_pass)
    for mine, theirs in zip(memory, one_pass_memory, strict=True):
        assert_close(mine, theirs)
    if mem_len < 12:  # a plain causal pass sees more context, so it really differs
        assert not torch.allclose(model(ids).logits[:, 12:], one_pass[:, 12:], atol=1e-3)


def test_evaluate_long_sequence_scores_each_token_once(gen):
    model = tiny_xl(mem_len=16)
    ids = torch.randint(0, 64, (2, 14), generator=gen)
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    log_probs = evaluate_long_sequence(model, ids, segment_len=4)
    hook.remove()
    assert seen == [4, 4, 4, 2]  # no earlier segment is ever recomputed
    expected = F.log_softmax(model(ids).logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert log_probs.shape == (2, 13)
    assert_close(log_probs, expected)  # memory covers the whole past: the same as one full pass
    assert_close(evaluate_long_sequence(model, ids, segment_len=20), expected)


# ---------------------------------------------------------------------------------------------------------
# Stop-gradient and causality


def test_no_gradient_flows_into_the_memory(gen):
    model = tiny_xl(tie_weights=False)
    model.train()  # dropout is 0, so train mode changes nothing but is where gradients matter
    first = torch.randint(0, 32, (2, 6), generator=gen)  # segment 1 uses ids < 32 only,
    second = torch.randint(32, 64, (2, 6), generator=gen)  # segment 2 ids ≥ 32 only
    _, memory = model(first)
    assert all(not m.requires_grad and m.grad_fn is None for m in memory)
    logits, _ = model(second, memory)
    logits.sum().backward()
    # Segment 2's loss reaches no embedding row used only by segment 1: nothing flows back through memory.
    assert model.embed.weight.grad[:32].abs().max() == 0
    assert model.embed.weight.grad[32:].abs().max() > 0
    # A memory handed in with requires_grad is detached all the same.
    model.zero_grad()
    leaf = [m.clone().requires_grad_() for m in memory]
    model(second, leaf).logits.sum().backward()
    assert all(m.grad is None for m in leaf)
    # Without the stop-gradient (one pass over both segments) the same loss does reach segment 1.
    model.zero_grad()
    model(torch.cat([first, second], dim=1)).logits[:, 6:].sum().backward()
    assert model.embed.weight.grad[:32].abs().max() > 0


def test_future_tokens_never_change_earlier_outputs(gen):
    model = tiny_xl()
    ids = torch.randint(0, 64, (2, 12), generator=gen)
    _, memory = model(ids[:, :6])
    changed = ids[:, 6:].clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % 64
    original, original_memory = model(ids[:, 6:], memory)
    altered, altered_memory = model(changed, memory)
    assert_close(altered[:, :3], original[:, :3])
    assert not torch.allclose(altered[:, 3:], original[:, 3:])
    for mine, theirs in zip(altered_memory, original_memory, strict=True):  # mem_len 8: the last 5 changed
        assert_close(mine[:, :5], theirs[:, :5])


def test_same_length_and_no_memory_settings(gen):
    ids = torch.randint(0, 64, (1, 8), generator=gen)
    model = tiny_xl(mem_len=0)
    logits, memory = model(ids[:, 4:], model(ids[:, :4]).memory)
    assert all(m.shape == (1, 0, 32) for m in memory)
    assert_close(logits, model(ids[:, 4:]).logits)  # without memory, segments are independent
    same = tiny_xl(same_length=True, mem_len=4)
    _, memory = same(ids[:, :4])
    window = segment_band_mask(8, 4, 4) & (torch.arange(8)[None, :] > torch.arange(8)[:, None] - 4)
    assert_close(same(ids[:, 4:], memory).logits, same(ids, mask=window).logits[:, 4:])


def test_runs_in_the_inputs_device_and_dtype(gen, device, dtype):
    model = tiny_xl(device).to(dtype)
    ids = torch.randint(0, 64, (2, 5), generator=gen).to(device)
    logits, memory = model(ids[:, 3:], model(ids[:, :3]).memory)
    assert logits.dtype == dtype and logits.device.type == device and torch.isfinite(logits).all()
    assert all(m.dtype == dtype and m.shape == (2, 5, 32) for m in memory)


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_errors_are_named(gen):
    model = tiny_xl()
    ids = torch.randint(0, 64, (2, 4), generator=gen)
    memory = model(ids).memory
    with pytest.raises(ValueError, match=r"list of one tensor per layer \(2\), got 1"):
        model(ids, memory[:1])
    with pytest.raises(ValueError, match=r"memory\[1\] has shape \(2, 4, 16\), expected \(B, M, D\) = \(2, 4, 32\)"):
        model(ids, [memory[0], memory[1][..., :16]])
    with pytest.raises(ValueError, match=r"memory\[0\] has shape \(2, 4, 32\), expected \(B, M, D\) = \(3, 4, 32\)"):
        model(ids[:1].repeat(3, 1), memory)
    with pytest.raises(ValueError, match="memory holds 9 positions, more than mem_len=8"):
        model(ids, [torch.zeros(2, 9, 32)] * 2)
    with pytest.raises(ValueError, match="with the same M in every layer"):
        model(ids, [torch.zeros(2, 3, 32), torch.zeros(2, 4, 32)])
    with pytest.raises(TypeError, match="memory\\[0\\] has dtype torch.float64"):
        model(ids, [m.double() for m in memory])
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 64\)"):
        model(torch.full((1, 3), 64))
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"mask must end in \(T, M \+ T\) = \(4, 8\)"):
        model(ids, memory, mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"r must have shape \(H, Tk, Dh\) = \(1, 3, 2\)"):
        relative_attention_scores(
            *(randn(1, 1, 3, 2, gen=gen),) * 2, randn(1, 4, 2, gen=gen), *(randn(1, 2, gen=gen),) * 2
        )
    with pytest.raises(ValueError, match=r"pos_emb must have shape \(M \+ T, D\) = \(4, 32\)"):
        model.layers[0].attn(randn(1, 4, 32, gen=gen), relative_position_embeddings(5, 32))
    with pytest.raises(ValueError, match="num_heads=3 does not divide d_model=32"):
        TransformerXLConfig.tiny(num_heads=3)
    with pytest.raises(ValueError, match="segment_len must be positive"):
        evaluate_long_sequence(model, ids, 0)
