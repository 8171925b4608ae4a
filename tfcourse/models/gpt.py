"""A decoder-only language model (GPT): token embeddings, a causal stack, and a tied output layer.

It models ``Pr(t_1..t_N) = Π_n Pr(t_n | t_<n)``: position ``n``'s output is a distribution over the next
token, and the causal mask guarantees that it depends only on tokens up to ``n``. Training therefore
scores every position of a sequence in one parallel pass; generation is serial
(:mod:`tfcourse.generation`), and a :class:`~tfcourse.cache.KVCache` per layer makes each step cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tfcourse.blocks import Decoder
from tfcourse.cache import KVCache
from tfcourse.losses import cross_entropy
from tfcourse.masks import attention_mask
from tfcourse.models._embedding import POSITION_KINDS, TokenEmbedding
from tfcourse.positions import RotaryEmbedding

__all__ = ["GPT", "GPTConfig"]


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of :class:`GPT`.

    Attributes:
        vocab_size: V.
        max_len: longest context (prompt plus generated tokens).
        d_model, num_heads, num_layers, d_ff: sizes of the stack.
        dropout: dropout after the embeddings and inside every layer.
        norm: ``"pre"`` (GPT-2 style, default), ``"post"`` or ``"deepnorm"``.
        positions: ``"learned"`` (GPT), ``"sinusoidal"`` or ``"rotary"``.
        tie_weights: share the token embedding with the output layer.
        scale_embeddings: multiply token embeddings by √D.
        attention_scale: ``"standard"`` (``1/√Dh``) or ``"logn"``: the entropy-invariant scale
            ``log(n) / (log(logn_train_len)·√Dh)`` of Su (2021), ``n`` being the number of tokens a
            position attends to (:func:`~tfcourse.attention.entropy_invariant_scale`).
        logn_train_len: the length at which the ``"logn"`` scale equals ``1/√Dh`` (usually the training
            length); unused with ``"standard"``.
        activation: feed-forward activation: ``"gelu"`` (exact), ``"gelu_tanh"`` (the tanh approximation,
            GPT-2's ``gelu_new``) or ``"relu"``.
        layer_norm_eps: LayerNorm epsilon.
    """

    vocab_size: int = 50257
    max_len: int = 1024
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    d_ff: int = 3072
    dropout: float = 0.1
    norm: str = "pre"
    positions: str = "learned"
    tie_weights: bool = True
    scale_embeddings: bool = True
    attention_scale: str = "standard"
    logn_train_len: int = 512
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide d_model={self.d_model}")
        if self.positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {self.positions!r}")
        if self.attention_scale not in ("standard", "logn"):
            raise ValueError(f"attention_scale must be 'standard' or 'logn', got {self.attention_scale!r}")
        if self.logn_train_len < 2:
            raise ValueError(f"logn_train_len must be at least 2 (log 1 = 0), got {self.logn_train_len}")

    @classmethod
    def tiny(cls, **overrides) -> GPTConfig:
        """A model small enough for tests and laptop experiments (about 0.1 M parameters)."""
        sizes = dict(vocab_size=64, max_len=256, d_model=64, num_heads=4, num_layers=2, d_ff=128, dropout=0.0)
        return cls(**{**sizes, **overrides})


class GPT(nn.Module):
    """Decoder-only Transformer language model; see :class:`GPTConfig`."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = TokenEmbedding(c.vocab_size, c.d_model, c.max_len, c.positions, c.scale_embeddings)
        self.dropout = nn.Dropout(c.dropout)
        rotary = RotaryEmbedding(c.d_model // c.num_heads) if c.positions == "rotary" else None
        self.decoder = Decoder(
            c.num_layers, c.d_model, c.num_heads, c.d_ff,
            norm=c.norm, dropout=c.dropout, activation=c.activation, cross_attention=False, rotary=rotary,
            layer_norm_eps=c.layer_norm_eps, logn_train_len=c.logn_train_len if c.attention_scale == "logn" else None,
        )  # fmt: skip
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.embed.tokens.weight

    @classmethod
    def from_hf(cls, hf_model) -> GPT:
        """Copy a Hugging Face ``GPT2LMHeadModel`` (or ``GPT2Model``) into an equivalent :class:`GPT`.

        GPT-2 is this class with learned positions, pre-LN, tied embeddings that are not scaled by √D,
        and the tanh approximation of GELU; its ``Conv1D`` weights are stored transposed (``in × out``)
        and the query, key and value projections fused into one. See :mod:`tfcourse.models._gpt2_hf`.
        """
        from tfcourse.models._gpt2_hf import load_gpt2

        return load_gpt2(cls, hf_model)

    def new_caches(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty :class:`~tfcourse.cache.KVCache` per layer, on this model's device and dtype."""
        weight = self.lm_head.weight
        c = self.config
        return [
            KVCache(batch_size, c.num_heads, max_len or c.max_len, c.d_model // c.num_heads,
                    dtype=weight.dtype, device=weight.device)
            for _ in range(c.num_layers)
        ]  # fmt: skip

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every position.

        Args:
            input_ids: ``(B, T)`` token ids: the whole sequence, or only the new tokens when ``caches``
                hold the earlier ones.
            valid: ``(B, Tk)`` bool, True at real tokens, covering the cached tokens too
                (``Tk = cached + T``). Left padding is how prompts of different lengths share a batch;
                positions then count real tokens only, so a padded row computes exactly what it would
                alone.
            positions: ``(T,)`` or ``(B, T)`` explicit positions (default: derived as above).
            caches: one :class:`~tfcourse.cache.KVCache` per layer, from :meth:`new_caches`.
            head_mask: ``(L, H)`` (or ``(L, B, H)``) multipliers of every head's output, bool or float:
                ``head_mask[l, h] = 0`` removes head ``h`` of layer ``l`` (Michel et al. 2019).

        Returns:
            ``(B, T, V)`` logits.
        """
        past = caches[0].length if caches else 0
        t = input_ids.shape[-1]
        if valid is not None and tuple(valid.shape) != (input_ids.shape[0], past + t):
            raise ValueError(
                f"valid must have shape (B, cached + T) = ({input_ids.shape[0]}, {past + t}), got {tuple(valid.shape)}"
            )
        if positions is None:
            if valid is None:
                positions = torch.arange(past, past + t, device=input_ids.device)  # (T,)
            else:
                positions = (valid.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T): real tokens only
        if valid is None:
            mask = None
        elif t == 1:  # one new token (a cached decoding step): its row of the mask, without a causal part
            mask = valid[:, None, None, :] & valid[:, -1:, None, None]  # (B, 1, 1, Tk) & (B, 1, 1, 1)
        else:
            mask = attention_mask(valid[:, past:], valid)  # (B, 1, T, Tk)
        x = self.dropout(self.embed(input_ids, positions))
        x = self.decoder(x, mask=mask, caches=caches, positions=positions, head_mask=head_mask)
        return self.lm_head(x)  # (B, T, V)

    def loss(
        self,
        input_ids: torch.Tensor,
        valid: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Mean next-token cross-entropy; padded targets are skipped with ``ignore_index=-100``.

        ``label_smoothing`` = ε mixes in the cross-entropy with the uniform distribution
        (:func:`tfcourse.losses.cross_entropy`).
        """
        logits = self(input_ids, valid=valid, head_mask=head_mask)[:, :-1]  # position n predicts token n + 1
        targets = input_ids[:, 1:]
        if valid is not None:
            targets = targets.masked_fill(~valid[:, 1:], -100)
        return cross_entropy(logits, targets, label_smoothing=label_smoothing, ignore_index=-100)
