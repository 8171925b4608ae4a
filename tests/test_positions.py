"""Position encodings: literal values, parity with Hugging Face, and RoPE's relative property."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.llama.configuration_llama import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
from transformers.models.t5.modeling_t5 import T5Attention

from tests.helpers import assert_close, randn
from tfcourse.positions import (
    LearnedPositions,
    RotaryEmbedding,
    ShawRelativeBias,
    SinusoidalPositions,
    T5RelativeBias,
    apply_rotary,
    half_to_interleaved,
    interleaved_to_half,
    rel_shift,
    relative_positions,
    rotary_angles,
    shaw_key_logits,
    sinusoidal_positions,
    t5_relative_position_bucket,
)

# ---------------------------------------------------------------------------------------------------------
# Absolute positions


def test_sinusoidal_literal_values():
    table = sinusoidal_positions(50, 4)
    # Column pairs (sin, cos) with frequencies 1 and 1/100 (= 10000^(-2/4)).
    for pos in (0, 1, 7, 49):
        expected = [math.sin(pos), math.cos(pos), math.sin(pos / 100), math.cos(pos / 100)]
        torch.testing.assert_close(table[pos], torch.tensor(expected))


def test_absolute_positions_add_by_broadcasting(gen):
    x = randn(2, 5, 8, gen=gen)
    sin = SinusoidalPositions(16, 8)
    assert_close(sin(x, offset=3), x + sinusoidal_positions(16, 8)[3:8])
    learned = LearnedPositions(16, 8)
    assert_close(learned(x), x + learned.embedding.weight[:5])
    assert "table" not in sin.state_dict()  # a constant, not a parameter to save
    with pytest.raises(ValueError, match=r"positions 14..18 of x \(shape \(2, 5, 8\)\) exceed the table"):
        learned(x, offset=14)
    with pytest.raises(ValueError, match="d_model must be even"):
        sinusoidal_positions(4, 5)


# ---------------------------------------------------------------------------------------------------------
# RoPE


def test_rope_matches_llama_after_pairing_conversion(gen):
    b, h, t, dh = 2, 3, 11, 16
    config = LlamaConfig(hidden_size=h * dh, num_attention_heads=h, max_position_embeddings=64)
    hf_rope = LlamaRotaryEmbedding(config)
    q_half, k_half = randn(b, h, t, dh, gen=gen), randn(b, h, t, dh, gen=gen)
    positions = torch.arange(5, 5 + t).expand(b, t)
    cos, sin = hf_rope(q_half, positions)
    hf_q, hf_k = apply_rotary_pos_emb(q_half, k_half, cos, sin)

    rope = RotaryEmbedding(dh, base=config.rope_parameters["rope_theta"])
    ours_q = interleaved_to_half(rope(half_to_interleaved(q_half), positions))
    ours_k = interleaved_to_half(rope(half_to_interleaved(k_half), positions))
    assert_close(ours_q, hf_q)
    assert_close(ours_k, hf_k)
    # The half pairing applied directly gives the same numbers without any conversion.
    assert_close(RotaryEmbedding(dh, pairing="half")(q_half, positions), hf_q)
    # Forgetting the conversion is a real mistake that the parity check would catch.
    assert not torch.allclose(rope(q_half, positions), hf_q, atol=1e-3)


def test_pairing_converters_are_inverse_and_literal():
    x = torch.arange(6.0)
    assert interleaved_to_half(x).tolist() == [0, 2, 4, 1, 3, 5]
    assert half_to_interleaved(x).tolist() == [0, 3, 1, 4, 2, 5]
    w = torch.randn(4, 6, 3)
    assert torch.equal(interleaved_to_half(half_to_interleaved(w, dim=1), dim=1), w)


def test_rope_scores_depend_only_on_the_offset(gen):
    rope = RotaryEmbedding(8)
    q, k = randn(1, 1, 1, 8, gen=gen), randn(1, 1, 1, 8, gen=gen)

    def score(m: int, n: int) -> float:
        qm = rope(q, torch.tensor([m]))
        kn = rope(k, torch.tensor([n]))
        return (qm * kn).sum().item()

    for offset in (0, 3, -5):
        scores = [score(m, m + offset) for m in (0, 7, 100, 1000)]
        assert max(scores) - min(scores) < 1e-3
    assert abs(score(0, 3) - score(0, 4)) > 1e-3  # the offset does matter


def test_rope_preserves_norms_and_identity_at_zero(gen):
    x = randn(2, 2, 5, 8, gen=gen)
    rotated = apply_rotary(x, rotary_angles(torch.arange(5), 8))
    assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    assert_close(rotated[:, :, 0], x[:, :, 0])
    with pytest.raises(ValueError, match="head_dim must be even"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="pairing must be one of"):
        apply_rotary(x, rotary_angles(torch.arange(5), 8), pairing="blocks")


# ---------------------------------------------------------------------------------------------------------
# Relative positions


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 64), (8, 20)])
def test_t5_buckets_match_transformers(bidirectional, num_buckets, max_distance):
    offsets = torch.arange(-3000, 3001)
    ours = t5_relative_position_bucket(offsets, bidirectional, num_buckets, max_distance)
    theirs = T5Attention._relative_position_bucket(offsets, bidirectional, num_buckets, max_distance)
    assert torch.equal(ours, theirs)


def test_t5_buckets_literal():
    offsets = torch.tensor([-200, -20, -8, -7, -1, 0, 1, 7, 8, 20, 200])
    expected = [15, 10, 8, 7, 1, 0, 17, 23, 24, 26, 31]  # e.g. 20: 8 + int(8·ln(20/8)/ln(16)) = 10, +16
    assert t5_relative_position_bucket(offsets).tolist() == expected
    causal = t5_relative_position_bucket(offsets, bidirectional=False)
    assert causal[5:].tolist() == [0] * 6  # future keys share bucket 0


def test_t5_bias_module_shapes_and_cached_rows():
    bias = T5RelativeBias(num_heads=4)
    full = bias(6)
    assert full.shape == (1, 4, 6, 6)
    assert torch.equal(bias(2, 6), full[:, :, 4:])  # the last two queries, as with a cache
    buckets = t5_relative_position_bucket(relative_positions(6))
    assert torch.equal(full[0, 1], bias.embedding.weight[buckets, 1])


def test_shaw_bias_and_vector_form(gen):
    shaw = ShawRelativeBias(num_heads=2, max_distance=2)
    out = shaw(4)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, 0, 3] == shaw.embedding.weight[4, 0]  # offset +3 clipped to +2
    assert out[0, 1, 3, 0] == shaw.embedding.weight[0, 1]  # offset -3 clipped to -2
    q, table = randn(1, 1, 4, 3, gen=gen), randn(5, 3, gen=gen)
    logits = shaw_key_logits(q, table, max_distance=2)
    assert torch.allclose(logits[0, 0, 1, 3], q[0, 0, 1] @ table[4])  # offset +2
    assert torch.allclose(logits[0, 0, 3, 0], q[0, 0, 3] @ table[0])  # offset -3 clipped
    with pytest.raises(ValueError, match="table must have shape"):
        shaw_key_logits(q, table[:4], max_distance=2)


@pytest.mark.parametrize("tq,tk", [(4, 4), (3, 7), (1, 5)])
def test_rel_shift_equals_explicit_gather(gen, tq, tk):
    x = randn(2, 3, tq, tk, gen=gen)
    shifted = rel_shift(x)
    for i in range(tq):
        for j in range(tk):
            if j <= i + tk - tq:  # the causal region, where the result is defined
                assert shifted[..., i, j].equal(x[..., i, j + tq - 1 - i])
    with pytest.raises(ValueError, match="Tq <= Tk"):
        rel_shift(randn(5, 3, gen=gen))
