"""Funnel-Transformer (Dai et al. 2020): an encoder that shortens its sequence block by block.

Between blocks the sequence is pooled with stride 2 (§2.2), so a block costs about half the one before
and the saved compute can buy a deeper or wider model. Only the *queries* of a block's first layer are
pooled ("pool-query-only"): its keys and values still come from the unpooled sequence, so every token
can pass information into the shorter sequence before it is dropped. [CLS] can be kept out of pooling
(``separate_cls``) so the token used for classification stays a single, full-resolution position.

Token-level tasks need one vector per input token again, so :class:`FunnelModel` adds a decoder (§2.3):
it repeats each position of the last block ``2^(blocks-1)`` times, adds the output of the first block
(full length) as a residual, and runs a few more layers. :class:`FunnelBaseModel` is the encoder alone.

Lengths for ``block_sizes=(…, …, …)``, 8 tokens and ``separate_cls=truncate_seq=True``::

    block 0:  [C] t1 t2 t3 t4 t5 t6 t7      8 positions
    block 1:  [C] (t1 t2) (t3 t4) (t5 t6)   4   (t7 is truncated so that the rest pairs up)
    block 2:  [C] (t1 t2 t3 t4)             2   ((t5 t6) is truncated in turn)

Positions and segments enter through relative attention (:mod:`tfcourse.models._funnel_attention`); the
pooling and up-sampling functions live in :mod:`tfcourse.models._funnel_pooling` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from tfcourse._checks import check_bool, check_nonnegative_int, check_positive_int
from tfcourse.models._embedding import check_token_ids
from tfcourse.models._funnel_attention import CLS_TOKEN_TYPE, FunnelLayer, TokenInfo
from tfcourse.models._funnel_pooling import (
    POOLING_MODES,
    min_poolable,
    pool_info,
    pool_sequence,
    pooled_length,
    upsample,
)

__all__ = [
    "CLS_TOKEN_TYPE",
    "FunnelBaseModel",
    "FunnelBlock",
    "FunnelConfig",
    "FunnelEncoding",
    "FunnelModel",
    "TokenInfo",
    "pool_sequence",
    "pooled_length",
    "upsample",
]

# --------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class FunnelConfig:
    """Hyper-parameters of :class:`FunnelBaseModel` and :class:`FunnelModel`.

    Attributes:
        vocab_size: V.
        block_sizes: layers per block; the sequence is pooled before every block but the first.
        num_decoder_layers: layers after up-sampling (:class:`FunnelModel` only).
        d_model, num_heads, head_dim, d_ff: widths; ``num_heads·head_dim`` need not equal ``d_model``.
        activation: feed-forward activation (``"gelu_tanh"`` as in the released models).
        dropout: on the embeddings and on each sublayer's output.
        attention_dropout: on the attention weights.
        activation_dropout: inside the feed-forward network.
        layer_norm_eps: LayerNorm epsilon.
        pooling: ``"mean"`` (the paper's default) or ``"max"``.
        separate_cls: keep [CLS] (position 0) out of pooling.
        truncate_seq: with ``separate_cls``, drop the last token before each pooling.
        pool_q_only: pool only the queries of a block's first layer (keys and values stay unpooled).
    """

    vocab_size: int = 30522
    block_sizes: tuple[int, ...] = (4, 4, 4)
    num_decoder_layers: int = 2
    d_model: int = 768
    num_heads: int = 12
    head_dim: int = 64
    d_ff: int = 3072
    activation: str = "gelu_tanh"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    layer_norm_eps: float = 1e-9
    pooling: str = "mean"
    separate_cls: bool = True
    truncate_seq: bool = True
    pool_q_only: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_sizes", tuple(self.block_sizes))  # lists are accepted, stored frozen
        if not self.block_sizes:
            raise ValueError("block_sizes must name at least one block, got ()")
        for size in self.block_sizes:
            check_positive_int("each of block_sizes", size)
        check_nonnegative_int("num_decoder_layers", self.num_decoder_layers)
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even for the sin/cos position features, got {self.d_model}")

    @classmethod
    def tiny(cls, **overrides) -> FunnelConfig:
        """A model small enough for tests and laptop experiments (about 0.08 M parameters)."""
        sizes = dict(
            vocab_size=64, block_sizes=(2, 2, 2), num_decoder_layers=2, d_model=32, num_heads=4, head_dim=8,
            d_ff=64, dropout=0.0, attention_dropout=0.0,
        )  # fmt: skip
        return cls(**{**sizes, **overrides})

    @classmethod
    def from_hf(cls, hf_config) -> FunnelConfig:
        """Translate a ``transformers.FunnelConfig``.

        Raises:
            ValueError: naming each option not implemented here: ``attention_type="factorized"``,
                ``block_repeats`` other than 1, activations other than ``gelu_new``, ``gelu``, ``relu``.
        """
        from tfcourse.models._funnel_hf import config_from_hf

        return config_from_hf(hf_config)

    def block_lengths(self, seq_len: int) -> tuple[int, ...]:
        """Sequence length inside each block for an input of ``seq_len`` tokens.

        Raises:
            ValueError: if the sequence is too short to be pooled before every block.
        """
        lengths = [check_positive_int("seq_len", seq_len)]
        for block in range(1, len(self.block_sizes)):
            if lengths[-1] < min_poolable(self.separate_cls):
                raise ValueError(
                    f"a sequence of {seq_len} tokens is too short for {len(self.block_sizes)} blocks: block {block} "
                    f"would pool {lengths[-1]} positions, and pooling needs at least "
                    f"{min_poolable(self.separate_cls)} (separate_cls={self.separate_cls})"
                )
            lengths.append(pooled_length(lengths[-1], separate_cls=self.separate_cls, truncate_seq=self.truncate_seq))
        return tuple(lengths)


# --------------------------------------------------------------------------------------------------------------
# Models


class FunnelEncoding(NamedTuple):
    """What :meth:`FunnelBaseModel.encode` returns."""

    hidden: torch.Tensor
    """``(B, T', D)`` output of the last block (shortened)."""
    valid: torch.Tensor
    """``(B, T')`` bool: which of those positions pool only real tokens."""
    first_block: torch.Tensor
    """``(B, T, D)`` output of the first block, the decoder's residual."""


class FunnelBlock(nn.Module):
    """Layers at one resolution; with ``pool=True`` the first layer pools its queries first.

    Args:
        num_layers: layers in the block.
        config: the model's :class:`FunnelConfig`.
        pool: pool before the first layer (every block but the first).
    """

    def __init__(self, num_layers: int, config: FunnelConfig, pool: bool) -> None:
        super().__init__()
        self.config, self.pool = config, pool
        self.layers = nn.ModuleList(_make_layer(config) for _ in range(check_positive_int("num_layers", num_layers)))

    def forward(self, hidden: torch.Tensor, info: TokenInfo) -> tuple[torch.Tensor, TokenInfo]:
        """``hidden`` ``(B, T, D)`` → ``(B, T', D)`` and the :class:`TokenInfo` of the ``T'`` positions."""
        layers = iter(self.layers)
        if self.pool:
            c = self.config
            pooled, pooled_valid = pool_sequence(
                hidden, info.valid, 2, c.pooling, separate_cls=c.separate_cls, truncate_seq=c.truncate_seq
            )  # (B, T', D), (B, T')
            pooled_info = pool_info(info, 2, c.separate_cls, c.truncate_seq)._replace(valid=pooled_valid)
            if c.pool_q_only:  # pooled queries read the unpooled keys and values
                hidden = next(layers)(pooled, pooled_info, hidden, info)
            else:
                hidden = next(layers)(pooled, pooled_info)
            info = pooled_info
        for layer in layers:
            hidden = layer(hidden, info)
        return hidden, info


def _make_layer(c: FunnelConfig) -> FunnelLayer:
    return FunnelLayer(
        c.d_model, c.num_heads, c.head_dim, c.d_ff,
        separate_cls=c.separate_cls, dropout=c.dropout, attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout, activation=c.activation, layer_norm_eps=c.layer_norm_eps,
    )  # fmt: skip


class FunnelBaseModel(nn.Module):
    """The Funnel encoder: embeddings, then blocks that halve the sequence; see :class:`FunnelConfig`.

    The embedding is a plain lookup followed by LayerNorm: positions and segments enter the attention
    scores instead. Load released weights with :meth:`from_hf`.
    """

    def __init__(self, config: FunnelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.embed_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(FunnelBlock(n, c, pool=b > 0) for b, n in enumerate(c.block_sizes))

    def _embed(
        self, input_ids: torch.Tensor, valid: torch.Tensor | None, token_type_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, TokenInfo]:
        """Check the inputs; return the embeddings ``(B, T, D)`` and the full-resolution token info."""
        check_token_ids("input_ids", input_ids, self.config.vocab_size)
        shape = tuple(input_ids.shape)
        self.config.block_lengths(shape[1])  # fail early, with a clear message, on too short a sequence
        if valid is None:
            valid = torch.ones(shape, dtype=torch.bool, device=input_ids.device)
        check_bool("valid", valid)
        if token_type_ids is None:
            token_type_ids = torch.zeros(shape, dtype=torch.long, device=input_ids.device)
        check_token_ids("token_type_ids", token_type_ids)
        for name, tensor in (("valid", valid), ("token_type_ids", token_type_ids)):
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must have the shape of input_ids {shape}, got {tuple(tensor.shape)}")
        positions = torch.arange(shape[1], device=input_ids.device)  # (T,)
        x = self.dropout(self.embed_norm(self.embed(input_ids)))  # (B, T, D)
        return x, TokenInfo(valid, token_type_ids, positions)

    def _run_blocks(self, x: torch.Tensor, info: TokenInfo) -> FunnelEncoding:
        first_block = None
        for block in self.blocks:
            x, info = block(x, info)
            first_block = x if first_block is None else first_block
        return FunnelEncoding(x, info.valid, first_block)

    def encode(
        self,
        input_ids: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> FunnelEncoding:
        """Run the encoder; see :meth:`forward` for the arguments."""
        return self._run_blocks(*self._embed(input_ids, valid, token_type_ids))

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states of the last block.

        Args:
            input_ids: ``(B, T)`` token ids.
            valid: ``(B, T)`` bool, True at real tokens (default: all).
            token_type_ids: ``(B, T)`` segment ids (default: all 0); :data:`CLS_TOKEN_TYPE` (2) marks
                [CLS], which then counts as the same segment as every token.

        Returns:
            ``(B, T', D)`` with ``T' = config.block_lengths(T)[-1]``; :meth:`encode` also says which of
            the ``T'`` positions are real.
        """
        return self.encode(input_ids, valid=valid, token_type_ids=token_type_ids).hidden

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> FunnelBaseModel:
        """Copy a Hugging Face ``FunnelBaseModel`` or ``FunnelModel`` (its encoder) into a new model.

        A task model (``FunnelForMaskedLM``, …) works too: its ``.funnel`` is used. The options supported
        are those of :meth:`FunnelConfig.from_hf`. :class:`FunnelModel` needs a model with a decoder.
        """
        from tfcourse.models._funnel_hf import load_from_hf

        return load_from_hf(cls, hf_model)


class FunnelModel(FunnelBaseModel):
    """Funnel encoder plus the up-sampling decoder (§2.3): one hidden state per input token.

    As in the original, padding is kept out of the real *pooled* positions but not out of the decoder's
    output: a real token that shares its last pooling window with padding gets that window's row back
    (computed, though masked as a key), and the decoder's attention spreads it to every real token.
    """

    def __init__(self, config: FunnelConfig) -> None:
        super().__init__(config)
        self.decoder = nn.ModuleList(_make_layer(config) for _ in range(config.num_decoder_layers))

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Full-length hidden states ``(B, T, D)``; arguments as in :meth:`FunnelBaseModel.forward`."""
        x, info = self._embed(input_ids, valid, token_type_ids)
        encoding = self._run_blocks(x, info)
        stride = 2 ** (len(self.blocks) - 1)
        hidden = upsample(encoding.hidden, stride, x.shape[1], separate_cls=self.config.separate_cls)
        hidden = hidden + encoding.first_block  # fine detail from before pooling (B, T, D)
        for layer in self.decoder:
            hidden = layer(hidden, info)
        return hidden
