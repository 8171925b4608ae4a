r"""Transformer-XL (Dai et al. 2019): segment-level recurrence with relative positional attention.

A vanilla language model sees a fixed window: tokens before the current segment are invisible, and
evaluating a long text means re-running the whole window for every new position. Transformer-XL keeps,
for every layer, the hidden states of the previous segment as a **memory** (§3.2)::

    h̃ⁿ⁻¹ = [SG(mⁿ⁻¹) ∘ hⁿ⁻¹]              memory and current segment, concatenated along time
    q = hⁿ⁻¹·W_q,  k = h̃ⁿ⁻¹·W_k,  v = h̃ⁿ⁻¹·W_v   queries from the current segment only

``SG`` is a stop-gradient: the memory is a constant, so training costs one segment's backward pass, yet
layer ``n`` reaches ``n`` segments back. Absolute positions would clash between segments (both would
start at 0), so attention uses *relative* positions (§3.3), the four-term score

.. math:: A_{ij} = \underbrace{q_i^\top k_j}_{(a)} + \underbrace{q_i^\top W_R R_{i-j}}_{(b)}
          + \underbrace{u^\top k_j}_{(c)} + \underbrace{v^\top W_R R_{i-j}}_{(d)}
          = (q_i + u)^\top k_j + (q_i + v)^\top W_R R_{i-j},

with ``R`` the sinusoidal table and ``u``, ``v`` learned global biases. Computing (b) + (d) for every
pair would need a ``(Tq, Tk, D)`` gather; instead it is computed against ``R`` ordered by decreasing
distance and realigned row by row with :func:`tfcourse.positions.rel_shift` (appendix B).

Query ``i`` of a segment with ``M`` memory positions sits at position ``M + i`` of the keys and attends to
keys ``≤ M + i`` (the bottom-right causal mask of :func:`tfcourse.masks.causal_mask`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse._checks import (
    check_bool,
    check_floating,
    check_nonnegative_int,
    check_positive_int,
    check_rank,
)
from tfcourse.attention import attention_from_scores, merge_heads, split_heads
from tfcourse.blocks import FeedForward
from tfcourse.masks import causal_mask
from tfcourse.models._embedding import check_token_ids
from tfcourse.positions import rel_shift, sinusoidal_positions

__all__ = [
    "RelativeMultiHeadAttention",
    "TransformerXL",
    "TransformerXLConfig",
    "TransformerXLLayer",
    "TransformerXLOutput",
    "evaluate_long_sequence",
    "relative_attention_scores",
    "relative_position_embeddings",
    "update_memory",
    "xl_attention_mask",
]

_NORMS = ("post", "pre")


# --------------------------------------------------------------------------------------------------------------
# Pure functions


def relative_position_embeddings(
    klen: int, d_model: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """The sinusoidal table ``R`` for distances ``klen - 1, …, 1, 0`` (decreasing), as rel_shift expects.

    Returns:
        ``(klen, D)``; row ``r`` encodes the distance ``klen - 1 - r``.
    """
    check_nonnegative_int("klen", klen)
    return sinusoidal_positions(klen, d_model, dtype=dtype, device=device).flip(0)  # (Tk, D)


def relative_attention_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    r: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Transformer-XL's score ``(q + u)·k + (q + v)·W_R R`` (Dai et al. 2019, §3.3 and appendix B).

    Terms (a) + (c) are one matrix product of the biased queries with the keys; terms (b) + (d) are one
    product with the projected relative embeddings, realigned by :func:`tfcourse.positions.rel_shift`.

    Args:
        q: ``(B, H, Tq, Dh)`` queries of the current segment.
        k: ``(B, H, Tk, Dh)`` keys of memory and current segment; ``Tk ≥ Tq`` and the queries are the
            last ``Tq`` positions.
        r: ``(H, Tk, Dh)`` (or ``(B, H, Tk, Dh)``) projected relative embeddings ``W_R R``, row ``r``
            holding distance ``Tk - 1 - r`` (see :func:`relative_position_embeddings`).
        u: ``(H, Dh)`` global content bias.
        v: ``(H, Dh)`` global position bias.
        scale: multiplies the scores; ``None`` means ``1/√Dh``.

    Returns:
        ``(B, H, Tq, Tk)`` float32 scores. Entry ``(i, j)`` is exact wherever ``j ≤ i + Tk - Tq`` (keys at
        or before the query); entries to the right hold shifted-in values and **must be masked** (use
        :func:`xl_attention_mask`).
    """
    for name, x, ranks in (("q", q, (4,)), ("k", k, (4,)), ("r", r, (3, 4)), ("u", u, (2,)), ("v", v, (2,))):
        check_floating(name, x)
        check_rank(name, x, *ranks)
    b, h, tq, dh = q.shape
    tk = k.shape[-2]
    if k.shape[:2] != (b, h) or k.shape[-1] != dh or tk < tq:
        raise ValueError(f"k of shape {tuple(k.shape)} does not fit q of shape {tuple(q.shape)} (need Tk ≥ Tq)")
    if r.shape[-3:] != (h, tk, dh):
        raise ValueError(f"r must have shape (H, Tk, Dh) = ({h}, {tk}, {dh}), got {tuple(r.shape)}")
    for name, bias in (("u", u), ("v", v)):
        if bias.shape != (h, dh):
            raise ValueError(f"{name} must have shape (H, Dh) = ({h}, {dh}), got {tuple(bias.shape)}")
    scale = 1.0 / math.sqrt(dh) if scale is None else scale
    content = torch.matmul(q + u[:, None], k.transpose(-2, -1))  # (B, H, Tq, Dh) @ (B, H, Dh, Tk): (a) + (c)
    position = torch.matmul(q + v[:, None], r.transpose(-2, -1))  # (B, H, Tq, Tk) against distances Tk-1 … 0
    position = rel_shift(position)  # (B, H, Tq, Tk): entry (i, j) now holds distance Tk - Tq + i - j: (b) + (d)
    return (content.float() + position.float()) * scale


