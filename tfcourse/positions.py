"""Position information for attention, which on its own is blind to order.

Absolute schemes add a vector per position to the token embeddings: the fixed sinusoidal table of
Vaswani et al. (2017, §3.5) or learned embeddings (BERT, GPT). Relative schemes change the attention
scores instead: Shaw et al. (2018) learn a bias or vector per clipped offset, T5 (Raffel et al. 2020)
learns one bias per head for each of a few log-spaced offset buckets, Transformer-XL (Dai et al. 2019)
uses sinusoidal relative embeddings with the :func:`rel_shift` trick, and RoPE (Su et al. 2021) rotates
queries and keys so that their dot product depends only on the offset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse._checks import (
    check_floating,
    check_min_rank,
    check_nonnegative_int,
    check_positive_int,
    check_rank,
)

__all__ = [
    "LearnedPositions",
    "RotaryEmbedding",
    "ShawRelativeBias",
    "SinusoidalPositions",
    "T5RelativeBias",
    "apply_rotary",
    "half_to_interleaved",
    "interleaved_to_half",
    "rel_shift",
    "relative_positions",
    "rotary_angles",
    "shaw_key_logits",
    "sinusoidal_positions",
    "t5_relative_position_bucket",
]

_PAIRINGS = ("interleaved", "half")


# --------------------------------------------------------------------------------------------------------------
# Absolute positions


def sinusoidal_positions(
    num_positions: int,
    d_model: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""The fixed sinusoidal table of Vaswani et al. (2017, §3.5).

    .. math:: P_{pos, 2i} = \sin(pos / base^{2i/D}), \qquad P_{pos, 2i+1} = \cos(pos / base^{2i/D})

    Args:
        num_positions: T, rows of the table.
        d_model: D, an even width.
        base: the wavelength base (10000 in the paper).

    Returns:
        ``(T, D)`` table.
    """
    check_nonnegative_int("num_positions", num_positions)
    check_positive_int("d_model", d_model)
    if d_model % 2:
        raise ValueError(f"d_model must be even for sin/cos pairs, got {d_model}")
    pos = torch.arange(num_positions, dtype=torch.float64, device=device)  # (T,)
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64, device=device) / d_model)  # (D/2,)
    angles = pos[:, None] * inv_freq[None, :]  # (T, D/2)
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (T, D/2, 2) -> (T, D)
    return table.to(dtype)


def _position_rows(x: torch.Tensor, offset: int, positions: torch.Tensor | None, max_len: int) -> torch.Tensor:
    """Indices into a ``(max_len, D)`` table for ``x`` ``(B, T, D)``: ``offset + arange(T)`` or ``positions``."""
    check_rank("x", x, 3)
    check_nonnegative_int("offset", offset)
    if positions is None:
        positions = torch.arange(offset, offset + x.shape[1], device=x.device)  # (T,)
    elif positions.shape[-1] != x.shape[1] or positions.dim() not in (1, 2):
        raise ValueError(f"positions of shape {tuple(positions.shape)} do not match x of shape {tuple(x.shape)}")
    if positions.numel() and (int(positions.max()) >= max_len or int(positions.min()) < 0):
        raise ValueError(
            f"positions {int(positions.min())}..{int(positions.max())} of x (shape {tuple(x.shape)}) exceed the "
            f"table of max_len={max_len}"
        )
    return positions  # (T,) or (B, T)


