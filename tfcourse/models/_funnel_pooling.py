"""Funnel-Transformer's pooling and up-sampling as pure functions (Dai et al. 2020, §2.2 and §2.3).

Re-exported by :mod:`tfcourse.models.funnel`; import them from there.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tfcourse._checks import check_bool, check_floating, check_positive_int, check_rank
from tfcourse.models._funnel_attention import TokenInfo

__all__ = ["POOLING_MODES", "pool_info", "pool_sequence", "pooled_length", "upsample"]

POOLING_MODES = ("mean", "max")


def min_poolable(separate_cls: bool) -> int:
    """Shortest length that pooling can still shorten: [CLS] plus two tokens, or two tokens."""
    return 3 if separate_cls else 2


def pooled_length(seq_len: int, stride: int = 2, *, separate_cls: bool = True, truncate_seq: bool = True) -> int:
    """Length after one :func:`pool_sequence` step on ``seq_len`` positions (arguments as there)."""
    check_positive_int("seq_len", seq_len)
    check_positive_int("stride", stride)
    if not separate_cls:
        return math.ceil(seq_len / stride)
    rest = seq_len - 1 - (1 if truncate_seq else 0)  # tokens after [CLS] that take part in pooling
    return 1 + math.ceil(max(rest, 0) / stride)


def _split_cls(x: torch.Tensor, separate_cls: bool, truncate_seq: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Along dim 1: ``([CLS] or None, the positions that pool)``; truncation drops the last token."""
    if not separate_cls:
        return None, x
    return x[:, :1], (x[:, 1:-1] if truncate_seq else x[:, 1:])


def _window_starts(ids: torch.Tensor, stride: int, separate_cls: bool, truncate_seq: bool) -> torch.Tensor:
    """The first entry of each pooling window of ``ids`` ``(B, T)``: how positions and segment ids pool."""
    cls, rest = _split_cls(ids, separate_cls, truncate_seq)
    starts = rest[:, ::stride]  # (B, ceil(rest / stride))
    return starts if cls is None else torch.cat((cls, starts), dim=1)


def pool_sequence(
    x: torch.Tensor,
    valid: torch.Tensor,
    stride: int = 2,
    mode: str = "mean",
    *,
    separate_cls: bool = True,
    truncate_seq: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pooling step of Funnel-Transformer (Dai et al. 2020, §2.2), on hidden states and padding.

    Consecutive windows of ``stride`` positions become one position; a last, shorter window pools the
    positions it has. With ``separate_cls`` position 0 ([CLS]) is kept as it is, and ``truncate_seq``
    then drops the last token first, so that for an even length the rest pairs up exactly::

        x = [c, a, b, d, e]      separate_cls=False:               [(c+a)/2, (b+d)/2, e]
                                 separate_cls, truncate_seq=False: [c, (a+b)/2, (d+e)/2]
                                 separate_cls, truncate_seq=True:  [c, (a+b)/2, d]

    A pooled position is real only if every position in its window is, so padding never leaks into a
    real position (and a real token pooled with padding is dropped).

    Args:
        x: ``(B, T, D)`` hidden states.
        valid: ``(B, T)`` bool, True at real tokens.
        stride: window length (2 in the paper).
        mode: ``"mean"`` or ``"max"`` over each window.
        separate_cls: keep position 0 out of pooling.
        truncate_seq: with ``separate_cls``, drop the last token before pooling.

    Returns:
        ``(pooled, pooled_valid)``: ``(B, T', D)`` in ``x``'s dtype and ``(B, T')`` bool, with ``T'`` from
        :func:`pooled_length`.
    """
    check_floating("x", x)
    check_rank("x", x, 3)
    check_bool("valid", valid)
    if tuple(valid.shape) != tuple(x.shape[:2]):
        raise ValueError(f"valid must have shape (B, T) = {tuple(x.shape[:2])}, got {tuple(valid.shape)}")
    check_positive_int("stride", stride)
    if mode not in POOLING_MODES:
        raise ValueError(f"mode must be one of {POOLING_MODES}, got {mode!r}")
    if x.shape[1] < min_poolable(separate_cls):
        raise ValueError(
            f"x has length {x.shape[1]} (shape {tuple(x.shape)}); pooling needs at least "
            f"{min_poolable(separate_cls)} positions with separate_cls={separate_cls}"
        )
    cls, rest = _split_cls(x, separate_cls, truncate_seq)
    cls_valid, rest_valid = _split_cls(valid, separate_cls, truncate_seq)
    b, t, d = rest.shape
    n = math.ceil(t / stride)
    pad = n * stride - t  # empty slots that complete the last window
    windows = nn.functional.pad(rest, (0, 0, 0, pad)).view(b, n, stride, d)  # (B, n, stride, D)
    present = (torch.arange(n * stride, device=x.device) < t).view(n, stride, 1)  # (n, stride, 1)
    if mode == "mean":
        sums = windows.float().sum(dim=2)  # (B, n, D), accumulated in float32
        pooled = (sums / present.sum(dim=1)).to(x.dtype)  # divide by the slots each window really has
    else:
        pooled = windows.masked_fill(~present, torch.finfo(x.dtype).min).amax(dim=2)  # (B, n, D)
    real = nn.functional.pad(rest_valid, (0, pad), value=True).view(b, n, stride)  # (B, n, stride)
    pooled_valid = real.all(dim=2)  # (B, n)
    if cls is not None:
        pooled, pooled_valid = torch.cat((cls, pooled), dim=1), torch.cat((cls_valid, pooled_valid), dim=1)
    return pooled, pooled_valid


def upsample(x: torch.Tensor, stride: int, target_len: int, *, separate_cls: bool = True) -> torch.Tensor:
    """Undo ``k`` pooling steps for the decoder (§2.3): repeat each position ``stride = 2^k`` times.

    With ``separate_cls`` [CLS] maps back to position 0 only. Tokens that ``truncate_seq`` dropped have
    no pooled counterpart; they get zeros (and keep the decoder's residual from the first block).

    Args:
        x: ``(B, T', D)`` output of the last block.
        stride: total pooling factor.
        target_len: T, the original length.
        separate_cls: whether pooling kept [CLS] apart.

    Returns:
        ``(B, T, D)``.
    """
    check_rank("x", x, 3)
    check_positive_int("stride", stride)
    check_positive_int("target_len", target_len)
    cls, rest = (x[:, :1], x[:, 1:]) if separate_cls else (None, x)
    rest_len = target_len - (1 if separate_cls else 0)
    rest = rest.repeat_interleave(stride, dim=1)[:, :rest_len]  # (B, ≤ rest_len, D)
    rest = nn.functional.pad(rest, (0, 0, 0, rest_len - rest.shape[1]))  # zeros for truncated tokens
    return rest if cls is None else torch.cat((cls, rest), dim=1)  # (B, T, D)


def pool_info(info: TokenInfo, stride: int, separate_cls: bool, truncate_seq: bool) -> TokenInfo:
    """Pool positions and segment ids (first of each window); the validity comes from :func:`pool_sequence`."""
    types = _window_starts(info.token_types, stride, separate_cls, truncate_seq)
    positions = _window_starts(info.positions[None], stride, separate_cls, truncate_seq)[0]
    return TokenInfo(info.valid, types, positions)