def xl_attention_mask(
    tq: int,
    mlen: int = 0,
    *,
    same_length: bool = False,
    mem_len: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which of ``mlen + tq`` keys (memory first) each of ``tq`` queries may see.

    Causal and bottom-right aligned: query ``i`` sits at position ``p = mlen + i`` and sees keys ``≤ p``.
    With ``same_length`` every query sees the same number of keys, the ``mem_len`` ending at itself
    (keys ``p - mem_len < j ≤ p``), as in the authors' evaluation code; without it the first query of a
    segment sees the least context and the last one the most. ``causal_mask(2, 4)`` vs
    ``xl_attention_mask(2, 2, same_length=True, mem_len=2)``::

        1 1 1 0        0 1 1 0
        1 1 1 1        0 0 1 1

    Returns:
        ``(Tq, mlen + Tq)`` bool mask, True = may attend.
    """
    check_nonnegative_int("tq", tq)
    check_nonnegative_int("mlen", mlen)
    mask = causal_mask(tq, mlen + tq, device=device)  # (Tq, Tk)
    if same_length:
        if mem_len is None:
            raise ValueError("same_length=True needs mem_len, the number of keys every query sees")
        check_positive_int("mem_len", mem_len)
        query_pos = torch.arange(mlen, mlen + tq, device=device)  # (Tq,)
        key_pos = torch.arange(mlen + tq, device=device)  # (Tk,)
        mask = mask & (key_pos[None, :] > query_pos[:, None] - mem_len)  # (Tq, Tk)
    return mask


def update_memory(memory: torch.Tensor | None, hidden: torch.Tensor, mem_len: int) -> torch.Tensor:
    """One layer's next memory: the last ``mem_len`` positions of ``[memory ∘ hidden]``, detached.

    ``memory`` ``(B, M, D)`` or None and ``hidden`` ``(B, T, D)`` give ``(B, min(M + T, mem_len), D)``.
    """
    check_nonnegative_int("mem_len", mem_len)
    context = hidden if memory is None else torch.cat([memory, hidden], dim=1)  # (B, M + T, D)
    start = max(0, context.shape[1] - mem_len)  # explicit start: ``[-0:]`` would keep everything
    return context[:, start:].detach()


# --------------------------------------------------------------------------------------------------------------
# Modules


class RelativeMultiHeadAttention(nn.Module):
    """Multi-head attention over ``[memory ∘ x]`` with Transformer-XL's relative scores.

    Parameters: ``W_q``, ``W_k`` (``W_{k,E}`` in the paper), ``W_v``, ``W_R`` (``W_{k,R}``, projecting the
    sinusoidal table, no bias), the output projection, and the global biases ``u`` and ``v`` of shape
    ``(H, Dh)``, one pair per layer (the released checkpoints' ``untie_r``). Attention is always causal:
    the relative shift is only exact on the causal side.

    Args:
        d_model: D.
        num_heads: H; must divide D.
        dropout: dropout on the attention weights while training.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if check_positive_int("d_model", d_model) % check_positive_int("num_heads", num_heads):
            raise ValueError(f"num_heads={num_heads} does not divide d_model={d_model}")
        self.d_model, self.num_heads, self.head_dim, self.dropout = d_model, num_heads, d_model // num_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.r_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.u = nn.Parameter(torch.randn(num_heads, self.head_dim) * 0.02)
        self.v = nn.Parameter(torch.randn(num_heads, self.head_dim) * 0.02)

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from the segment ``x`` to ``[SG(memory) ∘ x]``.

        Args:
            x: ``(B, T, D)`` current segment.
            pos_emb: ``(M + T, D)`` table from :func:`relative_position_embeddings` (distances decreasing).
            memory: ``(B, M, D)`` cached states of the previous segment(s), or None (``M = 0``). It is
                detached here: no gradient flows into the memory.
            mask: optional bool ``(T, M + T)`` (or broadcastable to ``(B, H, T, M + T)``), True = may
                attend; combined with the causal mask, which is always applied.
            return_weights: also return the ``(B, H, T, M + T)`` float32 attention weights.

        Returns:
            ``(B, T, D)``, or ``(output, weights)``.
        """
        check_floating("x", x)
        check_rank("x", x, 3)
        _, t, d = x.shape
        if d != self.d_model:
            raise ValueError(f"x has width {d} (shape {tuple(x.shape)}), expected d_model={self.d_model}")
        if memory is not None and (memory.dim() != 3 or memory.shape[0] != x.shape[0] or memory.shape[2] != d):
            raise ValueError(f"memory must have shape (B, M, D) = ({x.shape[0]}, M, {d}), got {tuple(memory.shape)}")
        context = x if memory is None else torch.cat([memory.detach(), x], dim=1)  # (B, Tk, D), Tk = M + T
        tk = context.shape[1]
        if pos_emb.shape != (tk, d):
            raise ValueError(f"pos_emb must have shape (M + T, D) = ({tk}, {d}), got {tuple(pos_emb.shape)}")
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, T, Dh): queries from the segment only
        k = split_heads(self.k_proj(context), self.num_heads)  # (B, H, Tk, Dh)
        value = split_heads(self.v_proj(context), self.num_heads)  # (B, H, Tk, Dh)
        r = self.r_proj(pos_emb.to(x.dtype)).view(tk, self.num_heads, self.head_dim).transpose(0, 1)  # (H, Tk, Dh)
        scores = relative_attention_scores(q, k, r, self.u.to(x.dtype), self.v.to(x.dtype))  # (B, H, T, Tk)
        allowed = causal_mask(t, tk, device=x.device)  # (T, Tk): also hides rel_shift's wrapped-in entries
        if mask is not None:
            check_bool("mask", mask)
            allowed = allowed & mask
        out, weights = attention_from_scores(scores, value, allowed, self.dropout if self.training else 0.0)
        out = self.out_proj(merge_heads(out))  # (B, H, T, Dh) -> (B, T, D)
        return (out, weights) if return_weights else out


class TransformerXLLayer(nn.Module):
    """Relative attention over memory and segment, then a feed-forward network, each with a residual.

    ``norm="post"`` is the paper's ``LayerNorm(x + sublayer(x))``; ``"pre"`` normalises the sublayer's
    input instead (memory included, since it holds the previous segment's un-normalised inputs).
    """

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, *, norm: str = "post", dropout: float = 0.0, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        self.norm = norm
        self.attn = RelativeMultiHeadAttention(d_model, num_heads, dropout)
        self.attn_norm = nn.LayerNorm(d_model, eps=eps)
        self.ff = FeedForward(d_model, d_ff, dropout, activation="relu")
        self.ff_norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, T, D)``; ``memory`` ``(B, M, D)`` is this layer's input on earlier segments."""
        if self.norm == "pre":
            memory = None if memory is None else self.attn_norm(memory)
            x = x + self.dropout(self.attn(self.attn_norm(x), pos_emb, memory, mask=mask))
            return x + self.dropout(self.ff(self.ff_norm(x)))
        x = self.attn_norm(x + self.dropout(self.attn(x, pos_emb, memory, mask=mask)))
        return self.ff_norm(x + self.dropout(self.ff(x)))


@dataclass(frozen=True)
class TransformerXLConfig:
    """Hyper-parameters of :class:`TransformerXL`.

    Attributes:
        vocab_size: V.
        d_model, num_heads, num_layers, d_ff: sizes of the stack.
        mem_len: positions kept in memory per layer (0 turns recurrence off).
        dropout: on embeddings, relative embeddings, attention weights and sublayer outputs.
        norm: ``"post"`` (the paper) or ``"pre"`` (with a final LayerNorm).
        same_length: every query attends to exactly ``mem_len`` keys (see :func:`xl_attention_mask`).
        tie_weights: share the token embedding with the output layer.
    """

    vocab_size: int = 267735
    d_model: int = 410
    num_heads: int = 10
    num_layers: int = 16
    d_ff: int = 2100
    mem_len: int = 150
    dropout: float = 0.1
    norm: str = "post"
    same_length: bool = False
    tie_weights: bool = True

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide d_model={self.d_model}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even for the sinusoidal table, got {self.d_model}")
        check_nonnegative_int("mem_len", self.mem_len)
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {self.norm!r}")
        if self.same_length and self.mem_len == 0:
            raise ValueError("same_length=True needs mem_len > 0")

    @classmethod
    def tiny(cls, **overrides) -> TransformerXLConfig:
        """A model small enough for tests: two layers of width 32, memory of 8 positions."""
        sizes = dict(vocab_size=64, d_model=32, num_heads=4, num_layers=2, d_ff=64, mem_len=8, dropout=0.0)
        return cls(**{**sizes, **overrides})


class TransformerXLOutput(NamedTuple):
    """What :meth:`TransformerXL.forward` returns."""

    logits: torch.Tensor
    """``(B, T, V)`` next-token logits."""
    memory: list[torch.Tensor]
    """One detached ``(B, min(M + T, mem_len), D)`` tensor per layer: the memory for the next segment."""


class TransformerXL(nn.Module):
    """Transformer-XL language model (Dai et al. 2019): token embeddings, relative layers with memory, and
    a (tied) output layer. Positions enter only through the relative attention; see :class:`TransformerXLConfig`."""

    def __init__(self, config: TransformerXLConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)
        self.scale = math.sqrt(c.d_model)  # unit-variance token vectors, like the sinusoids they meet
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            TransformerXLLayer(c.d_model, c.num_heads, c.d_ff, norm=c.norm, dropout=c.dropout)
            for _ in range(c.num_layers)
        )
        self.final_norm = nn.LayerNorm(c.d_model) if c.norm == "pre" else None
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.embed.weight

    def _check_memory(self, memory: list[torch.Tensor], batch: int, dtype: torch.dtype) -> int:
        """Validate a memory list and return its length M."""
        c = self.config
        if not isinstance(memory, (list, tuple)) or len(memory) != c.num_layers:
            got = len(memory) if isinstance(memory, (list, tuple)) else type(memory).__name__
            raise ValueError(f"memory must be a list of one tensor per layer ({c.num_layers}), got {got}")
        mlen = memory[0].shape[1] if memory[0].dim() == 3 else -1
        for i, m in enumerate(memory):
            if tuple(m.shape) != (batch, mlen, c.d_model):
                raise ValueError(
                    f"memory[{i}] has shape {tuple(m.shape)}, expected (B, M, D) = ({batch}, {mlen}, {c.d_model}) "
                    "with the same M in every layer"
                )
            if m.dtype != dtype:
                raise TypeError(f"memory[{i}] has dtype {m.dtype} but the model runs in {dtype}")
        if mlen > c.mem_len:
            raise ValueError(f"memory holds {mlen} positions, more than mem_len={c.mem_len}")
        return mlen

    def forward(
        self,
        input_ids: torch.Tensor,
        memory: list[torch.Tensor] | None = None,
        *,
        mask: torch.Tensor | None = None,
    ) -> TransformerXLOutput:
        """Process one segment, attending to the memory of the previous ones.

        Args:
            input_ids: ``(B, T)`` token ids of the segment.
            memory: the ``memory`` returned for the previous segment (one ``(B, M, D)`` tensor per layer,
                the inputs of that layer), or None for the first segment.
            mask: optional bool ``(T, M + T)`` restricting attention further (True = may attend); it is
                combined with the causal mask (and the ``same_length`` window).

        Returns:
            :class:`TransformerXLOutput`: ``(B, T, V)`` logits and the next segment's memory.
        """
        c = self.config
        check_token_ids("input_ids", input_ids, c.vocab_size)
        b, t = input_ids.shape
        dtype = self.embed.weight.dtype
        mlen = 0 if memory is None else self._check_memory(memory, b, dtype)
        if mask is not None:
            check_bool("mask", mask)
        if mask is not None and mask.shape[-2:] != (t, mlen + t):
            raise ValueError(f"mask must end in (T, M + T) = ({t}, {mlen + t}), got {tuple(mask.shape)}")
        device = input_ids.device
        allowed = xl_attention_mask(t, mlen, same_length=c.same_length, mem_len=c.mem_len, device=device)
        allowed = allowed if mask is None else allowed & mask  # (T, Tk) or broadcastable
        pos_emb = self.dropout(relative_position_embeddings(mlen + t, c.d_model, dtype=dtype, device=device))
        h = self.dropout(self.embed(input_ids) * self.scale)  # (B, T, D)
        new_memory = []
        for i, layer in enumerate(self.layers):
            layer_memory = None if memory is None else memory[i]
            new_memory.append(update_memory(layer_memory, h, c.mem_len))  # this layer's *input* is cached
            h = layer(h, pos_emb, layer_memory, mask=allowed)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return TransformerXLOutput(self.lm_head(self.dropout(h)), new_memory)


def evaluate_long_sequence(model: TransformerXL, input_ids: torch.Tensor, segment_len: int) -> torch.Tensor:
    """Score a long sequence segment by segment, carrying the memory (the paper's fast evaluation, §3.2).

    Every token is processed exactly once: the memory replaces the recomputation of the previous context
    that a fixed-window model needs for every new position. Call ``model.eval()`` first.

    Args:
        model: a :class:`TransformerXL`.
        input_ids: ``(B, T)`` token ids.
        segment_len: tokens per forward pass.

    Returns:
        ``(B, T - 1)`` float32 log-probabilities ``log p(x_{t+1} | x_{≤t})``; the loss is ``-mean()``.
    """
    check_token_ids("input_ids", input_ids, model.config.vocab_size)
    check_positive_int("segment_len", segment_len)
    t = input_ids.shape[1]
    memory, log_probs = None, []
    with torch.no_grad():
        for start in range(0, t, segment_len):
            logits, memory = model(input_ids[:, start : start + segment_len], memory)  # (B, S, V)
            targets = input_ids[:, start + 1 : start + segment_len + 1]  # (B, S) or (B, S - 1) at the end
            scores = F.log_softmax(logits[:, : targets.shape[1]].float(), dim=-1)  # (B, S', V)
            log_probs.append(scores.gather(-1, targets[..., None]).squeeze(-1))  # (B, S')
    if not log_probs:
        return torch.zeros(input_ids.shape[0], 0, device=input_ids.device)
    return torch.cat(log_probs, dim=1)  # (B, T - 1)
