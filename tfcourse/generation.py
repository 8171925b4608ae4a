"""Autoregressive generation: greedy and sampled decoding, with or without a KV cache.

Generation is serial: each step turns the logits of the last position into one new token and feeds it
back. Without a cache every step re-runs the model over the whole sequence, so the cost of step ``n``
grows with ``n``. With a :class:`~tfcourse.cache.KVCache` per layer a step processes only the new token
and reads the earlier keys and values from the cache, with the same result.

Prompts of different lengths share a batch through *left* padding: every row's newest token is then in
the same column, and the model's ``valid`` mask and per-row positions make each row compute exactly
what it would alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from tfcourse._checks import check_nonnegative_int, check_rank
from tfcourse._decoding import check_context, check_left_padded
from tfcourse.beam_search import BeamSearchOutput, beam_search
from tfcourse.models._embedding import check_token_ids
from tfcourse.models.gpt import GPT
from tfcourse.models.seq2seq import Seq2Seq

__all__ = [
    "BeamSearchOutput",
    "GenerationOutput",
    "beam_search",
    "choose_next_token",
    "filter_logits",
    "generate",
    "generate_seq2seq",
    "top_k_filter",
    "top_p_filter",
]


class GenerationOutput(NamedTuple):
    """Result of :func:`generate` and :func:`generate_seq2seq`."""

    tokens: torch.Tensor
    """``(B, T + N)`` the (left-padded) prompt, or BOS for seq2seq, followed by the generated tokens."""
    valid: torch.Tensor
    """``(B, T + N)`` bool, False at prompt padding and after a row's end token."""
    logits: torch.Tensor | None
    """``(B, N, V)`` float32 logits each step chose from, if requested."""


def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row; the rest get the dtype's minimum (probability 0).

    Tokens tied with the ``k``-th largest logit are all kept. ``k`` is raised to ``min_tokens_to_keep`` and
    capped at the vocabulary size (Hugging Face's ``TopKLogitsWarper`` does the same).
    """
    if not 1 <= k:
        raise ValueError(f"top_k must be at least 1, got {k}")
    k = min(max(k, min_tokens_to_keep), logits.shape[-1])
    kth_largest = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, torch.finfo(logits.dtype).min)


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probability reaches ``p``; the rest get the dtype's minimum (probability 0).

    Walking up from the least likely token, a token is dropped while the probability of itself and every
    less likely token stays at most ``1 - p``, so what remains has probability at least ``p`` (Hugging
    Face's ``TopPLogitsWarper`` walks the same way). The ``min_tokens_to_keep`` most likely tokens always
    stay. Tokens tied with the least likely kept token are all kept, as in :func:`top_k_filter`, so the
    result never depends on how a sort orders equal values.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if not 1 <= min_tokens_to_keep:
        raise ValueError(f"min_tokens_to_keep must be at least 1, got {min_tokens_to_keep}")
    ascending = logits.sort(dim=-1).values  # (..., V) least likely first
    tail = ascending.float().softmax(dim=-1).cumsum(dim=-1)  # probability of this token and all less likely
    drop = tail <= 1 - p  # True on a prefix of the ascending order
    drop[..., -min_tokens_to_keep:] = False  # the most likely tokens always stay
    least_kept = ascending.gather(-1, (~drop).int().argmax(dim=-1, keepdim=True))  # (..., 1)
    return logits.masked_fill(logits < least_kept, torch.finfo(logits.dtype).min)


def filter_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_tokens_to_keep: int = 1,
) -> torch.Tensor:
    """The float32 logits sampling draws from: divided by ``temperature``, then top-k, then top-p filtered.

    Filtered tokens hold the dtype's minimum, so ``softmax`` gives them probability exactly 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive when sampling, got {temperature}")
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k, min_tokens_to_keep)
    if top_p is not None:
        logits = top_p_filter(logits, top_p, min_tokens_to_keep)
    return logits


