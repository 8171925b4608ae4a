"""BERT: parity with Hugging Face on random weights, tied MLM decoder, the embedding sum, errors and training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import assert_close
from tfcourse.masks import lengths_to_mask
from tfcourse.models.bert import BertConfig, BertForPreTraining, BertModel, pretraining_loss
from tfcourse.models.bert_finetuning import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    best_span,
)
from tfcourse.pretraining import mlm_mask

transformers = pytest.importorskip("transformers")

CLS, SEP, MASK = 1, 2, 3  # special ids of the tiny vocabulary (0 is [PAD])
LENGTHS = [10, 7, 4]


def hf_config(**overrides):
    """A tiny Hugging Face config (eager attention: the plain reference path, independent of ours)."""
    sizes = dict(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, attn_implementation="eager",
    )  # fmt: skip
    return transformers.BertConfig(**{**sizes, **overrides})


def hf_model(cls_name: str, device="cpu", **overrides):
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(hf_config(**overrides)).to(device).eval()


def padded_pairs(gen, device="cpu"):
    """``[CLS] A [SEP] B [SEP] [PAD]…`` rows of lengths ``LENGTHS``: ids, segment ids, HF attention_mask."""
    width = max(LENGTHS)
    ids = torch.randint(4, 99, (len(LENGTHS), width), generator=gen)
    token_type_ids = torch.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        split = length // 2  # segment A is [CLS] + tokens up to split, B the rest
        ids[row, [0, split, length - 1]] = torch.tensor([CLS, SEP, SEP])
        token_type_ids[row, split + 1 : length] = 1
    valid = lengths_to_mask(LENGTHS, width)
    ids = ids.masked_fill(~valid, 0)
    return ids.to(device), token_type_ids.to(device), valid.long().to(device)


# ---------------------------------------------------------------------------------------------------------
# Parity with Hugging Face (random weights, padding and two segments)


def test_bert_model_matches_hugging_face(gen, device):
    theirs = hf_model("BertModel", device)
    ours = BertModel.from_hf(theirs)
    ids, types, attention_mask = padded_pairs(gen, device)
    ref = theirs(ids, attention_mask=attention_mask, token_type_ids=types)
    out = ours(ids, token_type_ids=types, attention_mask=attention_mask)
    assert_close(out.sequence_output, ref.last_hidden_state)
    assert_close(out.pooled_output, ref.pooler_output)
    # tfcourse's bool convention gives the same result as Hugging Face's 0/1 mask.
    same = ours(ids, token_type_ids=types, valid=attention_mask.bool())
    torch.testing.assert_close(same.sequence_output, out.sequence_output, atol=0, rtol=0)


def test_pretraining_logits_and_loss_match_hugging_face(gen, device):
    theirs = hf_model("BertForPreTraining", device)
    ours = BertForPreTraining.from_hf(theirs)
    ids, types, attention_mask = padded_pairs(gen, device)
    masked = mlm_mask(ids, mask_token_id=MASK, vocab_size=99, special_token_ids=[CLS, SEP], pad_token_id=0,
                      mlm_probability=0.4, generator=gen)  # fmt: skip
    assert masked.selected.any()
    nsp_labels = torch.tensor([0, 1, 1], device=device)
    ref = theirs(masked.input_ids, attention_mask=attention_mask, token_type_ids=types,
                 labels=masked.labels, next_sentence_label=nsp_labels)  # fmt: skip
    inputs = dict(token_type_ids=types, attention_mask=attention_mask)
    out = ours(masked.input_ids, **inputs)
    assert_close(out.mlm_logits, ref.prediction_logits)
    assert_close(out.nsp_logits, ref.seq_relationship_logits)
    assert_close(ours.loss(masked.input_ids, masked.labels, nsp_labels, **inputs), ref.loss)


@pytest.mark.parametrize(
    "ours_cls", [BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering]
)
def test_fine_tuning_heads_match_hugging_face(gen, ours_cls):
    num_labels = 2 if ours_cls is BertForQuestionAnswering else 5
    theirs = hf_model(ours_cls.__name__, num_labels=num_labels)
    ours = ours_cls.from_hf(theirs)
    ids, types, attention_mask = padded_pairs(gen)
    ref = theirs(ids, attention_mask=attention_mask, token_type_ids=types)
    out = ours(ids, token_type_ids=types, attention_mask=attention_mask)
    if ours_cls is BertForQuestionAnswering:
        assert_close(out.start, ref.start_logits)
        assert_close(out.end, ref.end_logits)
    else:
        assert out.shape == ref.logits.shape
        assert_close(out, ref.logits)


def test_best_span_literal():
    start = torch.tensor([[9.0, 1.0, 5.0, 0.0, 0.0], [-5.0, 0.0, 0.0, 4.0, 2.5]])
    end = torch.tensor([[0.5, 8.0, 1.0, 6.0, 0.0], [7.0, 0.0, 0.0, 0.0, 1.0]])
    first, last = best_span(start, end)
    assert first.tolist() == [0, 3] and last.tolist() == [1, 4]  # row 1: end[0] = 7 lies before start 3
    first, last = best_span(start, end, max_length=1)
    assert first.tolist() == [0, 3] and last.tolist() == [0, 3]  # one-token answers only
    passage = torch.tensor([[False, False, True, True, True], [True] * 5])  # row 0: tokens 0-1 are the question
    first, last = best_span(start, end, allowed=passage)
    assert first.tolist() == [2, 3] and last.tolist() == [3, 4]


def test_bert_base_has_110_million_parameters():
    with torch.device("meta"):  # shapes only: no memory, no time
        model = BertModel(BertConfig())
    assert sum(p.numel() for p in model.parameters()) == 109_482_240  # "BERT-BASE ... Total Parameters=110M" (§3)


def test_config_from_hugging_face():
    config = BertConfig.from_hf(hf_config(layer_norm_eps=1e-7, classifier_dropout=0.3))
    assert (config.d_model, config.num_heads, config.num_layers, config.d_ff) == (32, 4, 2, 64)
    assert (config.max_len, config.type_vocab_size, config.layer_norm_eps) == (64, 2, 1e-7)
    assert (config.dropout, config.attention_dropout, config.classifier_dropout) == (0.1, 0.1, 0.3)
    assert BertConfig().layer_norm_eps == 1e-12 and BertConfig().max_len == 512
    with pytest.raises(dataclasses.FrozenInstanceError):
        BertConfig.tiny().d_model = 8


# ---------------------------------------------------------------------------------------------------------
# Invariants: padding, the tied decoder, the embedding sum, dropout placement


def test_padding_does_not_change_real_tokens(gen):
    torch.manual_seed(0)
    model = BertModel(BertConfig.tiny()).eval()
    ids, types, attention_mask = padded_pairs(gen)
    batch = model(ids, token_type_ids=types, attention_mask=attention_mask)
    for row, length in enumerate(LENGTHS):
        alone = model(ids[row : row + 1, :length], token_type_ids=types[row : row + 1, :length])
        assert_close(batch.sequence_output[row : row + 1, :length], alone.sequence_output)
        assert_close(batch.pooled_output[row : row + 1], alone.pooled_output)


def test_mlm_decoder_shares_the_token_embedding(gen):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.tiny())
    embedding, decoder = model.bert.embeddings.tokens.weight, model.mlm_head.decoder.weight
    assert decoder is embedding and decoder.data_ptr() == embedding.data_ptr()
    assert sum(p is embedding for p in model.parameters()) == 1  # one tensor, counted once
    ids = torch.randint(4, 99, (2, 6), generator=gen)
    model(ids).mlm_logits.sum().backward()
    assert embedding.grad is not None and decoder.grad is embedding.grad  # both uses feed one gradient
    with torch.no_grad():
        embedding[7] += 1.0  # editing the embedding edits the decoder's row for token 7
    torch.testing.assert_close(model.mlm_head.decoder.weight[7], embedding[7])


def test_summed_embeddings_equal_a_linear_layer_on_concatenated_one_hots(gen):
    model = BertModel(BertConfig.tiny()).eval()
    emb = model.embeddings
    e_tok, e_seg, e_pos = emb.tokens.weight, emb.segments.weight, emb.positions.embedding.weight
    ids, types, _ = padded_pairs(gen)
    t, s, p = ids[0], types[0], torch.arange(ids.shape[1])  # (T,) each
    one_hot = torch.cat(
        [F.one_hot(t, e_tok.shape[0]), F.one_hot(s, e_seg.shape[0]), F.one_hot(p, e_pos.shape[0])], dim=-1
    ).float()  # (T, V + S + P)
    stacked = torch.vstack([e_tok, e_seg, e_pos])  # (V + S + P, D)
    summed = e_tok[t] + e_seg[s] + e_pos[p]  # (T, D)
    assert_close(one_hot @ stacked, summed)
    # ... and that sum, layer-normalised, is exactly what the embedding module feeds the encoder.
    assert_close(emb(ids[:1], types[:1])[0], emb.norm(summed))


def test_dropout_sits_where_bert_puts_it():
    model = BertForSequenceClassification(BertConfig.tiny(dropout=0.1, attention_dropout=0.2, classifier_dropout=0.3))
    layer = model.bert.encoder.layers[0]
    assert (layer.dropout.p, layer.self_attn.dropout, layer.ff.dropout.p) == (0.1, 0.2, 0.0)  # no FFN dropout
    assert model.bert.embeddings.dropout.p == 0.1 and model.dropout.p == 0.3


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_is_named(gen):
    model = BertModel(BertConfig.tiny())
    ids = torch.randint(4, 99, (2, 5), generator=gen)
    with pytest.raises(ValueError, match=r"input_ids holds ids \d+\.\.99 outside the vocabulary \[0, 99\)"):
        model(ids.index_fill(1, torch.tensor([2]), 99))
    with pytest.raises(ValueError, match=r"input_ids holds ids -1\.\."):
        model(ids.index_fill(1, torch.tensor([2]), -1))
    with pytest.raises(ValueError, match=r"token_type_ids must be segment ids in \[0, type_vocab_size=2\), got 0\.\.2"):
        model(ids, token_type_ids=torch.full_like(ids, 2).index_fill(1, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match=r"token_type_ids \(2, 4\) != input_ids \(2, 5\)"):
        model(ids, token_type_ids=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must hold only 0 \(padding\) and 1"):
        model(ids, attention_mask=torch.zeros(2, 5).index_fill(1, torch.tensor([4]), -10000.0))
    with pytest.raises(ValueError, match="not both"):
        model(ids, attention_mask=torch.ones_like(ids), valid=torch.ones_like(ids, dtype=torch.bool))
    with pytest.raises(TypeError, match="valid must be a torch.bool tensor"):
        model(ids, valid=torch.ones_like(ids))
    with pytest.raises(ValueError, match=r"valid has shape \(2, 4\), input_ids has \(2, 5\)"):
        model(ids, valid=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        model(ids.float())
    with pytest.raises(ValueError, match="num_heads=5 does not divide d_model=32"):
        BertConfig.tiny(num_heads=5)
    with pytest.raises(ValueError, match="question answering needs num_labels=2"):
        BertForQuestionAnswering(BertConfig.tiny(), num_labels=3)


def test_sequences_longer_than_the_position_table_are_refused():
    model = BertModel(BertConfig.tiny(max_len=512))  # BERT's real limit
    model(torch.zeros(1, 512, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids has length 513, but BERT's learned position table has max_len=512"):
        model(torch.zeros(1, 513, dtype=torch.long))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (dict(position_embedding_type="relative_key"), "position_embedding_type='relative_key'"),
        (dict(hidden_act="relu"), "hidden_act='relu'; tfcourse's BERT supports only 'gelu'"),
        (dict(hidden_act="gelu_new"), "hidden_act='gelu_new'"),
        (dict(is_decoder=True), "is_decoder=True"),
    ],
)
def test_from_hf_refuses_unsupported_configs(override, message):
    with pytest.raises(ValueError, match=message):
        BertModel.from_hf(hf_model("BertModel", **override))


def test_from_hf_reports_mismatches_by_parameter_name():
    theirs = hf_model("BertModel")
    with pytest.raises(TypeError, match="hf_model must be a transformers BertModel, got BertForPreTraining"):
        BertModel.from_hf(hf_model("BertForPreTraining"))
    theirs.pooler.dense = torch.nn.Linear(32, 16)
    with pytest.raises(
        ValueError, match=r"'pooler.dense.weight' is \(16, 32\), tfcourse 'pooler.weight' is \(32, 32\)"
    ):
        BertModel.from_hf(theirs)
    untied = hf_model("BertForPreTraining")
    untied.cls.predictions.decoder.weight = torch.nn.Parameter(torch.randn(99, 32))
    with pytest.raises(ValueError, match="MLM decoder is not tied to the word embeddings"):
        BertForPreTraining.from_hf(untied)


# ---------------------------------------------------------------------------------------------------------
# Training


def test_one_pretraining_step_gives_finite_gradients_everywhere(gen):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.tiny(dropout=0.1, attention_dropout=0.1)).train()
    ids, types, attention_mask = padded_pairs(gen)
    masked = mlm_mask(ids, mask_token_id=MASK, vocab_size=99, special_token_ids=[CLS, SEP], pad_token_id=0,
                      generator=gen)  # fmt: skip
    masked.labels[0, 1] = ids[0, 1]  # at least one MLM target, whatever the draw
    nsp_labels = torch.tensor([0, 1, 0])
    inputs = dict(token_type_ids=types, attention_mask=attention_mask)
    parts = pretraining_loss(*model(masked.input_ids, **inputs), masked.labels, nsp_labels)
    torch.testing.assert_close(parts.total, parts.mlm + parts.nsp)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model.loss(masked.input_ids, masked.labels, nsp_labels, **inputs)
    loss.backward()
    assert torch.isfinite(loss)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
    before = model.nsp_head.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.nsp_head.weight)
