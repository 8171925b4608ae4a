"""Funnel-Transformer's relative attention and layer (Dai et al. 2020, §2 and appendix A.2).

Funnel adds nothing to the token embeddings. Position and segment enter every attention score instead,
as in Transformer-XL (Dai et al. 2019, §3.3) plus a segment term: with ``q_i`` the projected query,
``k_j`` the projected key, ``r_ij`` the projected sinusoid of the offset ``pos(i) - pos(j)`` and ``s_ij``
one of two learned vectors (same segment or not), each head scores

    score_ij = ( (q_i + u)·k_j  +  (q_i + v)·r_ij  +  (q_i + w)·s_ij ) / √Dh

with learned per-head biases u, v, w (``r_w_bias``, ``r_r_bias`` and ``r_s_bias`` in the original code).
Because positions live only in the scores, pooling needs no new position table: a pooled position keeps
the position of the first token of its window, and offsets stay in original token units.

In the first layer of a block the queries are pooled while the keys still come from the longer
sequence, so the offsets are no longer the plain ``i - j`` of one sequence. Scoring the few distinct
offsets once and gathering them into the ``(Tq, Tk)`` grid handles every case the same way (the
original code reaches the same numbers with a reshape trick, a generalised
:func:`tfcourse.positions.rel_shift`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from tfcourse._checks import check_positive_int
from tfcourse.attention import merge_heads, scaled_dot_product_attention, split_heads
from tfcourse.blocks import FeedForward
from tfcourse.positions import rotary_angles

__all__ = ["CLS_TOKEN_TYPE", "FunnelAttention", "FunnelLayer", "TokenInfo", "relative_sinusoids"]

CLS_TOKEN_TYPE = 2
"""Token-type id that marks [CLS]: it counts as the same segment as every other token."""


class TokenInfo(NamedTuple):
    """What attention needs to know about each position of a (possibly pooled) sequence."""

    valid: torch.Tensor
    """``(B, T)`` bool, True at real tokens (only keys are masked with it)."""
    token_types: torch.Tensor
    """``(B, T)`` integer segment ids; :data:`CLS_TOKEN_TYPE` marks [CLS]."""
    positions: torch.Tensor
    """``(T,)`` integer positions in original token units (a pooled position keeps its window's first)."""


def relative_sinusoids(offsets: torch.Tensor, d_model: int) -> torch.Tensor:
    """Sinusoids of Vaswani et al. (2017, §3.5) at integer, possibly negative, offsets.

    The angles ``m·θ_i`` with ``θ_i = 10000^{-2i/D}`` are those of the sinusoidal table (and of RoPE);
    Funnel lays the features out as all sines, then all cosines.

    Args:
        offsets: integer offsets ``m``, any shape ``(...)``.
        d_model: D, even.

    Returns:
        float32 ``(..., D)``: ``[sin(m·θ_0), …, sin(m·θ_{D/2-1}), cos(m·θ_0), …, cos(m·θ_{D/2-1})]``.
    """
    angles = rotary_angles(offsets, d_model)  # (..., D/2), float32
    return torch.cat((angles.sin(), angles.cos()), dim=-1)  # (..., D)


class FunnelAttention(nn.Module):
    """Multi-head attention with Funnel's relative position and segment terms (see the module docstring).

    Args:
        d_model: D, width of the inputs and the output.
        num_heads: H.
        head_dim: Dh; the heads' total width ``H·Dh`` need not equal D.
        separate_cls: [CLS] (position 0) gets no position or segment term, as a query or as a key: it
            sits outside the pooled grid, so an offset to it would mean nothing.
        dropout: dropout on the attention weights while training.
    """

    def __init__(
        self, d_model: int, num_heads: int, head_dim: int, *, separate_cls: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.d_model, self.num_heads = (
            check_positive_int("d_model", d_model),
            check_positive_int("num_heads", num_heads),
        )
        self.head_dim = check_positive_int("head_dim", head_dim)
        if d_model % 2:
            raise ValueError(f"d_model must be even for the sin/cos position features, got {d_model}")
        self.separate_cls, self.dropout = separate_cls, dropout
        inner = num_heads * head_dim  # H·Dh
        self.q_proj = nn.Linear(d_model, inner, bias=False)  # u, v and w play the part of a query bias
        self.k_proj = nn.Linear(d_model, inner)
        self.v_proj = nn.Linear(d_model, inner)
        self.out_proj = nn.Linear(inner, d_model)
        self.position_proj = nn.Linear(d_model, inner, bias=False)  # W_R: sinusoid -> per-head vector
        self.content_bias = nn.Parameter(torch.zeros(num_heads, head_dim))  # u
        self.position_bias = nn.Parameter(torch.zeros(num_heads, head_dim))  # v
        self.segment_bias = nn.Parameter(torch.zeros(num_heads, head_dim))  # w
        self.segment_embed = nn.Parameter(torch.zeros(2, num_heads, head_dim))  # [different, same]
        for p in (self.content_bias, self.position_bias, self.segment_bias, self.segment_embed):
            nn.init.uniform_(p, 0.0, 0.1)  # the original initialisation

    def position_scores(self, q: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Unscaled ``(q_i + v)·r_ij`` for queries ``q`` ``(B, H, Tq, Dh)`` → ``(B, H, Tq, Tk)``."""
        offsets = q_pos[:, None] - k_pos[None, :]  # (Tq, Tk), original token units
        distinct, index = torch.unique(offsets, return_inverse=True)  # (R,), (Tq, Tk): R ≤ Tq + Tk offsets
        weight = self.position_proj.weight
        r = self.position_proj(relative_sinusoids(distinct, self.d_model).to(weight.dtype))  # (R, H·Dh)
        r = r.view(-1, self.num_heads, self.head_dim).to(q.dtype)  # (R, H, Dh)
        per_offset = torch.einsum("bhqd,rhd->bhqr", q + self.position_bias[:, None], r)  # (B, H, Tq, R)
        return per_offset.gather(-1, index.expand(*q.shape[:2], *index.shape))  # (B, H, Tq, Tk)

    def segment_scores(self, q: torch.Tensor, q_types: torch.Tensor, k_types: torch.Tensor) -> torch.Tensor:
        """Unscaled ``(q_i + w)·s_ij`` for queries ``q`` ``(B, H, Tq, Dh)`` → ``(B, H, Tq, Tk)``."""
        same = q_types[:, :, None] == k_types[:, None, :]  # (B, Tq, Tk)
        same = same | (q_types == CLS_TOKEN_TYPE)[:, :, None] | (k_types == CLS_TOKEN_TYPE)[:, None, :]
        per_kind = torch.einsum("bhqd,shd->bhqs", q + self.segment_bias[:, None], self.segment_embed)  # (B,H,Tq,2)
        different, same_segment = per_kind[..., :1], per_kind[..., 1:]  # (B, H, Tq, 1) each
        return torch.where(same[:, None], same_segment, different)  # (B, H, Tq, Tk)

    def forward(self, query: torch.Tensor, key: torch.Tensor, q_info: TokenInfo, k_info: TokenInfo) -> torch.Tensor:
        """Attend from ``query`` ``(B, Tq, D)`` to ``key`` ``(B, Tk, D)`` (which also gives the values).

        Only padded *keys* are masked. A padded query row is still computed: after pooling, a window
        that mixes a real token with padding counts as padding, yet the decoder up-samples its row back
        onto that real token, so the row must hold what the original model computes.

        Returns:
            ``(B, Tq, D)``, before the residual and norm. A query with no real key gets zeros.
        """
        q = split_heads(self.q_proj(query), self.num_heads)  # (B, H, Tq, Dh)
        k = split_heads(self.k_proj(key), self.num_heads)  # (B, H, Tk, Dh)
        v = split_heads(self.v_proj(key), self.num_heads)  # (B, H, Tk, Dh)
        bias = self.position_scores(q, q_info.positions, k_info.positions)
        bias = bias + self.segment_scores(q, q_info.token_types, k_info.token_types)  # (B, H, Tq, Tk)
        if self.separate_cls:
            not_cls = torch.ones(bias.shape[-2:], dtype=torch.bool, device=bias.device)  # (Tq, Tk)
            not_cls[0, :], not_cls[:, 0] = False, False
            bias = bias * not_cls  # no position or segment term to or from [CLS]
        scale = 1.0 / math.sqrt(self.head_dim)
        mask = k_info.valid[:, None, None, :]  # (B, 1, 1, Tk): padded keys only
        out = scaled_dot_product_attention(
            q + self.content_bias[:, None], k, v, mask, bias * scale, scale, self.dropout if self.training else 0.0
        )  # (B, H, Tq, Dh)
        return self.out_proj(merge_heads(out))  # (B, Tq, D)


class FunnelLayer(nn.Module):
    """A post-LN layer: ``h = LN(query + Attn(query, key))``, then ``LN(h + FFN(h))``.

    The residual comes from the *query*, so a layer whose queries are pooled returns the pooled length.

    Args:
        d_model, num_heads, head_dim: widths, as in :class:`FunnelAttention`.
        d_ff: hidden width of the feed-forward network.
        separate_cls: as in :class:`FunnelAttention`.
        dropout: dropout on each sublayer's output before its residual sum.
        attention_dropout: dropout on the attention weights.
        activation_dropout: dropout inside the feed-forward network.
        activation: feed-forward activation, as in :class:`tfcourse.blocks.FeedForward`.
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        head_dim: int,
        d_ff: int,
        *,
        separate_cls: bool = True,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: str = "gelu_tanh",
        layer_norm_eps: float = 1e-9,
    ) -> None:
        super().__init__()
        self.attn = FunnelAttention(d_model, num_heads, head_dim, separate_cls=separate_cls, dropout=attention_dropout)
        self.attn_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.ff = FeedForward(d_model, d_ff, activation_dropout, activation)
        self.ff_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: torch.Tensor,
        q_info: TokenInfo,
        key: torch.Tensor | None = None,
        k_info: TokenInfo | None = None,
    ) -> torch.Tensor:
        """``query`` ``(B, Tq, D)`` attends to ``key`` ``(B, Tk, D)`` (itself when None) → ``(B, Tq, D)``."""
        if (key is None) != (k_info is None):
            raise ValueError("key and k_info must be given together (or both left out for self-attention)")
        key, k_info = (query, q_info) if key is None else (key, k_info)
        h = self.attn_norm(query + self.dropout(self.attn(query, key, q_info, k_info)))
        return self.ff_norm(h + self.dropout(self.ff(h)))
