"""Parity with Hugging Face on a randomly initialised GPT-2 copied into tfcourse's GPT (no download).

The same logits; the same token ids from greedy decoding and from beam search (several beam counts,
length penalties and early-stopping modes, with an end token that is really produced, on a batch of
left-padded prompts); and the same filtered distributions as Hugging Face's temperature, top-k and top-p
logits warpers, ties and ``min_tokens_to_keep`` included.
"""

from __future__ import annotations

import pytest
import torch

from tfcourse.generation import beam_search, filter_logits, generate
from tfcourse.models import GPT

transformers = pytest.importorskip("transformers")
logits_process = pytest.importorskip("transformers.generation.logits_process")

VOCAB, PROMPT, NEW = 48, 6, 8


@pytest.fixture(scope="module")
def models():
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        initializer_range=0.3,  # sharper than GPT-2's 0.02, so that decoding decisions are not near-ties
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(config).eval()
    return hf, GPT.from_hf(hf).eval()


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, VOCAB, (3, PROMPT), generator=g)
    valid = torch.arange(PROMPT)[None, :] >= torch.tensor([[0], [2], [4]])  # lengths 6, 4, 2, left-padded
    return ids.masked_fill(~valid, 0), valid


def test_config_and_logits_match(models, prompts):
    hf, ours = models
    assert ours.config.activation == "gelu_tanh" and not ours.config.scale_embeddings
    assert ours.lm_head.weight is ours.embed.tokens.weight
    ids, valid = prompts
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # what HF's generate derives from the mask
    with torch.no_grad():
        theirs = hf(ids, attention_mask=valid.long(), position_ids=positions).logits
        mine = ours(ids, valid=valid)
    torch.testing.assert_close(mine[valid], theirs[valid], atol=1e-5, rtol=1e-5)


def test_unsupported_gpt2_options_raise():
    config = transformers.GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    for option in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**config.to_dict(), option: True}))
        with pytest.raises(ValueError, match=option):
            GPT.from_hf(model)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**config.to_dict(), "activation_function": "silu"}))
    with pytest.raises(ValueError, match="activation_function"):
        GPT.from_hf(model)
    with pytest.raises(TypeError, match="GPT2Model"):
        GPT.from_hf(torch.nn.Linear(2, 2))


def test_greedy_ids_match(models, prompts):
    hf, ours = models
    ids, valid = prompts
    plain = generate(ours, ids, NEW, prompt_valid=valid)
    eos = int(plain.tokens[1, PROMPT + 3])  # produced by row 1: that row stops early
    theirs = hf.generate(
        ids, attention_mask=valid.long(), max_new_tokens=NEW, do_sample=False, eos_token_id=eos, pad_token_id=5
    )
    mine = generate(ours, ids, NEW, prompt_valid=valid, eos_token_id=eos, pad_token_id=5)
    assert (mine.tokens[1] == 5).any()  # the end token was hit
    assert torch.equal(mine.tokens, theirs)


@pytest.mark.parametrize(
    ("num_beams", "length_penalty", "early_stopping", "eos_pick"),
    [
        (2, 1.0, False, None),
        (4, 1.0, False, 0),
        (4, 2.0, True, 1),
        (3, -1.0, "never", 1),
        (4, 0.0, False, 2),
        (3, 0.5, "never", 0),
    ],
)
def test_beam_search_ids_match(models, prompts, num_beams, length_penalty, early_stopping, eos_pick):
    hf, ours = models
    ids, valid = prompts
    # The end token: one the plain 4-beam search produces early in row `eos_pick`, so beams really end.
    eos = None
    if eos_pick is not None:
        plain = beam_search(ours, ids, NEW, num_beams=4, prompt_valid=valid)
        eos = int(plain.tokens[eos_pick, PROMPT + 2])
    returned = min(3, num_beams)
    theirs = hf.generate(
        ids, attention_mask=valid.long(), max_new_tokens=NEW, do_sample=False, num_beams=num_beams,
        length_penalty=length_penalty, early_stopping=early_stopping, num_return_sequences=returned,
        eos_token_id=eos, pad_token_id=5, output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    mine = beam_search(
        ours, ids, NEW, num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
        num_return_sequences=returned, eos_token_id=eos, pad_token_id=5, prompt_valid=valid,
    )  # fmt: skip
    if eos is not None:
        assert bool((mine.lengths < NEW).any())  # some returned hypotheses ended on the end token
    assert torch.equal(mine.tokens, theirs.sequences)
    torch.testing.assert_close(mine.scores, theirs.sequences_scores, atol=1e-4, rtol=1e-4)


def hf_filtered(logits, temperature, top_k, top_p, min_keep):
    """Hugging Face's warpers in ``generate``'s order: temperature, top-k, top-p."""
    warpers = [logits_process.TemperatureLogitsWarper(temperature)]
    if top_k is not None:
        warpers.append(logits_process.TopKLogitsWarper(top_k, min_tokens_to_keep=min_keep))
    if top_p is not None:
        warpers.append(logits_process.TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep))
    scores = logits.clone()
    for warp in warpers:
        scores = warp(None, scores)
    return scores


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.8])
@pytest.mark.parametrize("top_k", [None, 1, 5, 60])
@pytest.mark.parametrize("top_p", [None, 0.3, 0.9])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_filtered_distributions_match_hf_warpers(temperature, top_k, top_p, min_keep):
    g = torch.Generator().manual_seed(hash((temperature, top_k, top_p, min_keep)) % 2**31)
    logits = torch.randn(32, 50, generator=g) * 2
    mine = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_tokens_to_keep=min_keep)
    theirs = hf_filtered(logits, temperature, top_k, top_p, min_keep)
    assert torch.equal(mine > torch.finfo(torch.float32).min, theirs > -float("inf"))  # the same tokens kept
    torch.testing.assert_close(mine.softmax(-1), theirs.softmax(-1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("top_k", [None, 4])
@pytest.mark.parametrize("top_p", [None, 0.3, 0.8])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_ties_at_the_edge_are_all_kept(top_k, top_p, min_keep):
    """Coarse logits tie often. Top-k keeps every token tied with the k-th, in both libraries. At the edge of a
    nucleus (or of min_tokens_to_keep) Hugging Face keeps whichever tied tokens its unstable sort puts last;
    tfcourse keeps all of them: its kept set is Hugging Face's plus the tokens tied with Hugging Face's least
    likely kept one, and the two distributions agree where there is no such tie."""
    g = torch.Generator().manual_seed(hash((top_k, top_p, min_keep)) % 2**31)
    logits = (torch.randn(64, 30, generator=g) * 4).round() / 2
    mine = filter_logits(logits, top_k=top_k, top_p=top_p, min_tokens_to_keep=min_keep)
    theirs = hf_filtered(logits, 1.0, top_k, top_p, min_keep)
    kept, hf_kept = mine > torch.finfo(torch.float32).min, theirs > -float("inf")
    hf_edge = logits.masked_fill(~hf_kept, float("inf")).min(dim=-1, keepdim=True).values  # (B, 1)
    assert torch.equal(kept, hf_kept | (logits == hf_edge))
    same = (kept == hf_kept).all(dim=-1)
    assert 0 < int(same.sum()) and (top_p is None or int((~same).sum()) > 0)  # both kinds of row occur
    torch.testing.assert_close(mine[same].softmax(-1), theirs[same].softmax(-1), atol=1e-6, rtol=1e-5)
