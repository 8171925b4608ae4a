"""The original encoder–decoder Transformer (Vaswani et al. 2017), trained with teacher forcing.

The encoder reads the whole source in parallel. The decoder is trained in parallel too: it receives the
target shifted right by one (``tgt_in`` starts with BOS) and predicts the target itself (``tgt_out``),
while the causal mask hides each position's future. At generation time it runs serially, one token per
step, feeding back its own predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tfcourse.blocks import Decoder, Encoder
from tfcourse.cache import KVCache
from tfcourse.losses import cross_entropy
from tfcourse.masks import attention_mask
from tfcourse.models._embedding import TokenEmbedding, check_token_ids

__all__ = ["Seq2Seq", "Seq2SeqConfig", "shift_targets"]


def shift_targets(
    targets: torch.Tensor, bos_id: int, pad_id: int, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing's inputs and labels from padded targets.

    Args:
        targets: ``(B, T)`` target ids (ending in EOS, right-padded with ``pad_id``).
        bos_id: the start token that opens every decoder input.
        pad_id: the padding id.
        ignore_index: label for padded positions (skipped by the loss).

    Returns:
        ``(tgt_in, tgt_out)``, both ``(B, T)``: ``tgt_in = [BOS, y_1, …, y_{T-1}]`` and ``tgt_out`` = the
        targets with padding replaced by ``ignore_index``.
    """
    check_token_ids("targets", targets)
    bos = torch.full_like(targets[:, :1], bos_id)
    tgt_in = torch.cat([bos, targets[:, :-1]], dim=1)  # (B, T): shifted right by one
    tgt_out = targets.masked_fill(targets == pad_id, ignore_index)
    return tgt_in, tgt_out


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Hyper-parameters of :class:`Seq2Seq` (defaults: the paper's base model)."""

    src_vocab_size: int = 37000
    tgt_vocab_size: int = 37000
    max_len: int = 512
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    norm: str = "post"
    positions: str = "sinusoidal"
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    tie_weights: bool = True

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide d_model={self.d_model}")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.tgt_vocab_size:
                raise ValueError(f"{name}={getattr(self, name)} is outside the target vocabulary")

    @classmethod
    def tiny(cls, **overrides) -> Seq2SeqConfig:
        """A model small enough for tests and the training demo."""
        sizes = dict(
            src_vocab_size=32, tgt_vocab_size=32, max_len=64, d_model=64, num_heads=4,
            num_encoder_layers=2, num_decoder_layers=2, d_ff=128, dropout=0.0,
        )  # fmt: skip
        return cls(**{**sizes, **overrides})


class Seq2Seq(nn.Module):
    """Encoder–decoder Transformer with sinusoidal positions and dropout after the embedding sum (§5.4)."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model, c.max_len, c.positions)
        self.tgt_embed = TokenEmbedding(c.tgt_vocab_size, c.d_model, c.max_len, c.positions)
        self.dropout = nn.Dropout(c.dropout)
        sizes = (c.d_model, c.num_heads, c.d_ff)
        self.encoder = Encoder(c.num_encoder_layers, *sizes, norm=c.norm, dropout=c.dropout)
        self.decoder = Decoder(c.num_decoder_layers, *sizes, norm=c.norm, dropout=c.dropout)
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.tgt_embed.tokens.weight

    def encode(self, src_ids: torch.Tensor, src_valid: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, S)`` source ids → ``(B, S, D)`` memory; ``src_valid`` defaults to ``src_ids != pad_id``."""
        src_valid = self.source_valid(src_ids, src_valid)
        x = self.dropout(self.src_embed(src_ids, torch.arange(src_ids.shape[1], device=src_ids.device)))
        return self.encoder(x, mask=attention_mask(src_valid))

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_valid: torch.Tensor,
        *,
        caches: list[KVCache] | None = None,
        cross_caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, T, V)`` for decoder inputs ``(B, T)`` (only the new ones when caches are given).

        Decoder inputs are padded only on the right (every row starts with BOS), so the causal mask already
        hides every pad from every real position; the pads' own outputs are skipped by the loss
        (``ignore_index``). The source side needs its padding mask, passed as ``src_valid``.
        """
        past = caches[0].length if caches else 0
        positions = torch.arange(past, past + tgt_in.shape[1], device=tgt_in.device)
        x = self.dropout(self.tgt_embed(tgt_in, positions))
        memory_mask = src_valid[:, None, None, :]  # (B, 1, 1, S): every query sees the real source tokens
        x = self.decoder(x, memory, memory_mask=memory_mask, caches=caches, cross_caches=cross_caches)
        return self.lm_head(x)

    def forward(self, src_ids: torch.Tensor, tgt_in: torch.Tensor, src_valid: torch.Tensor | None = None):
        """Teacher-forced logits ``(B, T, V)``."""
        src_valid = self.source_valid(src_ids, src_valid)
        return self.decode(tgt_in, self.encode(src_ids, src_valid), src_valid)

    def loss(
        self, src_ids: torch.Tensor, targets: torch.Tensor, reduction: str = "mean", *, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """Cross-entropy of teacher-forced predictions; padded targets are ignored (``ignore_index``).

        ``label_smoothing`` = ε as in Vaswani et al. (2017, §5.4), who train with ε = 0.1
        (:func:`tfcourse.losses.cross_entropy`).
        """
        tgt_in, tgt_out = shift_targets(targets, self.config.bos_id, self.config.pad_id)
        logits = self(src_ids, tgt_in)
        losses = cross_entropy(logits, tgt_out, label_smoothing=label_smoothing, ignore_index=-100, reduction=reduction)
        return losses  # scalar, or (B, T) with reduction="none"

    def new_caches(self, batch_size: int, source_len: int, max_len: int | None = None):
        """Empty self-attention caches and cross-attention caches, one of each per decoder layer."""
        c, weight = self.config, self.lm_head.weight
        head_dim = c.d_model // c.num_heads

        def make(length: int) -> KVCache:
            return KVCache(batch_size, c.num_heads, length, head_dim, dtype=weight.dtype, device=weight.device)

        layers = range(c.num_decoder_layers)
        return [make(max_len or c.max_len) for _ in layers], [make(source_len) for _ in layers]

    def source_valid(self, src_ids: torch.Tensor, src_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Check the source ids and return their validity mask (default: ``src_ids != pad_id``)."""
        check_token_ids("src_ids", src_ids, self.config.src_vocab_size)
        if src_valid is None:
            return src_ids != self.config.pad_id
        if src_valid.shape != src_ids.shape or src_valid.dtype != torch.bool:
            raise ValueError(
                f"src_valid must be a bool tensor shaped like src_ids {tuple(src_ids.shape)}, "
                f"got {src_valid.dtype} {tuple(src_valid.shape)}"
            )
        return src_valid