def choose_next_token(
    logits: torch.Tensor,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_tokens_to_keep: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row from ``(B, V)`` logits: the argmax, or a sample after temperature,
    top-k and top-p filtering (:func:`filter_logits`). Returns ``(B,)`` ids."""
    check_rank("logits", logits, 2)
    if not do_sample:
        return logits.argmax(dim=-1)
    filtered = filter_logits(
        logits, temperature=temperature, top_k=top_k, top_p=top_p, min_tokens_to_keep=min_tokens_to_keep
    )
    probs = filtered.softmax(dim=-1)
    sample_device = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(sample_device), 1, generator=generator).squeeze(-1).to(logits.device)


def _decode_loop(
    next_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    valid: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    return_logits: bool,
    choose: Callable[[torch.Tensor], torch.Tensor],
) -> GenerationOutput:
    """Append up to ``max_new_tokens`` tokens; ``next_logits(tokens, valid)`` gives the ``(B, V)`` logits."""
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    step_logits = []
    for _ in range(max_new_tokens):
        logits = next_logits(tokens, valid)  # (B, V)
        if return_logits:
            step_logits.append(logits.float())
        new = torch.where(finished, pad_token_id, choose(logits))  # (B,)
        tokens = torch.cat([tokens, new[:, None]], dim=1)
        valid = torch.cat([valid, ~finished[:, None]], dim=1)
        if eos_token_id is not None:
            finished |= new == eos_token_id
            if bool(finished.all()):
                break
    logits_out = torch.stack(step_logits, dim=1) if return_logits and step_logits else None
    return GenerationOutput(tokens, valid, logits_out)


@torch.no_grad()
def generate(
    model: GPT,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    prompt_valid: torch.Tensor | None = None,
    use_cache: bool = True,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    return_logits: bool = False,
    **sampling,
) -> GenerationOutput:
    """Continue each prompt with a decoder-only model.

    Args:
        model: a :class:`~tfcourse.models.gpt.GPT`.
        prompt_ids: ``(B, T)`` prompts, left-padded when their lengths differ.
        max_new_tokens: N, tokens to add (fewer if every row has produced ``eos_token_id``).
        prompt_valid: ``(B, T)`` bool, True at real prompt tokens (required with padding).
        use_cache: decode with one KV cache per layer (same result, much faster).
        eos_token_id: a row stops after producing it; later positions hold ``pad_token_id``.
        pad_token_id: filler after a row has finished.
        return_logits: also return each step's logits.
        **sampling: ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_tokens_to_keep``, ``generator`` for
            :func:`choose_next_token` (greedy by default).
    """
    check_token_ids("prompt_ids", prompt_ids, model.config.vocab_size)
    check_nonnegative_int("max_new_tokens", max_new_tokens)
    valid = check_left_padded(prompt_ids, prompt_valid)
    total = check_context(prompt_ids.shape[1], max_new_tokens, model.config.max_len)
    caches = model.new_caches(prompt_ids.shape[0], total) if use_cache else None

    def next_logits(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if caches is None:
            return model(tokens, valid=valid)[:, -1]
        new = tokens[:, caches[0].length :]  # the whole prompt first, then one token per step
        return model(new, valid=valid, caches=caches)[:, -1]

    return _decode_loop(
        next_logits, prompt_ids, valid, max_new_tokens, eos_token_id, pad_token_id, return_logits,
        lambda logits: choose_next_token(logits, **sampling),
    )  # fmt: skip


@torch.no_grad()
def generate_seq2seq(
    model: Seq2Seq,
    src_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    src_valid: torch.Tensor | None = None,
    use_cache: bool = True,
    return_logits: bool = False,
    **sampling,
) -> GenerationOutput:
    """Translate each source sequence with an encoder–decoder model, starting from BOS.

    The encoder runs once. With ``use_cache`` each decoder layer keeps a self-attention cache and a
    cross-attention cache holding the projected encoder output, so a step costs one token's work.
    Rows stop at the config's EOS. ``**sampling`` as in :func:`generate`.
    """
    c = model.config
    check_nonnegative_int("max_new_tokens", max_new_tokens)
    if 1 + max_new_tokens > c.max_len:
        raise ValueError(f"max_new_tokens={max_new_tokens} exceeds the model's context of max_len={c.max_len}")
    src_valid = model.source_valid(src_ids, src_valid)
    memory = model.encode(src_ids, src_valid)
    batch = src_ids.shape[0]
    caches = model.new_caches(batch, src_ids.shape[1], 1 + max_new_tokens) if use_cache else (None, None)

    def next_logits(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if caches[0] is None:
            return model.decode(tokens, memory, src_valid)[:, -1]
        return model.decode(tokens[:, -1:], memory, src_valid, caches=caches[0], cross_caches=caches[1])[:, -1]

    start = torch.full((batch, 1), c.bos_id, dtype=torch.long, device=src_ids.device)
    return _decode_loop(
        next_logits, start, torch.ones_like(start, dtype=torch.bool), max_new_tokens, c.eos_id, c.pad_id,
        return_logits, lambda logits: choose_next_token(logits, **sampling),
    )  # fmt: skip
