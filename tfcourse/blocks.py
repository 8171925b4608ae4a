"""The Transformer layer and the encoder and decoder stacks built from it (Vaswani et al. 2017, §3.1).

A layer is two or three *sublayers* (self-attention, cross-attention in a decoder, feed-forward), each
wrapped in a residual connection and a LayerNorm. Where the norm sits is the main design choice:

* ``"post"`` (the original): ``x = LN(x + Dropout(F(x)))``. Gradients near the output are large at
  initialisation, which is why it needs learning-rate warm-up (Xiong et al. 2020).
* ``"pre"``: ``x = x + Dropout(F(LN(x)))``, with a final LN after the stack. Well-behaved gradients, trains
  without warm-up, used by GPT-2 and most later models.
* ``"deepnorm"`` (Wang et al. 2022): ``x = LN(α·x + Dropout(F(x)))`` with α > 1 and a β-scaled
  initialisation, which keeps Post-LN's quality while training stacks of hundreds of layers.

With ``residual_attention=True`` a layer adds the previous layer's raw attention scores to its own
(RealFormer, He et al. 2020) and returns its scores for the next layer.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse._checks import check_nonnegative_int, check_positive_int
from tfcourse.attention import AttentionOutput, MultiHeadAttention
from tfcourse.cache import KVCache

__all__ = [
    "Decoder",
    "DeepNormConstants",
    "Encoder",
    "FeedForward",
    "TransformerLayer",
    "activation_name",
    "deepnorm_constants",
    "deepnorm_init_",
]

_NORMS = ("post", "pre", "deepnorm")
_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


def activation_name(activation: object) -> str:
    """The name (a key of :class:`FeedForward`'s activations) of a PyTorch layer's ``activation``.

    ``nn.TransformerEncoderLayer`` and ``nn.TransformerDecoderLayer`` take the strings ``"relu"`` and
    ``"gelu"`` or any callable. The callables recognised are ``F.relu``/``torch.relu``/``nn.ReLU()``,
    ``F.gelu``/``nn.GELU()`` and their tanh approximations (``partial(F.gelu, approximate="tanh")``,
    ``nn.GELU(approximate="tanh")``), and ``F.silu``/``nn.SiLU()``. Anything else raises ``ValueError``
    naming it, instead of being replaced by a different function.
    """
    gelu_names = {"none": "gelu", "tanh": "gelu_tanh"}  # by GELU's `approximate` argument
    if isinstance(activation, str):
        if activation in ("relu", "gelu"):
            return activation
    elif activation is F.relu or activation is torch.relu or isinstance(activation, nn.ReLU):
        return "relu"
    elif activation is F.silu or isinstance(activation, nn.SiLU):
        return "silu"
    elif activation is F.gelu:
        return "gelu"
    elif isinstance(activation, nn.GELU):
        if activation.approximate in gelu_names:
            return gelu_names[activation.approximate]
    elif isinstance(activation, partial) and activation.func is F.gelu and not activation.args:
        if set(activation.keywords) <= {"approximate"}:
            approximate = activation.keywords.get("approximate", "none")
            if approximate in gelu_names:
                return gelu_names[approximate]
    raise ValueError(
        f"activation {activation!r} has no tfcourse equivalent; supported: 'relu', 'gelu', F.relu, torch.relu, "
        "nn.ReLU(), F.gelu, nn.GELU(approximate='none'|'tanh'), partial(F.gelu, approximate='tanh'), F.silu, "
        "nn.SiLU()"
    )


class FeedForward(nn.Module):
    """Position-wise feed-forward network (Vaswani et al. 2017, eq. 2): ``down(dropout(act(up(x))))``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu", bias: bool = True):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.up = nn.Linear(check_positive_int("d_model", d_model), check_positive_int("d_ff", d_ff), bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, T, D)``, each position independently."""
        return self.down(self.dropout(_ACTIVATIONS[self.activation](self.up(x))))


class DeepNormConstants(NamedTuple):
    """DeepNet's residual weight α and initialisation gain β for one stack."""

    alpha: float
    beta: float


def deepnorm_constants(num_encoder_layers: int = 0, num_decoder_layers: int = 0) -> dict[str, DeepNormConstants]:
    """α and β of Wang et al. (2022, table 1) for an encoder-only, decoder-only or encoder–decoder model.

    Returns:
        ``{"encoder": (α, β), "decoder": (α, β)}`` with the stacks that exist.
    """
    n, m = (
        check_nonnegative_int("num_encoder_layers", num_encoder_layers),
        check_nonnegative_int("num_decoder_layers", num_decoder_layers),
    )
    if n == 0 and m == 0:
        raise ValueError("deepnorm_constants needs at least one encoder or decoder layer")
    if m == 0:
        return {"encoder": DeepNormConstants((2 * n) ** 0.25, (8 * n) ** -0.25)}
    if n == 0:
        return {"decoder": DeepNormConstants((2 * m) ** 0.25, (8 * m) ** -0.25)}
    return {
        "encoder": DeepNormConstants(0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)),
        "decoder": DeepNormConstants((3 * m) ** 0.25, (12 * m) ** -0.25),
    }


