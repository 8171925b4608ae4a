"""Token embedding shared by the models: look up, scale by √D, add positions."""

from __future__ import annotations

import math

import torch
from torch import nn

from tfcourse.positions import LearnedPositions, SinusoidalPositions

POSITION_KINDS = ("learned", "sinusoidal", "rotary")


def check_token_ids(name: str, ids: torch.Tensor, vocab_size: int | None = None) -> None:
    """Raise unless ``ids`` is a ``(B, T)`` integer tensor with every id in ``[0, vocab_size)``."""
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor of token ids, got {getattr(ids, 'dtype', type(ids))}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(ids.shape)}")
    if vocab_size is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{name} holds ids {int(ids.min())}..{int(ids.max())} outside the vocabulary [0, {vocab_size})"
        )


class TokenEmbedding(nn.Module):
    """``E[ids]·√D + P[positions]``.

    Multiplying by √D matters when the embedding is initialised (or tied to the output layer) with
    entries of variance about 1/D: the scaled token vectors then have entries of variance about 1, the
    same scale as the sinusoidal position table, so neither drowns the other (Vaswani et al. 2017, §3.4).
    """

    def __init__(self, vocab_size: int, d_model: int, max_len: int, positions: str, scale: bool = True) -> None:
        super().__init__()
        if positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {positions!r}")
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tokens = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.tokens.weight, std=d_model**-0.5)
        self.scale = math.sqrt(d_model) if scale else 1.0
        self.positions: nn.Module | None = {
            "learned": lambda: LearnedPositions(max_len, d_model),
            "sinusoidal": lambda: SinusoidalPositions(max_len, d_model),
            "rotary": lambda: None,  # rotary positions act inside attention instead
        }[positions]()

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``ids`` ``(B, T)`` and ``positions`` ``(T,)`` or ``(B, T)`` → ``(B, T, D)``."""
        check_token_ids("input_ids", ids, self.vocab_size)
        if positions.numel() and int(positions.max()) >= self.max_len:
            raise ValueError(
                f"position {int(positions.max())} is beyond the model's context of max_len={self.max_len} tokens"
            )
        x = self.tokens(ids) * self.scale  # (B, T, D)
        return x if self.positions is None else self.positions(x, positions=positions)
