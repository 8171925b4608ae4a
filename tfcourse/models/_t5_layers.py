"""The building blocks of a T5 stack (Raffel et al. 2020, §2.1).

A T5 layer is a Pre-LN Transformer layer (``x = x + Dropout(F(Norm(x)))``) with four simplifications:

* the norm only rescales (RMS norm: no mean subtraction, no bias);
* no linear layer has a bias;
* attention scores are not divided by √Dh (the initialisation of the query projection absorbs it);
* positions enter only as a learned bias on the self-attention scores, computed by the first layer of
  each stack from T5's log-spaced buckets and reused by all the others.

:class:`T5Stack` adds dropout on the embeddings, the layers, and a final RMS norm followed by dropout;
dropout also acts on the attention weights, inside the feed-forward network and on every sublayer's output
before the residual sum, the placements of §2.1.
The model classes and the configuration live in :mod:`tfcourse.models.t5`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse.attention import AttentionOutput, MultiHeadAttention
from tfcourse.blocks import FeedForward
from tfcourse.cache import KVCache
from tfcourse.positions import T5RelativeBias

if TYPE_CHECKING:
    from tfcourse.models.t5 import T5Config

__all__ = ["FEED_FORWARDS", "GatedFeedForward", "RMSNorm", "T5Layer", "T5Stack", "init_t5_weights_"]

FEED_FORWARDS = ("relu", "gated-gelu")
"""T5 v1.0's ReLU feed-forward and T5 v1.1's gated-GELU one (Hugging Face's ``feed_forward_proj``)."""


class RMSNorm(nn.Module):
    """T5's layer norm: ``w ⊙ x / √(mean(x²) + ε)`` (root-mean-square norm, Zhang & Sennrich 2019).

    Unlike LayerNorm it does not subtract the mean and has no bias; only the scale ``w`` is learned. The
    mean square is accumulated in float32 so that half-precision inputs do not overflow or lose digits.
    """

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` → ``(..., D)`` in ``x``'s dtype."""
        mean_square = x.float().pow(2).mean(dim=-1, keepdim=True)  # (..., 1), float32
        normed = x.float() * torch.rsqrt(mean_square + self.eps)  # (..., D)
        return self.weight * normed.to(x.dtype)


class GatedFeedForward(nn.Module):
    """T5 v1.1's gated-GELU feed-forward (Shazeer 2020): ``down(Dropout(GELU(gate(x)) ⊙ up(x)))``.

    One projection is passed through GELU and multiplies the other elementwise, so the network learns
    which hidden units to let through at each position. No biases.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, T, D)``, each position independently."""
        # The tanh approximation of GELU is the one the v1.1 checkpoints were trained with.
        hidden = F.gelu(self.gate(x), approximate="tanh") * self.up(x)  # (B, T, d_ff)
        return self.down(self.dropout(hidden))


def _feed_forward(config: T5Config) -> nn.Module:
    if config.feed_forward == "relu":  # T5 v1.0: the original FFN without biases
        return FeedForward(config.d_model, config.d_ff, config.dropout, "relu", bias=False)
    return GatedFeedForward(config.d_model, config.d_ff, config.dropout)


def _attention_output(result: torch.Tensor | AttentionOutput) -> torch.Tensor:
    return result.output if isinstance(result, AttentionOutput) else result


class T5Layer(nn.Module):
    """One T5 encoder layer, or decoder layer with ``is_decoder=True`` (Raffel et al. 2020, §2.1).

    Args:
        config: the model's :class:`~tfcourse.models.t5.T5Config`.
        is_decoder: causal self-attention (with unidirectional position buckets) plus cross-attention.
        owns_position_bias: hold the stack's :class:`~tfcourse.positions.T5RelativeBias` (first layer only).
    """

    def __init__(self, config: T5Config, *, is_decoder: bool, owns_position_bias: bool) -> None:
        super().__init__()
        c = config

        def attention() -> MultiHeadAttention:  # no biases, no 1/√Dh scaling, heads of width d_kv
            return MultiHeadAttention(c.d_model, c.num_heads, head_dim=c.d_kv, bias=False, dropout=c.dropout, scale=1.0)

        self.self_attn_norm = RMSNorm(c.d_model, c.layer_norm_eps)
        self.self_attn = attention()
        self.position_bias = None
        if owns_position_bias:  # the decoder sees no future keys, so all its buckets go to past offsets
            buckets, distance = c.relative_attention_num_buckets, c.relative_attention_max_distance
            self.position_bias = T5RelativeBias(c.num_heads, buckets, distance, bidirectional=not is_decoder)
        self.cross_attn_norm = RMSNorm(c.d_model, c.layer_norm_eps) if is_decoder else None
        self.cross_attn = attention() if is_decoder else None
        self.ff_norm = RMSNorm(c.d_model, c.layer_norm_eps)
        self.ff = _feed_forward(c)
        self.dropout = nn.Dropout(c.dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the layer on ``x`` ``(B, T, D)``.

        Args:
            x: ``(B, T, D)`` hidden states.
            mask: bool self-attention mask broadcastable to ``(B, H, T, Tk)``, True = may attend (a decoder
                layer adds the causal mask itself).
            bias: the stack's ``(1, H, T, Tk)`` position bias; None in the first layer, which computes it.
            memory: ``(B, S, D)`` encoder output (decoder layers only).
            memory_mask: bool cross-attention mask broadcastable to ``(B, H, T, S)``.
            cache: self-attention :class:`~tfcourse.cache.KVCache`; ``Tk`` then counts the cached positions.
            cross_cache: cross-attention cache holding the projected memory.

        Returns:
            ``(x, bias)``: the ``(B, T, D)`` output and the position bias, for the next layer to reuse.
        """
        is_decoder = self.cross_attn is not None
        if is_decoder and memory is None:
            raise ValueError("a T5 decoder layer needs memory (the encoder output); got None")
        if bias is None:
            if self.position_bias is None:
                raise ValueError("bias is None, but only the first layer of a stack computes the position bias")
            past = 0 if cache is None else cache.length
            # The T new queries are the last of past + T keys, so their rows start at query offset `past`.
            bias = self.position_bias(x.shape[1], past + x.shape[1])  # (1, H, T, Tk)
        attended = self.self_attn(self.self_attn_norm(x), mask=mask, bias=bias, causal=is_decoder, cache=cache)
        x = x + self.dropout(_attention_output(attended))
        if is_decoder:  # no position bias here: encoder and decoder positions are not comparable
            attended = self.cross_attn(self.cross_attn_norm(x), memory, mask=memory_mask, cache=cross_cache)
            x = x + self.dropout(_attention_output(attended))
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        return x, bias


class T5Stack(nn.Module):
    """T5's encoder, or decoder with ``is_decoder=True``: dropout, layers, final RMS norm, dropout.

    Only ``layers[0]`` owns a position-bias table; the bias it computes is passed to every later layer
    (Raffel et al. 2020, §2.1: "we share the position embedding parameters across all layers").
    """

    def __init__(self, config: T5Config, *, is_decoder: bool) -> None:
        super().__init__()
        num_layers = config.num_decoder_layers if is_decoder else config.num_encoder_layers
        self.is_decoder = is_decoder
        self.layers = nn.ModuleList(
            T5Layer(config, is_decoder=is_decoder, owns_position_bias=i == 0) for i in range(num_layers)
        )
        self.final_norm = RMSNorm(config.d_model, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        cross_caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """``(B, T, D)`` embeddings → ``(B, T, D)`` hidden states; arguments as in :meth:`T5Layer.forward`,
        with one cache per layer."""
        for name, given in (("caches", caches), ("cross_caches", cross_caches)):
            if given is not None and len(given) != len(self.layers):
                raise ValueError(f"{name} has {len(given)} entries for {len(self.layers)} layers")
        x = self.dropout(x)
        bias = None  # computed by the first layer, then shared
        for i, layer in enumerate(self.layers):
            x, bias = layer(
                x,
                mask=mask,
                bias=bias,
                memory=memory,
                memory_mask=memory_mask,
                cache=None if caches is None else caches[i],
                cross_cache=None if cross_caches is None else cross_caches[i],
            )
        return self.dropout(self.final_norm(x))


@torch.no_grad()
def init_t5_weights_(model: nn.Module, d_model: int) -> None:
    """Mesh TensorFlow's initialisation, which T5 used: each weight ~ N(0, 1/fan_in), queries ÷ √Dh more.

    Since T5 does not divide the scores by √Dh, the query projection's smaller initial weights do it
    instead: at initialisation the scores have about unit variance, as in a scaled model. Token
    embeddings are N(0, 1) (PyTorch's default for ``nn.Embedding``); RMS norm scales start at 1.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
        elif isinstance(module, T5RelativeBias):
            nn.init.normal_(module.embedding.weight, std=d_model**-0.5)  # as Hugging Face does
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.q_proj.weight.mul_(module.head_dim**-0.5)