class SinusoidalPositions(nn.Module):
    """Adds the sinusoidal table to ``(B, T, D)`` embeddings: ``x + P[offset : offset + T]``.

    The table is a non-persistent buffer: it follows the module's device and dtype but is not saved.
    """

    def __init__(self, max_len: int, d_model: int, base: float = 10000.0) -> None:
        super().__init__()
        self.max_len = check_positive_int("max_len", max_len)
        self.register_buffer("table", sinusoidal_positions(max_len, d_model, base), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Add positions ``offset .. offset+T-1`` (or explicit ``positions``) to ``x`` ``(B, T, D)``."""
        rows = _position_rows(x, offset, positions, self.max_len)
        return x + self.table[rows].to(x.dtype)  # (B, T, D) + (T, D) or (B, T, D)


class LearnedPositions(nn.Module):
    """Learned absolute position embeddings (BERT, GPT): ``x + E[offset : offset + T]``."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = check_positive_int("max_len", max_len)
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x: torch.Tensor, offset: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Add positions ``offset .. offset+T-1`` (or explicit ``positions``) to ``x`` ``(B, T, D)``."""
        rows = _position_rows(x, offset, positions, self.max_len)
        return x + self.embedding(rows)  # (B, T, D) + (T, D) or (B, T, D)


# --------------------------------------------------------------------------------------------------------------
# Rotary position embedding (RoPE)


def rotary_angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    r"""Rotation angles ``m·θ_i`` with ``θ_i = base^{-2i/Dh}`` (Su et al. 2021, eq. 15).

    Args:
        positions: integer positions ``m``, any shape ``(...)``.
        head_dim: Dh, even.

    Returns:
        float32 angles of shape ``(..., Dh/2)``.
    """
    check_positive_int("head_dim", head_dim)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary pairs, got {head_dim}")
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim
    inv_freq = 1.0 / (base**exponent)  # (Dh/2,)
    return positions.to(torch.float32)[..., None] * inv_freq  # (..., Dh/2)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor, pairing: str = "interleaved") -> torch.Tensor:
    """Rotate each feature pair of ``x`` by its angle.

    Pairings: ``"interleaved"`` (the paper's, and tfcourse's default) rotates ``(x[2i], x[2i+1])``;
    ``"half"`` (Hugging Face's Llama, GPT-NeoX) rotates ``(x[i], x[i + Dh/2])``. They are the same rotation
    applied to a permuted feature order; :func:`interleaved_to_half` and :func:`half_to_interleaved` convert
    activations, and applying the latter to the per-head rows of a checkpoint's ``W_q`` and ``W_k``
    (``w.view(H, Dh, D)`` along ``dim=1``) converts weights trained with the half pairing.

    Args:
        x: ``(..., T, Dh)``, e.g. queries ``(B, H, T, Dh)``.
        angles: ``(..., T, Dh/2)`` from :func:`rotary_angles`, broadcastable to ``x`` without its last axis.
        pairing: ``"interleaved"`` or ``"half"``.

    Returns:
        Tensor like ``x``; computed in float32.
    """
    check_floating("x", x)
    check_min_rank("x", x, 2)
    if pairing not in _PAIRINGS:
        raise ValueError(f"pairing must be one of {_PAIRINGS}, got {pairing!r}")
    if angles.shape[-1] * 2 != x.shape[-1]:
        raise ValueError(f"angles of shape {tuple(angles.shape)} do not match x of width {x.shape[-1]}")
    xf = x.float()
    if pairing == "interleaved":
        first, second = xf[..., 0::2], xf[..., 1::2]  # (..., T, Dh/2) each
    else:
        first, second = xf.chunk(2, dim=-1)
    cos, sin = angles.cos(), angles.sin()
    rot_first = first * cos - second * sin
    rot_second = first * sin + second * cos
    if pairing == "interleaved":
        out = torch.stack((rot_first, rot_second), dim=-1).flatten(-2)  # (..., T, Dh/2, 2) -> (..., T, Dh)
    else:
        out = torch.cat((rot_first, rot_second), dim=-1)  # (..., T, Dh)
    return out.to(x.dtype)


def interleaved_to_half(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Reorder features along ``dim`` from ``(a0, b0, a1, b1, …)`` to ``(a0, a1, …, b0, b1, …)``."""
    x = x.movedim(dim, -1)
    if x.shape[-1] % 2:
        raise ValueError(f"the pairing axis must be even, got size {x.shape[-1]}")
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1).movedim(-1, dim)


def half_to_interleaved(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Reorder features along ``dim`` from ``(a0, a1, …, b0, b1, …)`` to ``(a0, b0, a1, b1, …)``."""
    x = x.movedim(dim, -1)
    if x.shape[-1] % 2:
        raise ValueError(f"the pairing axis must be even, got size {x.shape[-1]}")
    first, second = x.chunk(2, dim=-1)
    return torch.stack((first, second), dim=-1).flatten(-2).movedim(-1, dim)


class RotaryEmbedding(nn.Module):
    """RoPE as a module: ``rope(x, positions)`` rotates queries or keys ``(B, H, T, Dh)``.

    Because a rotation by ``mθ`` followed by a dot product with a rotation by ``nθ`` equals a rotation by
    ``(n - m)θ``, the scores depend only on the offset ``n - m``.

    Args:
        head_dim: Dh, even.
        base: frequency base (10000 in the paper).
        pairing: ``"interleaved"`` (default) or ``"half"``; see :func:`apply_rotary`.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, pairing: str = "interleaved") -> None:
        super().__init__()
        if pairing not in _PAIRINGS:
            raise ValueError(f"pairing must be one of {_PAIRINGS}, got {pairing!r}")
        check_positive_int("head_dim", head_dim)
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary pairs, got {head_dim}")
        self.head_dim, self.base, self.pairing = head_dim, base, pairing

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``(B, H, T, Dh)`` at ``positions`` ``(T,)`` or ``(B, T)``."""
        check_rank("x", x, 4)
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"x has head width {x.shape[-1]} (shape {tuple(x.shape)}), expected {self.head_dim}")
        if positions.shape[-1] != x.shape[-2] or positions.dim() not in (1, 2):
            raise ValueError(f"positions of shape {tuple(positions.shape)} do not match x of shape {tuple(x.shape)}")
        angles = rotary_angles(positions, self.head_dim, self.base)  # (T, Dh/2) or (B, T, Dh/2)
        if angles.dim() == 3:
            angles = angles[:, None]  # (B, 1, T, Dh/2): shared by the heads
        return apply_rotary(x, angles, self.pairing)


# --------------------------------------------------------------------------------------------------------------
# Relative positions


def relative_positions(
    tq: int,
    tk: int | None = None,
    *,
    query_offset: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Offsets ``key_position - query_position`` as a ``(Tq, Tk)`` integer grid.

    Queries sit at ``query_offset + i``; by default the queries are the last ``tq`` of the ``tk`` keys
    (``query_offset = tk - tq``), which is right both without a cache (0) and with one.
    """
    tk = tq if tk is None else tk
    check_nonnegative_int("tq", tq)
    check_nonnegative_int("tk", tk)
    query_offset = tk - tq if query_offset is None else query_offset
    query_pos = torch.arange(query_offset, query_offset + tq, device=device)  # (Tq,)
    key_pos = torch.arange(tk, device=device)  # (Tk,)
    return key_pos[None, :] - query_pos[:, None]  # (Tq, Tk)


def t5_relative_position_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> torch.Tensor:
    """Map offsets (key − query) to T5's buckets, with the same results as Hugging Face's ``T5Attention``.

    Half of the buckets (all of them when ``bidirectional`` is False, where positive offsets, i.e. future
    keys, all share bucket 0) cover each direction. Within a direction, small distances
    ``0 .. max_exact-1`` (``max_exact`` = half the direction's buckets) get a bucket each, and larger
    distances share logarithmically wider buckets up to ``max_distance``; everything beyond lands in the
    last bucket. With bidirectional buckets, keys after the query use the upper half.

    Args:
        relative_position: integer tensor of offsets ``key_position - query_position``.
        bidirectional: whether future keys get their own buckets (encoder) or not (decoder).
        num_buckets: total buckets.
        max_distance: distance at which the last bucket starts.

    Returns:
        ``long`` tensor of bucket ids in ``[0, num_buckets)``, shaped like ``relative_position``.
    """
    if relative_position.is_floating_point():
        raise TypeError(f"relative_position must hold integers, got dtype {relative_position.dtype}")
    check_positive_int("num_buckets", num_buckets)
    check_positive_int("max_distance", max_distance)
    rel = relative_position.long()
    if bidirectional:
        num_buckets //= 2
        offset = (rel > 0).long() * num_buckets  # future keys use the upper half
        distance = rel.abs()
    else:
        offset = torch.zeros_like(rel)
        distance = (-rel).clamp(min=0)  # future keys collapse to distance 0
    max_exact = num_buckets // 2
    if max_exact < 1 or max_distance <= max_exact:
        raise ValueError(
            f"need at least 4 buckets (2 if not bidirectional) and max_distance > {max_exact}; "
            f"got num_buckets={num_buckets * (2 if bidirectional else 1)}, max_distance={max_distance}"
        )
    # Log-spaced buckets for large distances; float32 as in the reference so that borders agree exactly.
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return offset + torch.where(distance < max_exact, distance, large)


class T5RelativeBias(nn.Module):
    """T5's learned relative position bias: one scalar per (bucket, head), added to the scores.

    T5 computes it in the first layer and shares it with the others, and does not scale scores by 1/√d.

    Args:
        num_heads: H.
        num_buckets, max_distance, bidirectional: as in :func:`t5_relative_position_bucket`.
    """

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, tq: int, tk: int | None = None, *, query_offset: int | None = None) -> torch.Tensor:
        """Bias ``(1, H, Tq, Tk)`` for ``tq`` queries over ``tk`` keys (see :func:`relative_positions`)."""
        device = self.embedding.weight.device
        rel = relative_positions(tq, tk, query_offset=query_offset, device=device)  # (Tq, Tk)
        buckets = t5_relative_position_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)  # (Tq, Tk, H) -> (1, H, Tq, Tk)


