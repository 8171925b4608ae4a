"""Checks and settings shared by the decoding functions (:mod:`tfcourse.generation`, :mod:`tfcourse.beam_search`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def check_left_padded(prompt_ids: torch.Tensor, prompt_valid: torch.Tensor | None) -> torch.Tensor:
    """Return ``prompt_valid`` (all True when None) after checking that every row is left-padded."""
    if prompt_valid is None:
        return torch.ones_like(prompt_ids, dtype=torch.bool)
    if prompt_valid.dtype != torch.bool or prompt_valid.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_valid must be a bool tensor shaped like prompt_ids {tuple(prompt_ids.shape)}, "
            f"got {prompt_valid.dtype} {tuple(prompt_valid.shape)}"
        )
    if bool((prompt_valid[:, 1:].long() < prompt_valid[:, :-1].long()).any()):
        raise ValueError("prompts must be left-padded: in each row of prompt_valid, False may only precede True")
    if not bool(prompt_valid[:, -1].all()):
        raise ValueError("every prompt needs at least one real token (prompt_valid has an all-False row)")
    return prompt_valid


def check_context(prompt_len: int, max_new_tokens: int, max_len: int) -> int:
    """Return ``prompt_len + max_new_tokens`` after checking that it fits the model's context."""
    total = prompt_len + max_new_tokens
    if total > max_len:
        raise ValueError(
            f"a prompt of {prompt_len} tokens plus max_new_tokens={max_new_tokens} exceeds the model's "
            f"context of max_len={max_len} tokens"
        )
    return total


# Below this many parameters a decoding step is a few hundred tiny kernels: a second thread only adds
# hand-over latency (and on a busy machine waits for a core), so CPU decoding then runs on one thread.
SINGLE_THREAD_BELOW = 5_000_000


@contextmanager
def decoding_threads(model: nn.Module) -> Iterator[int]:
    """Run a CPU decoding loop on one thread when ``model`` is small, restoring the thread count after.

    Yields the number of threads in use. GPU models and models of at least ``SINGLE_THREAD_BELOW``
    parameters leave the setting alone.
    """
    before = torch.get_num_threads()
    weight = next(model.parameters())
    small = weight.device.type == "cpu" and sum(p.numel() for p in model.parameters()) < SINGLE_THREAD_BELOW
    if not small or before == 1:
        yield before
        return
    torch.set_num_threads(1)
    try:
        yield 1
    finally:
        torch.set_num_threads(before)
