"""Fresh random inputs for graded checks.

Every run draws new inputs (a generator seeded from the operating system, never a fixed seed), so an answer
cannot be tuned to one example; a learner who sets ``torch.manual_seed`` does not change them either. The
grader draws each part's inputs under :func:`seeded`, from a seed fixed per (course secret, student,
assignment, part), so that a re-grade sees the same inputs and gives the same score.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["generator", "lengths", "randint", "randn", "seeded", "size"]

_GENERATOR = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)


def generator() -> torch.Generator:
    """The CPU generator all inputs come from (seeded from ``os.urandom`` at import)."""
    return _GENERATOR


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw every input from ``seed`` inside the block; the operating-system seeded stream resumes after it."""
    state = _GENERATOR.get_state()
    _GENERATOR.manual_seed(seed)
    try:
        yield
    finally:
        _GENERATOR.set_state(state)


def size(low: int, high: int) -> int:
    """A random integer in ``[low, high]`` (both included), e.g. a batch size or a length."""
    if low > high:
        raise ValueError(f"size needs low <= high, got low={low}, high={high}")
    return int(torch.randint(low, high + 1, (), generator=_GENERATOR))


def randn(*shape: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
    """Standard normal numbers of ``shape``."""
    return torch.randn(*shape, generator=_GENERATOR, dtype=torch.float64).to(device=device, dtype=dtype)


def randint(low: int, high: int, shape: tuple[int, ...], device: str | torch.device = "cpu") -> torch.Tensor:
    """``torch.long`` integers in ``[low, high)`` of ``shape``."""
    return torch.randint(low, high, shape, generator=_GENERATOR).to(device)


def lengths(batch: int, max_len: int, *, min_len: int = 0, full: bool = True) -> torch.Tensor:
    """``(batch,)`` random sequence lengths in ``[min_len, max_len]``; with ``full``, one of them is ``max_len``.

    Including a full-length row keeps the padded length ``T`` equal to ``max_len``, as in a real batch.
    """
    out = torch.randint(min_len, max_len + 1, (batch,), generator=_GENERATOR)
    if full and batch:
        out[int(torch.randint(batch, (), generator=_GENERATOR))] = max_len
    return out
