"""Funnel-Transformer: parity with Hugging Face, pooling and up-sampling values, lengths, and clear errors."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import assert_close, randn
from tfcourse.masks import lengths_to_mask
from tfcourse.models.funnel import (
    CLS_TOKEN_TYPE,
    FunnelBaseModel,
    FunnelConfig,
    FunnelModel,
    TokenInfo,
    pool_sequence,
    pooled_length,
    upsample,
)

transformers = pytest.importorskip("transformers")

VOCAB = 50


def hf_config(**overrides):
    """A tiny Hugging Face Funnel config without dropout."""
    sizes = dict(
        vocab_size=VOCAB, block_sizes=[1, 1, 1], num_decoder_layers=2, d_model=32, n_head=4, d_head=8, d_inner=64,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )  # fmt: skip
    return transformers.FunnelConfig(**{**sizes, **overrides})


def hf_model(cls_name: str, device="cpu", **overrides):
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(hf_config(**overrides)).to(device).eval()


def padded_pairs(gen, width: int, device="cpu"):
    """Rows ``[CLS] A B [PAD]…`` of lengths ``width``, ``width - 3``, ``width - 4``: ids, segment ids, valid."""
    lengths = [width, width - 3, width - 4]
    ids = torch.randint(0, VOCAB, (3, width), generator=gen)
    token_type_ids = (torch.arange(width) >= width // 2).long().repeat(3, 1)  # segment B from the middle on
    token_type_ids[:, 0] = CLS_TOKEN_TYPE
    return ids.to(device), token_type_ids.to(device), lengths_to_mask(lengths, width).to(device)


# ---------------------------------------------------------------------------------------------------------
# Parity with Hugging Face (random weights, padding, two segments and [CLS])

VARIANTS = [
    pytest.param({}, id="default"),
    pytest.param({"separate_cls": False}, id="no-separate-cls"),
    pytest.param({"truncate_seq": False}, id="no-truncate"),
    pytest.param({"pool_q_only": False}, id="pool-kv-too"),
    pytest.param({"pooling_type": "max"}, id="max"),
    pytest.param({"block_sizes": [2, 2], "hidden_act": "gelu"}, id="2x2-gelu"),
]


@pytest.mark.parametrize("overrides", VARIANTS)
@pytest.mark.parametrize("cls_name", ["FunnelBaseModel", "FunnelModel"])
def test_matches_hugging_face(gen, device, cls_name, overrides):
    theirs = hf_model(cls_name, device, **overrides)
    ours = {"FunnelBaseModel": FunnelBaseModel, "FunnelModel": FunnelModel}[cls_name].from_hf(theirs)
    assert not ours.training
    for width in (11, 12):  # odd and even lengths pool differently
        ids, token_type_ids, valid = padded_pairs(gen, width, device)
        with torch.no_grad():
            ref = theirs(ids, attention_mask=valid.long(), token_type_ids=token_type_ids).last_hidden_state
            out = ours(ids, valid=valid, token_type_ids=token_type_ids)
        assert out.shape == ref.shape
        assert_close(out, ref)  # every position, padded ones included: both compute padded query rows alike


def test_from_hf_accepts_task_models_and_the_encoder_of_a_full_model(gen):
    theirs = hf_model("FunnelForMaskedLM")
    ids, token_type_ids, valid = padded_pairs(gen, 12)
    full, encoder = FunnelModel.from_hf(theirs), FunnelBaseModel.from_hf(theirs)
    with torch.no_grad():
        ref = theirs.funnel(ids, attention_mask=valid.long(), token_type_ids=token_type_ids).last_hidden_state
        assert_close(full(ids, valid=valid, token_type_ids=token_type_ids), ref)
        encoded = full.encode(ids, valid=valid, token_type_ids=token_type_ids).hidden
        assert_close(encoder(ids, valid=valid, token_type_ids=token_type_ids), encoded)


# ---------------------------------------------------------------------------------------------------------
# Pooling and up-sampling: literal values


def test_pool_sequence_literal_values():
    x = torch.tensor([[3.0, 1.0, 4.0, 1.0, 5.0]])[..., None]  # (1, 5, 1): [CLS]=3, then 1 4 1 5
    valid = torch.tensor([[True, True, True, True, False]])  # the last token is padding
    cases = {
        # (mode, separate_cls, truncate_seq): (pooled values, pooled valid)
        ("mean", False, False): ([2.0, 2.5, 5.0], [True, True, False]),  # (3 1) (4 1) (5)
        ("max", False, False): ([3.0, 4.0, 5.0], [True, True, False]),
        ("mean", True, False): ([3.0, 2.5, 3.0], [True, True, False]),  # [CLS] (1 4) (1 5)
        ("max", True, False): ([3.0, 4.0, 5.0], [True, True, False]),
        ("mean", True, True): ([3.0, 2.5, 1.0], [True, True, True]),  # [CLS] (1 4) (1); 5 is truncated
        ("max", True, True): ([3.0, 4.0, 1.0], [True, True, True]),
    }
    for (mode, separate_cls, truncate_seq), (values, real) in cases.items():
        pooled, pooled_valid = pool_sequence(x, valid, 2, mode, separate_cls=separate_cls, truncate_seq=truncate_seq)
        assert pooled[0, :, 0].tolist() == values, (mode, separate_cls, truncate_seq)
        assert pooled_valid[0].tolist() == real, (mode, separate_cls, truncate_seq)


def test_pool_sequence_pools_features_independently_and_keeps_dtype(gen, device, dtype):
    x = randn(2, 9, 4, gen=gen, device=device, dtype=dtype)
    valid = lengths_to_mask([9, 6]).to(device)
    pooled, pooled_valid = pool_sequence(x, valid, 2, "mean", separate_cls=False)
    assert pooled.dtype == dtype and pooled.shape == (2, 5, 4)
    assert_close(pooled[:, :4], (x[:, 0:8:2].float() + x[:, 1:8:2].float()) / 2, dtype)
    assert_close(pooled[:, 4], x[:, 8])  # the last window holds one position
    assert pooled_valid.tolist() == [[True] * 5, [True, True, True, False, False]]
    tripled, _ = pool_sequence(x, valid, 3, "max", separate_cls=False)
    assert_close(tripled, x.view(2, 3, 3, 4).amax(dim=2))


@pytest.mark.parametrize("separate_cls", [False, True])
@pytest.mark.parametrize("truncate_seq", [False, True])
def test_pooled_length_agrees_with_pool_sequence(separate_cls, truncate_seq):
    for t in range(3, 20):
        for stride in (2, 3):
            pooled, _ = pool_sequence(
                torch.zeros(1, t, 2), torch.ones(1, t, dtype=torch.bool), stride,
                separate_cls=separate_cls, truncate_seq=truncate_seq,
            )  # fmt: skip
            assert pooled.shape[1] == pooled_length(t, stride, separate_cls=separate_cls, truncate_seq=truncate_seq)


def test_upsample_literal_values():
    x = torch.tensor([[9.0, 1.0, 2.0]])[..., None]  # (1, 3, 1): [CLS] and two positions pooled 4 times
    assert upsample(x, 4, 8, separate_cls=True)[0, :, 0].tolist() == [9, 1, 1, 1, 1, 2, 2, 2]
    # A token that truncation dropped has no pooled counterpart: zeros.
    assert upsample(x, 2, 7, separate_cls=True)[0, :, 0].tolist() == [9, 1, 1, 2, 2, 0, 0]
    assert upsample(x, 2, 5, separate_cls=False)[0, :, 0].tolist() == [9, 9, 1, 1, 2]
    assert upsample(x, 1, 3)[0, :, 0].tolist() == [9, 1, 2]


# ---------------------------------------------------------------------------------------------------------
# Lengths halve per block; the decoder restores the input length


@pytest.mark.parametrize(
    ("separate_cls", "truncate_seq", "expected"),
    [
        (True, True, {5: (5, 3, 2), 7: (7, 4, 2), 8: (8, 4, 2), 9: (9, 5, 3), 16: (16, 8, 4)}),
        (True, False, {5: (5, 3, 2), 7: (7, 4, 3), 8: (8, 5, 3), 9: (9, 5, 3), 16: (16, 9, 5)}),
        (False, False, {5: (5, 3, 2), 7: (7, 4, 2), 8: (8, 4, 2), 9: (9, 5, 3), 16: (16, 8, 4)}),
    ],
)
def test_sequence_lengths_halve_per_block(gen, separate_cls, truncate_seq, expected):
    torch.manual_seed(0)
    config = FunnelConfig.tiny(block_sizes=(1, 1, 1), separate_cls=separate_cls, truncate_seq=truncate_seq)
    base, full = FunnelBaseModel(config).eval(), FunnelModel(config).eval()
    for t, lengths in expected.items():
        assert config.block_lengths(t) == lengths
        ids = torch.randint(0, 64, (2, t), generator=gen)
        assert base(ids).shape == (2, lengths[-1], 32)
        assert full(ids).shape == (2, t, 32)


# ---------------------------------------------------------------------------------------------------------
# Pool-query-only: the first layer of a block reads the unpooled keys and values


def test_first_layer_of_a_block_attends_to_unpooled_keys(gen):
    hidden = randn(1, 8, 32, gen=gen)
    info = TokenInfo(torch.ones(1, 8, dtype=torch.bool), torch.zeros(1, 8, dtype=torch.long), torch.arange(8))
    changed = hidden.clone()
    changed[:, 7] += 1.0  # the last token: truncated away from the pooled queries
    outputs = {}
    for pool_q_only in (True, False):
        torch.manual_seed(0)
        block = FunnelBaseModel(FunnelConfig.tiny(pool_q_only=pool_q_only)).eval().blocks[1]
        (before, pooled_info), (after, _) = block(hidden, info), block(changed, info)
        assert before.shape == (1, 4, 32) and pooled_info.positions.tolist() == [0, 1, 3, 5]
        outputs[pool_q_only] = (before - after).abs().max().item()
    assert outputs[True] > 1e-3  # the queries are unchanged, yet the block sees the token through its keys
    assert outputs[False] == 0.0  # with pooled keys too, the truncated token is gone


def test_padding_stays_out_of_real_pooled_positions(gen):
    torch.manual_seed(0)
    config = FunnelConfig.tiny(block_sizes=(1, 1))
    base, full = FunnelBaseModel(config).eval(), FunnelModel(config).eval()
    ids = torch.randint(0, 64, (1, 12), generator=gen)
    valid = lengths_to_mask([10], 12)
    other = ids.clone()
    other[:, 10:] = (other[:, 10:] + 1) % 64  # change only the padding
    first, second = base.encode(ids, valid=valid), base.encode(other, valid=valid)
    assert first.valid.tolist() == [[True] * 5 + [False]]  # the window (t9, pad) is padding
    assert_close(first.hidden[:, :5], second.hidden[:, :5])
    # As in the original model, the decoder copies that mixed window's row back onto the real token t9,
    # from where every real position can read it: the full model's real outputs do depend on padding.
    assert not torch.allclose(full(ids, valid=valid)[:, :10], full(other, valid=valid)[:, :10])


def test_runs_in_low_precision(gen, device, dtype):
    torch.manual_seed(0)
    model = FunnelModel(FunnelConfig.tiny()).to(device).eval()
    ids = torch.randint(0, 64, (2, 9), generator=gen).to(device)
    valid = lengths_to_mask([9, 7]).to(device)
    with torch.no_grad():
        ref = model(ids, valid=valid)
        out = model.to(dtype)(ids, valid=valid)
    assert out.dtype == dtype and out.device.type == device
    torch.testing.assert_close(out.float(), ref, atol=0.15 if dtype == torch.bfloat16 else 1e-5, rtol=0.05)


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_errors_are_named(gen):
    model = FunnelBaseModel(FunnelConfig.tiny(block_sizes=(1, 1, 1)))
    with pytest.raises(ValueError, match="a sequence of 4 tokens is too short for 3 blocks: block 2 would pool 2"):
        model(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.full((1, 8), 64))
    with pytest.raises(ValueError, match=r"valid must have the shape of input_ids \(1, 8\), got \(1, 7\)"):
        model(torch.zeros(1, 8, dtype=torch.long), valid=torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="valid must be a torch.bool tensor"):
        model(torch.zeros(1, 8, dtype=torch.long), valid=torch.ones(1, 8))
    x, valid = randn(1, 2, 4, gen=gen), torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="x has length 2 .* pooling needs at least 3 positions"):
        pool_sequence(x, valid, separate_cls=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        pool_sequence(x, valid, mode="min", separate_cls=False)
    with pytest.raises(ValueError, match=r"valid must have shape \(B, T\) = \(1, 2\), got \(1, 3\)"):
        pool_sequence(x, torch.ones(1, 3, dtype=torch.bool), separate_cls=False)
    with pytest.raises(ValueError, match="pooling must be one of"):
        FunnelConfig.tiny(pooling="min")
    with pytest.raises(ValueError, match="block_sizes must name at least one block"):
        FunnelConfig.tiny(block_sizes=())


def test_from_hf_rejects_what_it_does_not_implement():
    with pytest.raises(ValueError, match="attention_type='factorized'"):
        FunnelBaseModel.from_hf(hf_model("FunnelBaseModel", attention_type="factorized"))
    with pytest.raises(ValueError, match=r"block_repeats=\[1, 2, 1\]"):
        FunnelBaseModel.from_hf(hf_model("FunnelBaseModel", block_repeats=[1, 2, 1]))
    with pytest.raises(ValueError, match="hidden_act='silu'"):
        FunnelBaseModel.from_hf(hf_model("FunnelBaseModel", hidden_act="silu"))
    with pytest.raises(ValueError, match="needs a model with a decoder"):
        FunnelModel.from_hf(hf_model("FunnelBaseModel"))
    with pytest.raises(TypeError, match="hf_model must be a transformers Funnel model, got Linear"):
        FunnelBaseModel.from_hf(torch.nn.Linear(2, 2))
