"""Beam search for a decoder-only model: batched, KV-cached, with a length penalty and end tokens.

Greedy decoding commits to the single most likely token at every step, and a likely word now can force an
unlikely continuation later. Beam search keeps the ``K`` best partial sequences (*beams*) instead: at each
step every beam is extended by every token, and the ``K`` extensions with the highest total log-probability
``Σ log p(t_n | t_<n)`` survive. A beam that produces the end token becomes a *finished hypothesis*, scored
with a length penalty (Hugging Face's convention, which this module follows step for step)::

    score = Σ log p / (generated length) ** length_penalty

Total log-probabilities only fall as a sequence grows, so without the division short sequences win;
``length_penalty > 0`` favours longer ones, ``< 0`` shorter ones, 0 compares raw sums.

Each step looks at the best ``2K`` extensions of a prompt's ``K`` beams (so that ``K`` remain even if up to
``K`` of them end). Those ending among the first ``K`` join the prompt's ``K`` best finished hypotheses; the
``K`` best that do not end continue. Search stops for a prompt when no running beam can still beat its worst
finished hypothesis (``early_stopping=False``: judged at the current length; ``"never"``: at the longest
length a positive penalty could reach; ``True``: as soon as ``K`` hypotheses are finished), and at
``max_new_tokens``, where every running beam counts as finished.

The rows of the batch are the ``B·K`` beams, prompt by prompt. When beam ``j`` continues in slot ``i``,
slot ``i`` takes over beam ``j``'s history: its tokens and, in every layer, its cached keys and values
(:meth:`tfcourse.cache.KVCache.reorder`), so each step still runs the model on one new token per beam.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from tfcourse._checks import check_positive_int
from tfcourse._decoding import check_context, check_left_padded, decoding_threads
from tfcourse.models._embedding import check_token_ids
from tfcourse.models.gpt import GPT

__all__ = ["BeamSearchOutput", "beam_search"]

_EARLY_STOPPING = (False, True, "never")
_UNREACHABLE = -1.0e9  # score of a beam that must never win (the placeholder beams of the first step)


class BeamSearchOutput(NamedTuple):
    """Result of :func:`beam_search`; rows are grouped by prompt, best hypothesis first."""

    tokens: torch.Tensor
    """``(B·R, T + N')`` the (left-padded) prompt, then the hypothesis, then ``pad_token_id``; ``R`` is
    ``num_return_sequences`` and ``N'`` the longest returned hypothesis."""
    valid: torch.Tensor
    """``(B·R, T + N')`` bool: False at prompt padding and after a hypothesis's end token."""
    scores: torch.Tensor
    """``(B·R,)`` float32 length-penalised scores, ``Σ log p / length ** length_penalty``."""
    lengths: torch.Tensor
    """``(B·R,)`` generated tokens of each hypothesis, its end token included."""


def _check_arguments(model, prompt_ids, max_new_tokens, num_beams, eos_token_id, early_stopping, num_return):
    check_token_ids("prompt_ids", prompt_ids, model.config.vocab_size)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("num_beams", num_beams)
    check_positive_int("num_return_sequences", num_return)
    if num_return > num_beams:
        raise ValueError(f"num_return_sequences={num_return} exceeds num_beams={num_beams}")
    if 2 * num_beams > model.config.vocab_size:
        raise ValueError(f"num_beams={num_beams} needs a vocabulary of at least {2 * num_beams} tokens")
    if eos_token_id is not None and not 0 <= eos_token_id < model.config.vocab_size:
        raise ValueError(f"eos_token_id={eos_token_id} is outside the vocabulary [0, {model.config.vocab_size})")
    if not any(early_stopping is choice or early_stopping == choice for choice in _EARLY_STOPPING):
        raise ValueError(f"early_stopping must be False, True or 'never', got {early_stopping!r}")


@torch.no_grad()
def beam_search(
    model: GPT,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    prompt_valid: torch.Tensor | None = None,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
) -> BeamSearchOutput:
    """Continue each prompt with the ``num_return_sequences`` best hypotheses of a beam search.

    Args:
        model: a :class:`~tfcourse.models.gpt.GPT`.
        prompt_ids: ``(B, T)`` prompts, left-padded when their lengths differ.
        max_new_tokens: N, the longest continuation.
        num_beams: K, beams kept per prompt (``num_beams=1`` is greedy decoding).
        length_penalty: exponent of the length in the score's denominator (see the module docstring).
        eos_token_id: the end token; a beam producing it is finished. None: every hypothesis runs N tokens.
        pad_token_id: filler after a hypothesis's end.
        prompt_valid: ``(B, T)`` bool, True at real prompt tokens (required with padding).
        early_stopping: ``False``, ``True`` or ``"never"``, as in Hugging Face ``generate``.
        num_return_sequences: R ≤ K hypotheses returned per prompt.

    Returns:
        A :class:`BeamSearchOutput`.
    """
    _check_arguments(model, prompt_ids, max_new_tokens, num_beams, eos_token_id, early_stopping, num_return_sequences)
    with decoding_threads(model):
        return _beam_search(
            model, prompt_ids, max_new_tokens, num_beams, float(length_penalty), eos_token_id, pad_token_id,
            prompt_valid, early_stopping, num_return_sequences,
        )  # fmt: skip


def _beam_search(
    model, prompt_ids, max_new_tokens, num_beams, penalty, eos_token_id, pad_token_id, prompt_valid,
    early_stopping, num_return_sequences,
) -> BeamSearchOutput:  # fmt: skip
    prompt_valid = check_left_padded(prompt_ids, prompt_valid)
    b, t = prompt_ids.shape
    k, n = num_beams, max_new_tokens
    total = check_context(t, n, model.config.max_len)
    vocab, device = model.config.vocab_size, prompt_ids.device

    # Running beams: row b·K + j is beam j of prompt b. Buffers are allocated once, at full length.
    tokens = torch.full((b * k, total), pad_token_id, dtype=torch.long, device=device)  # (B·K, T + N)
    tokens[:, :t] = prompt_ids.repeat_interleave(k, dim=0)
    spare_tokens = torch.empty_like(tokens)
    valid = torch.ones(b * k, total, dtype=torch.bool, device=device)  # generated tokens of running beams are real
    valid[:, :t] = prompt_valid.repeat_interleave(k, dim=0)
    caches = model.new_caches(b * k, total)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B·K, T + N) position of every column
    # All beams start as the prompt; only beam 0 may extend it at the first step, or K copies would.
    running = torch.zeros(b, k, device=device)  # (B, K) total log-probability of each beam
    running[:, 1:] = _UNREACHABLE
    # The K best finished hypotheses of each prompt, best first.
    done_tokens = torch.full((b, k, total), pad_token_id, dtype=torch.long, device=device)
    done_scores = torch.full((b, k), _UNREACHABLE, device=device)
    done_lengths = torch.zeros(b, k, dtype=torch.long, device=device)
    done = torch.zeros(b, k, dtype=torch.bool, device=device)  # slot holds a real hypothesis
    searching = torch.ones(b, dtype=torch.bool, device=device)  # may a running beam still improve on them?
    first_rows = torch.arange(b, device=device)[:, None] * k  # (B, 1) row of each prompt's beam 0
    among_best_k = torch.arange(2 * k, device=device) < k  # (2K,) only these extensions may finish

    logits = model(tokens[:, :t], valid=valid[:, :t], caches=caches)[:, -1]  # (B·K, V)
    for step in range(n):
        length, last = step + 1, step == n - 1
        log_probs = logits.float().log_softmax(dim=-1) + running.reshape(b * k, 1)  # (B·K, V)
        top, flat_index = log_probs.reshape(b, k * vocab).topk(2 * k, dim=-1)  # (B, 2K) best extensions
        source_beam, new_token = flat_index // vocab, flat_index % vocab  # (B, 2K) each
        if last:  # at max_new_tokens every extension ends
            ends = torch.ones_like(new_token, dtype=torch.bool)
        elif eos_token_id is None:
            ends = torch.zeros_like(new_token, dtype=torch.bool)
        else:
            ends = new_token == eos_token_id

        # 1. Extensions that end (among the best K) join the finished hypotheses if they rank among the K best.
        finishing = ends & among_best_k & searching[:, None]  # (B, 2K)
        if early_stopping is True:
            finishing &= ~done.all(dim=-1, keepdim=True)  # a full set is final
        if bool(finishing.any()):
            scores = (top / length**penalty).masked_fill(~finishing, float("-inf"))  # (B, 2K)
            candidates = tokens[(first_rows + source_beam).reshape(-1)].reshape(b, 2 * k, total)  # (B, 2K, T+N)
            candidates[:, :, t + step] = new_token
            pool_scores = torch.cat([done_scores, scores], dim=1)  # (B, 3K)
            done_scores, best = pool_scores.topk(k, dim=-1)  # (B, K)
            pool_tokens = torch.cat([done_tokens, candidates], dim=1)  # (B, 3K, T+N)
            done_tokens = pool_tokens.gather(1, best[:, :, None].expand(b, k, total))
            pool_lengths = torch.cat([done_lengths, torch.full_like(new_token, length)], dim=1)
            done_lengths = pool_lengths.gather(1, best)
            done = torch.cat([done, finishing], dim=1).gather(1, best)
        if last:
            break

        # 2. The K best extensions that do not end are the next step's beams.
        running, keep = top.masked_fill(ends, float("-inf")).topk(k, dim=-1)  # (B, K)
        rows = (first_rows + source_beam.gather(1, keep)).reshape(b * k)  # (B·K,) beam each slot continues
        torch.index_select(tokens, 0, rows, out=spare_tokens)
        tokens, spare_tokens = spare_tokens, tokens
        tokens[:, t + step] = new_token.gather(1, keep).reshape(b * k)
        for cache in caches:
            cache.reorder(rows)

        # 3. A prompt is settled once its best running beam cannot beat its worst finished hypothesis.
        best_length = n if (early_stopping == "never" and penalty > 0) else length
        best_possible = running[:, 0] / best_length**penalty  # (B,)
        searching &= ~done.all(dim=-1) | (best_possible > done_scores.min(dim=-1).values)
        if not bool(searching.any()) or (early_stopping is True and bool(done.all())):
            break
        column = slice(t + step, t + step + 1)
        logits = model(tokens[:, column], valid=valid[:, : column.stop], positions=positions[:, column], caches=caches)
        logits = logits[:, -1]  # (B·K, V)

    r = num_return_sequences
    lengths = done_lengths[:, :r].reshape(b * r)  # (B·R,)
    width = t + int(lengths.max())
    out_tokens = done_tokens[:, :r, :width].reshape(b * r, width)
    generated = torch.arange(width - t, device=device)[None, :] < lengths[:, None]  # (B·R, N')
    out_valid = torch.cat([prompt_valid.repeat_interleave(r, dim=0), generated], dim=1)
    return BeamSearchOutput(out_tokens, out_valid, done_scores[:, :r].reshape(b * r), lengths)