def deepnorm_init_(layer: TransformerLayer, beta: float) -> None:
    """DeepNet initialisation: Xavier-normal with gain β for the feed-forward, value and output projections,
    gain 1 for queries and keys (Wang et al. 2022, §3)."""
    attentions = [a for a in (layer.self_attn, layer.cross_attn) if a is not None]
    for attention in attentions:
        for proj, gain in ((attention.q_proj, 1.0), (attention.k_proj, 1.0), (attention.v_proj, beta)):
            nn.init.xavier_normal_(proj.weight, gain=gain)
        nn.init.xavier_normal_(attention.out_proj.weight, gain=beta)
    nn.init.xavier_normal_(layer.ff.up.weight, gain=beta)
    nn.init.xavier_normal_(layer.ff.down.weight, gain=beta)


class TransformerLayer(nn.Module):
    """One encoder layer, or one decoder layer when ``cross_attention=True``.

    Dropout sits where the original paper puts it (§5.4): on every sublayer's output before the residual
    sum, on the attention weights, and inside the feed-forward network.

    Args:
        d_model: D.
        num_heads: H.
        d_ff: hidden width of the feed-forward network.
        norm: ``"post"``, ``"pre"`` or ``"deepnorm"`` (see the module docstring).
        dropout: dropout probability.
        activation: ``"relu"``, ``"gelu"``, ``"gelu_tanh"`` (the tanh approximation, GPT-2's and Funnel's)
            or ``"silu"``.
        cross_attention: add a sublayer attending to an encoder's output (decoder layers).
        residual_attention: RealFormer: add ``prev_scores`` to the self-attention scores and return the sum.
        deepnorm_alpha: α for ``norm="deepnorm"``.
        layer_norm_eps: LayerNorm epsilon.
        rotary: optional :class:`~tfcourse.positions.RotaryEmbedding` for the self-attention.
        attention_dropout: dropout on the attention weights; defaults to ``dropout``.
        ff_dropout: dropout inside the feed-forward network; defaults to ``dropout`` (BERT uses none there).
        logn_train_len: use the entropy-invariant log-n score scale in the self-attention, equal to
            ``1/√Dh`` at this many keys (see :class:`~tfcourse.attention.MultiHeadAttention`).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        norm: str = "post",
        dropout: float = 0.0,
        activation: str = "relu",
        cross_attention: bool = False,
        residual_attention: bool = False,
        deepnorm_alpha: float = 1.0,
        layer_norm_eps: float = 1e-5,
        rotary: nn.Module | None = None,
        attention_dropout: float | None = None,
        ff_dropout: float | None = None,
        logn_train_len: int | None = None,
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if norm != "deepnorm" and deepnorm_alpha != 1.0:
            raise ValueError(f"deepnorm_alpha={deepnorm_alpha} only applies to norm='deepnorm', got norm={norm!r}")
        self.norm, self.alpha, self.residual_attention = norm, deepnorm_alpha, residual_attention
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        ff_dropout = dropout if ff_dropout is None else ff_dropout
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, dropout=attention_dropout, rotary=rotary, logn_train_len=logn_train_len
        )
        self.self_attn_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout=attention_dropout) if cross_attention else None
        self.cross_attn_norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if cross_attention else None
        self.ff = FeedForward(d_model, d_ff, ff_dropout, activation)
        self.ff_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def _sublayer_input(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        return norm(x) if self.norm == "pre" else x

    def _residual(self, x: torch.Tensor, update: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        if self.norm == "pre":
            return x + self.dropout(update)
        return norm(self.alpha * x + self.dropout(update))  # post-LN, or DeepNorm with α ≠ 1

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        bias: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run the layer on ``x`` ``(B, T, D)``.

        Args:
            x: ``(B, T, D)`` hidden states.
            mask: bool self-attention mask broadcastable to ``(B, H, T, Tk)``, True = may attend.
            causal: add the (bottom-right aligned) causal mask to the self-attention.
            bias: additive self-attention bias ``(B|1, H, T, Tk)``; for residual attention, the previous
                layer's scores.
            memory: ``(B, S, D)`` encoder output (decoder layers only).
            memory_mask: bool cross-attention mask broadcastable to ``(B, H, T, S)``.
            cache: self-attention :class:`~tfcourse.cache.KVCache` for incremental decoding.
            cross_cache: cross-attention cache holding the projected memory.
            positions: positions for a rotary embedding.
            head_mask: ``(H,)`` or ``(B, H)`` multipliers of the self-attention heads' outputs (0 removes a
                head); see :meth:`~tfcourse.attention.MultiHeadAttention.forward`.

        Returns:
            ``(B, T, D)``, or ``(hidden, scores)`` for a residual-attention layer.
        """
        if (memory is None) != (self.cross_attn is None):
            raise ValueError(
                "memory must be given exactly when the layer has cross-attention "
                f"(cross_attention={self.cross_attn is not None}, memory given: {memory is not None})"
            )
        result = self.self_attn(
            self._sublayer_input(x, self.self_attn_norm),
            mask=mask,
            causal=causal,
            bias=bias,
            cache=cache,
            positions=positions,
            return_scores=self.residual_attention,
            head_mask=head_mask,
        )
        update, scores = (result.output, result.scores) if isinstance(result, AttentionOutput) else (result, None)
        x = self._residual(x, update, self.self_attn_norm)
        if self.cross_attn is not None:
            result = self.cross_attn(
                self._sublayer_input(x, self.cross_attn_norm), memory, mask=memory_mask, cache=cross_cache
            )
            update = result.output if isinstance(result, AttentionOutput) else result
            x = self._residual(x, update, self.cross_attn_norm)
        x = self._residual(x, self.ff(self._sublayer_input(x, self.ff_norm)), self.ff_norm)
        return (x, scores) if self.residual_attention else x

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer) -> TransformerLayer:
        """Copy an ``nn.TransformerEncoderLayer`` or ``nn.TransformerDecoderLayer`` (batch_first) into a new layer."""
        is_decoder = isinstance(layer, nn.TransformerDecoderLayer)
        if not (is_decoder or isinstance(layer, nn.TransformerEncoderLayer)):
            raise TypeError(f"layer must be a PyTorch Transformer layer, got {type(layer).__name__}")
        activation = activation_name(layer.activation)
        d_model, d_ff = layer.linear1.in_features, layer.linear1.out_features
        ours = cls(
            d_model,
            layer.self_attn.num_heads,
            d_ff,
            norm="pre" if layer.norm_first else "post",
            dropout=layer.dropout.p,
            activation=activation,
            cross_attention=is_decoder,
            layer_norm_eps=layer.norm1.eps,
        ).to(device=layer.linear1.weight.device, dtype=layer.linear1.weight.dtype)
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        norms = (
            [ours.self_attn_norm, ours.cross_attn_norm, ours.ff_norm]
            if is_decoder
            else [ours.self_attn_norm, ours.ff_norm]
        )
        theirs = [layer.norm1, layer.norm2, layer.norm3] if is_decoder else [layer.norm1, layer.norm2]
        with torch.no_grad():
            if is_decoder:
                ours.cross_attn = MultiHeadAttention.from_torch(layer.multihead_attn)
            for mine, other in zip(norms, theirs, strict=True):
                mine.load_state_dict(other.state_dict())
            ours.ff.up.load_state_dict(layer.linear1.state_dict())
            ours.ff.down.load_state_dict(layer.linear2.state_dict())
        return ours


