"""Transformer layers and stacks: parity with PyTorch's layers, DeepNorm, RealFormer and gradient behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import assert_close, randn
from tfcourse.attention import attention_scores, split_heads
from tfcourse.blocks import (
    Decoder,
    Encoder,
    FeedForward,
    TransformerLayer,
    deepnorm_constants,
)
from tfcourse.cache import KVCache
from tfcourse.masks import attention_mask, lengths_to_mask


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch(gen, device, norm_first):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=norm_first).to(device)
    ours = TransformerLayer.from_torch(theirs)
    assert ours.norm == ("pre" if norm_first else "post")
    x = randn(3, 7, 32, gen=gen, device=device).requires_grad_()
    valid = lengths_to_mask([7, 5, 2]).to(device)
    ref = theirs(x, src_key_padding_mask=~valid)  # PyTorch: True = ignore
    out = ours(x, mask=attention_mask(k_valid=valid))
    assert_close(out, ref)
    ref.square().sum().backward()
    grad_ref = x.grad.clone()
    x.grad = None
    out.square().sum().backward()
    assert_close(x.grad, grad_ref)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(gen, device, norm_first):
    torch.manual_seed(0)
    theirs = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=norm_first).to(device)
    theirs.eval()
    ours = TransformerLayer.from_torch(theirs).eval()
    x, memory = randn(2, 5, 32, gen=gen, device=device), randn(2, 6, 32, gen=gen, device=device)
    src_valid = lengths_to_mask([6, 3]).to(device)
    causal = nn.Transformer.generate_square_subsequent_mask(5, device=device)
    ref = theirs(x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=~src_valid)
    out = ours(x, causal=True, memory=memory, memory_mask=src_valid[:, None, None, :])
    assert_close(out, ref)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # PyTorch's own note about its fast path
@pytest.mark.parametrize("norm_first", [False, True])
def test_full_encoder_decoder_matches_nn_transformer(gen, device, norm_first):
    torch.manual_seed(0)
    theirs = nn.Transformer(32, 4, 2, 3, 64, dropout=0.1, batch_first=True, norm_first=norm_first).to(device).eval()
    encoder, decoder = Encoder.from_torch(theirs.encoder).eval(), Decoder.from_torch(theirs.decoder).eval()
    src, tgt = randn(2, 7, 32, gen=gen, device=device), randn(2, 5, 32, gen=gen, device=device)
    src_valid = lengths_to_mask([7, 4]).to(device)
    ref = theirs(
        src, tgt,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(5, device=device), tgt_is_causal=True,
        src_key_padding_mask=~src_valid, memory_key_padding_mask=~src_valid,
    )  # fmt: skip
    memory = encoder(src, mask=attention_mask(k_valid=src_valid))
    out = decoder(tgt, memory, memory_mask=src_valid[:, None, None, :])
    assert_close(out[:, :, :], ref)


def test_feed_forward_is_position_wise(gen):
    ff = FeedForward(8, 16)
    x = randn(2, 5, 8, gen=gen)
    assert_close(ff(x)[:, 3], ff(x[:, 3:4])[:, 0])
    assert_close(ff(x), ff.down(F.relu(ff.up(x))))
    with pytest.raises(ValueError, match="activation must be one of"):
        FeedForward(8, 16, activation="swish")


# ---------------------------------------------------------------------------------------------------------
# DeepNorm and RealFormer


def test_deepnorm_constants_follow_the_paper():
    enc = deepnorm_constants(num_encoder_layers=6)["encoder"]
    assert enc.alpha == pytest.approx(12**0.25) and enc.beta == pytest.approx(48**-0.25)
    dec = deepnorm_constants(num_decoder_layers=12)["decoder"]
    assert dec.alpha == pytest.approx(24**0.25) and dec.beta == pytest.approx(96**-0.25)
    both = deepnorm_constants(6, 6)
    assert both["encoder"].alpha == pytest.approx(0.81 * 6 ** (5 / 16))
    assert both["encoder"].beta == pytest.approx(0.87 * 6 ** (-5 / 16))
    assert both["decoder"] == pytest.approx((18**0.25, 72**-0.25))
    with pytest.raises(ValueError, match="at least one"):
        deepnorm_constants()


def test_deepnorm_layer_weights_the_residual_and_scales_the_init(gen):
    torch.manual_seed(0)
    encoder = Encoder(100, 64, 4, 256, norm="deepnorm")
    alpha, beta = deepnorm_constants(num_encoder_layers=100)["encoder"]
    layer = encoder.layers[0]
    x = randn(2, 5, 64, gen=gen)
    h = layer.self_attn_norm(alpha * x + layer.self_attn(x))
    expected = layer.ff_norm(alpha * h + layer.ff(h))
    assert_close(layer(x), expected)
    xavier = math.sqrt(2 / (64 + 64))
    assert layer.self_attn.q_proj.weight.std().item() == pytest.approx(xavier, rel=0.1)
    assert layer.self_attn.v_proj.weight.std().item() == pytest.approx(beta * xavier, rel=0.1)
    assert layer.ff.up.weight.std().item() == pytest.approx(beta * math.sqrt(2 / (64 + 256)), rel=0.1)


def test_residual_attention_adds_the_previous_layers_scores(gen):
    torch.manual_seed(0)
    encoder = Encoder(2, 16, 2, 32, residual_attention=True).eval()
    x = randn(2, 4, 16, gen=gen)
    first, second = encoder.layers
    h1, scores1 = first(x)
    h2, scores2 = second(h1, bias=scores1)
    attn = second.self_attn
    own = attention_scores(split_heads(attn.q_proj(h1), 2), split_heads(attn.k_proj(h1), 2))
    assert_close(scores2, scores1 + own)  # the scores accumulate layer by layer
    assert_close(encoder(x), h2)
    plain = Encoder(2, 16, 2, 32)
    plain.load_state_dict(encoder.state_dict())
    assert not torch.allclose(plain.eval()(x), h2, atol=1e-4)  # residual attention changes the result


# ---------------------------------------------------------------------------------------------------------
# Post-LN vs Pre-LN gradients at initialisation (Xiong et al. 2020)


def last_and_first_gradients(norm: str, seed: int, layers: int = 24) -> tuple[float, float]:
    torch.manual_seed(seed)
    encoder, head = Encoder(layers, 64, 4, 256, norm=norm), nn.Linear(64, 32)
    x, y = torch.randn(16, 32, 64), torch.randint(0, 32, (16, 32))
    F.cross_entropy(head(encoder(x)).transpose(1, 2), y).backward()
    norms = [layer.ff.down.weight.grad.norm().item() for layer in encoder.layers]
    return norms[-1], norms[0]


def test_post_ln_gradients_grow_towards_the_output_and_pre_ln_do_not():
    seeds = range(3)
    post = [last_and_first_gradients("post", s) for s in seeds]
    pre = [last_and_first_gradients("pre", s) for s in seeds]
    post_ratio = sum(last / first for last, first in post) / 3
    pre_ratio = sum(last / first for last, first in pre) / 3
    assert post_ratio > 1.15  # Post-LN: the layers nearest the output get the largest gradients
    assert pre_ratio < 0.85  # Pre-LN: no growth towards the output (early layers even get more)
    # Near the output, Post-LN's gradients are much larger than Pre-LN's: the reason it needs warm-up.
    assert sum(last for last, _ in post) > 1.5 * sum(last for last, _ in pre)


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_layer_errors_are_named(gen):
    with pytest.raises(ValueError, match="norm must be one of"):
        TransformerLayer(16, 2, 32, norm="sandwich")
    with pytest.raises(ValueError, match="deepnorm_alpha"):
        TransformerLayer(16, 2, 32, norm="post", deepnorm_alpha=2.0)
    encoder_layer = TransformerLayer(16, 2, 32)
    with pytest.raises(ValueError, match="memory must be given exactly when"):
        encoder_layer(randn(1, 3, 16, gen=gen), memory=randn(1, 3, 16, gen=gen))
    decoder = Decoder(2, 16, 2, 32)
    with pytest.raises(ValueError, match="memory must be given exactly when"):
        decoder(randn(1, 3, 16, gen=gen))
    with pytest.raises(ValueError, match="caches has 1 entries for 2 layers"):
        decoder(randn(1, 3, 16, gen=gen), randn(1, 3, 16, gen=gen), caches=[KVCache(1, 2, 8, 8)])
