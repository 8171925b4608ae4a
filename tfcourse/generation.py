"""Autoregressive generation: greedy and sampled decoding, with or without a KV cache, and beam search.

Generation is serial: each step turns the logits of the last position into one new token and feeds it
back. Without a cache every step re-runs the model over the whole sequence, so the cost of step ``n``
grows with ``n``. With a :class:`~tfcourse.cache.KVCache` per layer a step processes only the new token
and reads the earlier keys and values from the cache, with the same result.

Prompts of different lengths share a batch through *left* padding: every row's newest token is then in
the same column, and the model's ``valid`` mask and per-row positions make each row compute exactly
what it would alone. :func:`~tfcourse.beam_search.beam_search` (re-exported here) keeps the ``K`` best
sequences instead of one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from tfcourse._checks import check_nonnegative_int, check_rank
from tfcourse._decoding import SINGLE_THREAD_BELOW, check_context, check_left_padded, decoding_threads
from tfcourse.models._embedding import check_token_ids
from tfcourse.models.gpt import GPT
from tfcourse.models.seq2seq import Seq2Seq

__all__ = [
    "SINGLE_THREAD_BELOW",
    "GenerationOutput",
    "choose_next_token",
    "decoding_threads",
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


def _fill_loop(
    next_logits: Callable[[int], torch.Tensor],
    tokens: torch.Tensor,
    valid: torch.Tensor,
    start: int,
    eos_token_id: int | None,
    pad_token_id: int,
    return_logits: bool,
    choose: Callable[[torch.Tensor], torch.Tensor],
) -> GenerationOutput:
    """Fill columns ``start, start + 1, …`` of the preallocated ``(B, start + N)`` buffers in place.

    ``next_logits(length)`` gives the ``(B, V)`` logits of the token after the first ``length`` columns.
    ``valid`` arrives True in the columns to fill; a row's columns after its end token become False.
    """
    b, total = tokens.shape
    finished = torch.zeros(b, dtype=torch.bool, device=tokens.device)
    collected = None
    length = start
    for length in range(start, total):
        logits = next_logits(length)  # (B, V)
        if return_logits:
            if collected is None:
                collected = torch.empty(b, total - start, logits.shape[-1], device=logits.device)
            collected[:, length - start] = logits
        new = choose(logits)  # (B,)
        if eos_token_id is None:
            tokens[:, length] = new
            continue
        tokens[:, length] = new.masked_fill_(finished, pad_token_id)
        valid[:, length] = ~finished
        finished |= new == eos_token_id
        if bool(finished.all()):
            break
    end = length + 1 if total > start else start  # columns filled
    logits_out = None if collected is None else collected[:, : end - start]
    return GenerationOutput(tokens[:, :end], valid[:, :end], logits_out)


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
    """Append up to ``max_new_tokens`` tokens; ``next_logits(tokens, valid)`` gives the ``(B, V)`` logits of
    the token after the prefix it is shown (views of preallocated buffers). Used by T5's ``generate``."""
    start = tokens.shape[1]
    buffer, valid_buffer = _buffers(tokens, valid, start + max_new_tokens, pad_token_id)
    return _fill_loop(
        lambda length: next_logits(buffer[:, :length], valid_buffer[:, :length]),
        buffer, valid_buffer, start, eos_token_id, pad_token_id, return_logits, choose,
    )  # fmt: skip


def _buffers(prompt_ids: torch.Tensor, prompt_valid: torch.Tensor, total: int, pad_token_id: int):
    """``(B, total)`` token and validity buffers holding the prompt; the rest is padding, marked valid."""
    b, t = prompt_ids.shape
    tokens = torch.full((b, total), pad_token_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    tokens[:, :t] = prompt_ids
    valid = torch.ones(b, total, dtype=torch.bool, device=prompt_ids.device)
    valid[:, :t] = prompt_valid
    return tokens, valid


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

    The output buffers are allocated once; with the cache each step runs the model on one token per
    row, reading its position from a table made up front and its attention mask as a slice of the
    validity buffer, so the cost of a step stays flat as the sequence grows. Small models decode on one
    CPU thread (:func:`decoding_threads`).

    Args:
        model: a :class:`~tfcourse.models.gpt.GPT`.
        prompt_ids: ``(B, T)`` prompts, left-padded when their lengths differ.
        max_new_tokens: N, tokens to add (fewer if every row has produced ``eos_token_id``).
        prompt_valid: ``(B, T)`` bool, True at real prompt tokens (required with padding).
        use_cache: decode with one KV cache per layer (same result, much faster).
        eos_token_id: a row stops after producing it; later positions hold ``pad_token_id``.
        pad_token_id: filler after a row has finished.
        return_logits: also return each step's logits. After a row's end token its logits are those
            its padding produces, which nothing uses.
        **sampling: ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_tokens_to_keep``, ``generator``
            for :func:`choose_next_token` (greedy by default).
    """
    check_token_ids("prompt_ids", prompt_ids, model.config.vocab_size)
    check_nonnegative_int("max_new_tokens", max_new_tokens)
    prompt_valid = check_left_padded(prompt_ids, prompt_valid)
    t = prompt_ids.shape[1]
    total = check_context(t, max_new_tokens, model.config.max_len)
    tokens, valid = _buffers(prompt_ids, prompt_valid, total, pad_token_id)
    caches = model.new_caches(prompt_ids.shape[0], total) if use_cache else None
    # Position of every column: real prompt tokens count 0, 1, …; generated ones continue from there.
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, T + N)

    def next_logits(length: int) -> torch.Tensor:
        if caches is None:
            return model(tokens[:, :length], valid=valid[:, :length])[:, -1]
        if length == t:  # the whole prompt first
            return model(tokens[:, :t], valid=valid[:, :t], caches=caches)[:, -1]
        step = slice(length - 1, length)
        return model(tokens[:, step], valid=valid[:, :length], positions=positions[:, step], caches=caches)[:, -1]

    with decoding_threads(model):
        return _fill_loop(
            next_logits, tokens, valid, t, eos_token_id, pad_token_id, return_logits,
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
    with decoding_threads(model):
        src_valid = model.source_valid(src_ids, src_valid)
        memory = model.encode(src_ids, src_valid)
        batch = src_ids.shape[0]
        caches = model.new_caches(batch, src_ids.shape[1], 1 + max_new_tokens) if use_cache else (None, None)
        start = torch.full((batch, 1), c.bos_id, dtype=torch.long, device=src_ids.device)
        tokens, valid = _buffers(start, torch.ones_like(start, dtype=torch.bool), 1 + max_new_tokens, c.pad_id)

        def next_logits(length: int) -> torch.Tensor:
            if caches[0] is None:
                return model.decode(tokens[:, :length], memory, src_valid)[:, -1]
            new = tokens[:, length - 1 : length]
            return model.decode(new, memory, src_valid, caches=caches[0], cross_caches=caches[1])[:, -1]

        return _fill_loop(
            next_logits, tokens, valid, 1, c.eos_id, c.pad_id, return_logits,
            lambda logits: choose_next_token(logits, **sampling),
        )  # fmt: skip


def __getattr__(name: str):
    # Beam search lives in tfcourse.beam_search (documented there) and is re-exported here lazily: importing it
    # eagerly would close an import cycle (beam_search -> models -> t5 -> generation -> beam_search).
    if name in ("beam_search", "BeamSearchOutput"):
        from tfcourse import beam_search as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