class _Stack(nn.Module):
    """Layers applied in order, an optional final LayerNorm, and the RealFormer score hand-over."""

    causal = False
    stack_name = "encoder"

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        norm: str = "post",
        final_norm: bool | None = None,
        deepnorm: DeepNormConstants | None = None,
        rotary: nn.Module | None = None,
        cross_attention: bool = False,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        check_positive_int("num_layers", num_layers)
        if norm == "deepnorm" and deepnorm is None:
            deepnorm = deepnorm_constants(**{f"num_{self.stack_name}_layers": num_layers})[self.stack_name]
        alpha = deepnorm.alpha if norm == "deepnorm" else 1.0
        self.layers = nn.ModuleList(
            TransformerLayer(
                d_model,
                num_heads,
                d_ff,
                norm=norm,
                cross_attention=cross_attention,
                deepnorm_alpha=alpha,
                rotary=rotary,
                **layer_kwargs,
            )
            for _ in range(num_layers)
        )
        if norm == "deepnorm":
            for layer in self.layers:
                deepnorm_init_(layer, deepnorm.beta)
        # Pre-LN leaves the residual stream un-normalised, so the stack ends with one more LayerNorm.
        final_norm = norm == "pre" if final_norm is None else final_norm
        eps = layer_kwargs.get("layer_norm_eps", 1e-5)
        self.final_norm = nn.LayerNorm(d_model, eps=eps) if final_norm else None
        self.residual_attention = layer_kwargs.get("residual_attention", False)

    def _run(self, x: torch.Tensor, caches, cross_caches, **kwargs) -> torch.Tensor:
        for name, given in (("caches", caches), ("cross_caches", cross_caches)):
            if given is not None and len(given) != len(self.layers):
                raise ValueError(f"{name} has {len(given)} entries for {len(self.layers)} layers")
        scores = kwargs.pop("bias", None)
        head_mask = kwargs.pop("head_mask", None)
        if head_mask is not None and (
            not isinstance(head_mask, torch.Tensor) or head_mask.shape[:1] != (len(self.layers),)
        ):
            shape = tuple(head_mask.shape) if isinstance(head_mask, torch.Tensor) else type(head_mask).__name__
            raise ValueError(f"head_mask must have shape (L, H) or (L, B, H) with L = {len(self.layers)}, got {shape}")
        for i, layer in enumerate(self.layers):
            if head_mask is not None:
                kwargs["head_mask"] = head_mask[i]  # (H,) or (B, H)
            out = layer(
                x,
                bias=scores,
                cache=None if caches is None else caches[i],
                cross_cache=None if cross_caches is None else cross_caches[i],
                causal=self.causal,
                **kwargs,
            )
            x, scores = out if self.residual_attention else (out, scores)
        return x if self.final_norm is None else self.final_norm(x)

    @classmethod
    def from_torch(cls, stack: nn.TransformerEncoder | nn.TransformerDecoder):
        """Copy a PyTorch encoder or decoder stack (its layers and final norm) into a new stack."""
        first = TransformerLayer.from_torch(stack.layers[0])
        ours = cls(
            len(stack.layers),
            first.self_attn.d_model,
            first.self_attn.num_heads,
            first.ff.up.out_features,
            norm=first.norm,
            final_norm=stack.norm is not None,
            activation=first.ff.activation,
            layer_norm_eps=first.ff_norm.eps,
        )
        ours.layers = nn.ModuleList(TransformerLayer.from_torch(layer) for layer in stack.layers)
        if stack.norm is not None:
            ours.final_norm.load_state_dict(stack.norm.state_dict())
        return ours.to(device=first.ff.up.weight.device, dtype=first.ff.up.weight.dtype)


