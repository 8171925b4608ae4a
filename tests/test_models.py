"""GPT and the encoder–decoder: cached decoding, teacher forcing, padding, and clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tfcourse.cache import KVCache
from tfcourse.generation import generate, generate_seq2seq
from tfcourse.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig, shift_targets


def tiny_gpt(device="cpu", **overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.tiny(**overrides)).to(device).eval()


def tiny_seq2seq(device="cpu", **overrides) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(Seq2SeqConfig.tiny(**overrides)).to(device).eval()


def left_padded_prompts(gen, lengths, vocab=64, device="cpu"):
    width = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), width), generator=gen)
    valid = torch.arange(width)[None, :] >= (width - torch.tensor(lengths))[:, None]  # (B, T): pads on the left
    return ids.masked_fill(~valid, 0).to(device), valid.to(device)


# ---------------------------------------------------------------------------------------------------------
# Cached decoding equals full recomputation


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_gpt_cached_decoding_equals_recomputation_for_a_padded_batch(gen, device, positions):
    model = tiny_gpt(device, positions=positions)
    ids, valid = left_padded_prompts(gen, [7, 3, 5], device=device)
    cached = generate(model, ids, 12, prompt_valid=valid, return_logits=True)
    full = generate(model, ids, 12, prompt_valid=valid, use_cache=False, return_logits=True)
    torch.testing.assert_close(cached.logits, full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(cached.tokens, full.tokens)
    # Each padded row computes exactly what its prompt computes alone.
    for row, length in enumerate([7, 3, 5]):
        alone = generate(model, ids[row : row + 1, -length:], 12, return_logits=True)
        torch.testing.assert_close(cached.logits[row : row + 1], alone.logits, atol=1e-5, rtol=1e-5)


def test_gpt_single_prompt_cached_equals_recomputation(gen):
    model = tiny_gpt()
    ids = torch.randint(0, 64, (1, 9), generator=gen)
    cached = generate(model, ids, 20, return_logits=True)
    full = generate(model, ids, 20, use_cache=False, return_logits=True)
    torch.testing.assert_close(cached.logits, full.logits, atol=1e-5, rtol=1e-5)


def test_seq2seq_cached_decoding_equals_recomputation(gen, device):
    model = tiny_seq2seq(device)
    src = torch.randint(3, 32, (3, 8), generator=gen)
    src[1, 5:], src[2, 2:] = 0, 0  # sources of lengths 8, 5 and 2
    src = src.to(device)
    cached = generate_seq2seq(model, src, 10, return_logits=True)
    full = generate_seq2seq(model, src, 10, use_cache=False, return_logits=True)
    torch.testing.assert_close(cached.logits, full.logits, atol=1e-5, rtol=1e-5)
    alone = generate_seq2seq(model, src[2:, :2], 10, return_logits=True)
    torch.testing.assert_close(cached.logits[2:], alone.logits, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Teacher forcing and causality


def test_teacher_forcing_equals_step_by_step_decoding(gen):
    model = tiny_seq2seq()
    src = torch.randint(3, 32, (2, 6), generator=gen)
    targets = torch.randint(3, 32, (2, 5), generator=gen)
    targets[:, -1] = model.config.eos_id
    parallel = model.loss(src, targets, reduction="none")  # (B, T), one parallel pass
    tgt_in, tgt_out = shift_targets(targets, model.config.bos_id, model.config.pad_id)
    memory, src_valid = model.encode(src), src != 0
    caches, cross = model.new_caches(2, src.shape[1])
    serial = []
    for t in range(targets.shape[1]):  # feed the true previous token, one step at a time
        logits = model.decode(tgt_in[:, t : t + 1], memory, src_valid, caches=caches, cross_caches=cross)
        serial.append(F.cross_entropy(logits[:, 0], tgt_out[:, t], reduction="none"))
    torch.testing.assert_close(parallel, torch.stack(serial, dim=1), atol=1e-5, rtol=1e-5)


def test_seq2seq_padded_targets_do_not_affect_real_positions(gen):
    # Targets are right-padded, so the causal mask already hides every pad from every real position.
    model = tiny_seq2seq()
    src = torch.randint(3, 32, (1, 6), generator=gen)
    targets = torch.tensor([[5, 6, 2, 0, 0]])
    garbage = torch.tensor([[5, 6, 2, 9, 9]])
    tgt_in, _ = shift_targets(targets, 1, 0)
    garbage_in, _ = shift_targets(garbage, 1, 0)
    torch.testing.assert_close(model(src, tgt_in)[:, :3], model(src, garbage_in)[:, :3])
    losses = model.loss(src, targets, reduction="none")
    assert losses[0, 3:].eq(0).all() and losses[0, :3].gt(0).all()  # pads are ignored by the loss


def test_shift_targets_literal():
    tgt_in, tgt_out = shift_targets(torch.tensor([[5, 6, 2, 0], [7, 2, 0, 0]]), bos_id=1, pad_id=0)
    assert tgt_in.tolist() == [[1, 5, 6, 2], [1, 7, 2, 0]]
    assert tgt_out.tolist() == [[5, 6, 2, -100], [7, 2, -100, -100]]


def test_gpt_future_tokens_never_change_earlier_logits(gen):
    model = tiny_gpt()
    ids = torch.randint(0, 64, (2, 10), generator=gen)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 64
    torch.testing.assert_close(model(changed)[:, :6], model(ids)[:, :6])
    assert not torch.allclose(model(changed)[:, 6:], model(ids)[:, 6:])


def test_gpt_loss_ignores_padding(gen):
    model = tiny_gpt()
    ids = torch.randint(1, 64, (1, 8), generator=gen)
    valid = torch.ones(1, 8, dtype=torch.bool)
    valid[:, 6:] = False
    garbage = ids.clone()
    garbage[:, 6:] = 5
    assert torch.allclose(model.loss(ids, valid), model.loss(garbage, valid))
    assert torch.allclose(model.loss(ids, valid), model.loss(ids[:, :6]))


def test_weights_are_tied_and_embeddings_scaled():
    model = tiny_gpt()
    assert model.lm_head.weight is model.embed.tokens.weight
    scaled = model.embed.tokens.weight * model.embed.scale
    assert 0.8 < scaled.var().item() < 1.2  # √D restores unit variance (TOPICS §5)
    assert tiny_gpt(tie_weights=False).lm_head.weight is not tiny_gpt().embed.tokens.weight


# ---------------------------------------------------------------------------------------------------------
# Sampling and stopping


def test_sampling_is_reproducible_and_stops_at_eos(gen):
    model = tiny_gpt()
    ids = torch.randint(0, 64, (4, 3), generator=gen)

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return generate(model, ids, 30, do_sample=True, temperature=1.5, top_k=20, generator=g).tokens

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))
    greedy = generate(model, ids, 30).tokens
    eos = int(greedy[0, 5])  # a token greedy decoding really produces for row 0
    stopped = generate(model, ids, 30, eos_token_id=eos, pad_token_id=0)
    row = stopped.tokens[0, 3:].tolist()
    first = row.index(eos)
    assert all(t == 0 for t in row[first + 1 :])
    assert not stopped.valid[0, 3 + first + 1 :].any()


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_generation_errors_are_named(gen):
    model = tiny_gpt()
    with pytest.raises(ValueError, match="exceeds the model's context of max_len=256"):
        generate(model, torch.zeros(1, 250, dtype=torch.long), 10)
    with pytest.raises(TypeError, match="prompt_ids must be an integer tensor"):
        generate(model, torch.zeros(1, 5), 3)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 64\)"):
        generate(model, torch.full((1, 5), 64), 3)
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, torch.ones(1, 4, dtype=torch.long), 3, prompt_valid=torch.tensor([[True, True, True, False]]))
    with pytest.raises(ValueError, match="beyond the model's context"):
        model(torch.zeros(1, 300, dtype=torch.long))
    with pytest.raises(ValueError, match=r"keys of shape \(1, 4, 5, 16\) do not fit a cache"):
        model(torch.zeros(1, 5, dtype=torch.long), caches=[KVCache(1, 2, 16, 32) for _ in range(2)])
    with pytest.raises(TypeError, match="have dtype torch.float32 but the cache holds torch.float64"):
        model(torch.zeros(1, 5, dtype=torch.long), caches=[KVCache(1, 4, 16, 16, dtype=torch.float64)] * 2)
    with pytest.raises(ValueError, match="num_heads=3 does not divide d_model=64"):
        GPTConfig.tiny(num_heads=3)
    seq2seq = tiny_seq2seq()
    with pytest.raises(ValueError, match="src_valid must be a bool tensor"):
        seq2seq.encode(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4))