class ShawRelativeBias(nn.Module):
    """Shaw et al. (2018)-style learned bias per head for each offset clipped to ``[-K, K]``.

    Offsets beyond ``max_distance`` (K) share the edge value, which is what lets the scheme run on
    sequences longer than any seen in training.
    """

    def __init__(self, num_heads: int, max_distance: int) -> None:
        super().__init__()
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.max_distance = check_positive_int("max_distance", max_distance)
        self.embedding = nn.Embedding(2 * max_distance + 1, num_heads)

    def forward(self, tq: int, tk: int | None = None, *, query_offset: int | None = None) -> torch.Tensor:
        """Bias ``(1, H, Tq, Tk)``."""
        device = self.embedding.weight.device
        rel = relative_positions(tq, tk, query_offset=query_offset, device=device)  # (Tq, Tk)
        index = rel.clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.embedding(index).permute(2, 0, 1).unsqueeze(0)  # (Tq, Tk, H) -> (1, H, Tq, Tk)


def shaw_key_logits(q: torch.Tensor, table: torch.Tensor, max_distance: int, tk: int | None = None) -> torch.Tensor:
    """The vector form of Shaw et al. (2018, eq. 5): extra scores ``q_i · a_{clip(j - i)}``.

    Args:
        q: ``(..., Tq, Dh)`` queries.
        table: ``(2K + 1, Dh)`` learned vectors for offsets ``-K .. K``.
        max_distance: K.
        tk: number of keys (defaults to Tq); queries are the last Tq positions.

    Returns:
        ``(..., Tq, Tk)`` logits to add to ``q·kᵀ`` before scaling.
    """
    check_min_rank("q", q, 2)
    check_rank("table", table, 2)
    if table.shape != (2 * max_distance + 1, q.shape[-1]):
        raise ValueError(
            f"table must have shape (2*max_distance+1, Dh) = ({2 * max_distance + 1}, {q.shape[-1]}), "
            f"got {tuple(table.shape)}"
        )
    rel = relative_positions(q.shape[-2], tk, device=q.device)  # (Tq, Tk)
    vectors = table[rel.clamp(-max_distance, max_distance) + max_distance]  # (Tq, Tk, Dh)
    return torch.einsum("...qd,qkd->...qk", q, vectors)  # (..., Tq, Tk)


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Transformer-XL's relative shift (Dai et al. 2019, appendix B).

    The position term is first computed against relative embeddings ordered by *decreasing* distance,
    ``x[..., i, r] = q_i · R_{Tk-1-r}``. Attention needs ``q_i · R_{pos(i) - j}`` where query ``i`` sits at
    position ``Tk - Tq + i``; that is ``x[..., i, j + Tq - 1 - i]``, a different shift for every row. Padding
    one zero column, reinterpreting the memory as ``(Tk + 1, Tq)`` and dropping the first row does all
    the shifts at once without a gather.

    Args:
        x: ``(..., Tq, Tk)`` scores against relative positions ``Tk-1, …, 0``.

    Returns:
        ``(..., Tq, Tk)`` with ``out[..., i, j] = x[..., i, j + Tq - 1 - i]`` wherever ``j <= i + Tk - Tq``
        (the positions a causal mask keeps). Entries further right hold values wrapped in from the next
        row and must be masked.
    """
    check_min_rank("x", x, 2)
    *lead, tq, tk = x.shape
    if tq > tk:
        raise ValueError(f"rel_shift needs Tq <= Tk, got shape {tuple(x.shape)}")
    padded = F.pad(x, (1, 0))  # (..., Tq, Tk + 1)
    padded = padded.reshape(*lead, tk + 1, tq)  # the same memory read as (Tk + 1, Tq)
    return padded[..., 1:, :].reshape(*lead, tq, tk)  # drop one row's worth and read back as (Tq, Tk)