class Encoder(_Stack):
    """A stack of bidirectional self-attention layers (BERT, the original encoder).

    Args:
        num_layers: number of layers.
        d_model, num_heads, d_ff: widths, as in :class:`TransformerLayer`.
        norm: ``"post"``, ``"pre"`` or ``"deepnorm"``; DeepNorm's α and β come from
            :func:`deepnorm_constants` for this stack unless ``deepnorm`` is given.
        final_norm: end with a LayerNorm (default: only for ``norm="pre"``).
        deepnorm: explicit constants (for an encoder–decoder model, see :func:`deepnorm_constants`).
        rotary: optional rotary embedding shared by all layers.
        **layer_kwargs: ``dropout``, ``attention_dropout``, ``ff_dropout``, ``activation``,
            ``residual_attention``, ``layer_norm_eps``.
    """

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, T, D)``.

        ``mask`` is as in :class:`TransformerLayer`, e.g. from :func:`tfcourse.masks.attention_mask`.
        ``bias`` is added to every layer's scores (T5 shares one position bias across layers); with
        residual attention it enters the first layer and flows on inside the scores. ``head_mask``
        ``(L, H)`` or ``(L, B, H)`` multiplies each layer's self-attention heads' outputs (0 removes a head).
        """
        return self._run(x, None, None, mask=mask, bias=bias, head_mask=head_mask)


class Decoder(_Stack):
    """A stack of causal self-attention layers, each followed by cross-attention to an encoder's output.

    With ``cross_attention=False`` it is a decoder-only stack (GPT). Arguments as in :class:`Encoder`.
    """

    causal = True
    stack_name = "decoder"

    def __init__(self, *args, cross_attention: bool = True, **kwargs) -> None:
        super().__init__(*args, cross_attention=cross_attention, **kwargs)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        cross_caches: list[KVCache] | None = None,
        positions: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode ``x`` ``(B, T, D)``, attending causally to itself and fully to ``memory`` ``(B, S, D)``.

        Args:
            x: ``(B, T, D)`` target-side hidden states.
            memory: ``(B, S, D)`` encoder output; None for a decoder-only stack.
            mask: bool self-attention mask (padding); the causal mask is always added.
            memory_mask: bool cross-attention mask, usually the encoder's key padding.
            bias: additive self-attention bias, as in :meth:`Encoder.forward`.
            caches: one self-attention :class:`~tfcourse.cache.KVCache` per layer.
            cross_caches: one cross-attention cache per layer (the projected memory, filled once).
            positions: positions for a rotary embedding.
            head_mask: ``(L, H)`` or ``(L, B, H)`` multipliers of each layer's self-attention heads' outputs
                (0 removes a head; cross-attention heads are untouched).
        """
        return self._run(
            x,
            caches,
            cross_caches,
            mask=mask,
            bias=bias,
            memory=memory,
            memory_mask=memory_mask,
            positions=positions,
            head_mask=head_mask,
        )
