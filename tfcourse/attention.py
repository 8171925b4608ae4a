"""Scaled dot-product attention and multi-head attention (Vaswani et al. 2017, §3.2).

The plain path (:func:`attention_reference`) spells out every step for teaching and returns the attention
weights on request. :func:`scaled_dot_product_attention` is what the rest of the library calls: it takes
PyTorch's fused ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU, a fused kernel
on CPU) whenever the weights are not asked for, and the plain path otherwise. Both give the same result,
including zeros, never NaN, for fully masked rows. Masks follow :mod:`tfcourse.masks`: bool, True = may
attend.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse._checks import (
    check_bool,
    check_broadcastable,
    check_floating,
    check_min_rank,
    check_positive_int,
    check_rank,
)
from tfcourse.cache import KVCache
from tfcourse.masks import causal_mask

__all__ = [
    "AttentionOutput",
    "MultiHeadAttention",
    "attention_from_scores",
    "attention_reference",
    "attention_scores",
    "entropy_invariant_scale",
    "keys_per_query",
    "merge_heads",
    "scaled_dot_product_attention",
    "split_heads",
]

_IMPLS = ("auto", "reference", "fused")


def entropy_invariant_scale(n: int | torch.Tensor, head_dim: int, train_len: int = 512) -> float | torch.Tensor:
    """Score scale that keeps attention entropy roughly constant as the sequence length ``n`` grows.

    Su (2021) shows that with the usual ``1/√d`` the entropy of an attention row grows like ``log n``, so a
    model trained at one length sees flatter (blurrier) attention at longer ones. Scaling by
    ``κ·log n / d`` cancels that growth; choosing κ so that the scale equals ``1/√d`` at the training
    length gives the practical form used here::

        λ(n) = log(n) / (log(train_len) · √d)

    Args:
        n: number of keys each query attends to (an int, or a tensor of per-row counts).
        head_dim: d, the query/key width.
        train_len: length at which λ equals the standard ``1/√d``.

    Returns:
        The scale, a float for an int ``n`` or a float tensor of ``n``'s shape.
    """
    check_positive_int("head_dim", head_dim)
    check_positive_int("train_len", train_len)
    if train_len < 2:
        raise ValueError(f"train_len must be at least 2 (log(1) = 0), got {train_len}")
    denominator = math.log(train_len) * math.sqrt(head_dim)
    if isinstance(n, torch.Tensor):
        if bool((n < 1).any()):
            raise ValueError(f"n must be at least 1 everywhere, got minimum {n.min().item()}")
        return torch.log(n.to(torch.float32)) / denominator
    check_positive_int("n", n)
    return math.log(n) / denominator


def keys_per_query(
    tq: int, tk: int, mask: torch.Tensor | None = None, causal: bool = False, device: torch.device | None = None
) -> torch.Tensor:
    """How many keys each query may attend to: the ``n`` of :func:`entropy_invariant_scale`, row by row.

    Args:
        tq, tk: numbers of queries and keys.
        mask: bool, broadcastable to ``(..., Tq, Tk)``; True = may attend.
        causal: also apply the bottom-right aligned causal mask (query ``i`` sees ``Tk - Tq + i + 1`` keys).
        device: where to build the count when ``mask`` is None.

    Returns:
        ``(..., Tq, 1)`` int64 counts, at least 1 (a fully masked row counts as 1).
    """
    device = mask.device if mask is not None else device
    allowed = torch.ones(tq, tk, dtype=torch.bool, device=device) if mask is None else mask
    if causal:
        allowed = allowed & causal_mask(tq, tk, device=device)  # (..., Tq, Tk)
    counts = allowed.sum(-1, keepdim=True)  # (..., Tq, 1)
    if counts.shape[-2] != tq:  # a mask without a query axis applies to every query
        counts = counts.expand(*counts.shape[:-2], tq, 1)
    return counts.clamp(min=1)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, T, H·Dh)`` → ``(B, H, T, Dh)``: give each head its own slice of the features."""
    check_rank("x", x, 3)
    b, t, d = x.shape
    if d % num_heads:
        raise ValueError(f"width {d} of x (shape {tuple(x.shape)}) is not divisible by num_heads={num_heads}")
    return x.view(b, t, num_heads, d // num_heads).transpose(1, 2)  # (B, T, H, Dh) -> (B, H, T, Dh)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, Dh)`` → ``(B, T, H·Dh)``: concatenate the heads' outputs."""
    check_rank("x", x, 4)
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, T, H, Dh) -> (B, T, H·Dh)


def _check_attention_args(q, k, v, mask, bias, scale, dropout_p) -> tuple[int, ...]:
    """Validate inputs of the attention functions; return the scores' shape ``(..., Tq, Tk)``."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_floating(name, x)
        check_min_rank(name, x, 2)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k need the same head width: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v need the same length: k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"q, k and v must share leading (batch, head) dimensions: q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    scores_shape = (*q.shape[:-1], k.shape[-2])
    if mask is not None:
        check_bool("mask", mask)
        check_broadcastable("mask", mask, scores_shape)
    if bias is not None:
        check_floating("bias", bias)
        check_broadcastable("bias", bias, scores_shape)
    if isinstance(scale, torch.Tensor):
        check_floating("scale", scale)
        check_broadcastable("scale", scale, (*q.shape[:-1], 1))
    elif scale is not None and not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be None, a number or a tensor, got {type(scale).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return scores_shape


def attention_scores(
    q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None = None, scale: float | torch.Tensor | None = None
) -> torch.Tensor:
    """The raw scores ``q·kᵀ·scale + bias`` in float32, before masking and softmax: ``(..., Tq, Tk)``."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q, k.transpose(-2, -1)).float() * scale  # (..., Tq, Dh) @ (..., Dh, Tk) -> (..., Tq, Tk)
    return scores if bias is None else scores + bias.float()


def attention_from_scores(
    scores: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked softmax of ``scores`` ``(..., Tq, Tk)``, then the weighted sum of ``v`` ``(..., Tk, Dv)``.

    Returns:
        ``(output, weights)``: output ``(..., Tq, Dv)`` in ``v``'s dtype and the float32 weights before
        dropout, with masked entries exactly 0.
    """
    if mask is not None:
        # The most negative finite float (not -inf) keeps a fully masked row finite: softmax makes it
        # uniform, and the masked_fill below turns it into zeros without NaN in forward or backward.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)  # (..., Tq, Tk), float32
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    output = torch.matmul(dropped.to(v.dtype), v)  # (..., Tq, Tk) @ (..., Tk, Dv) -> (..., Tq, Dv)
    return output, weights


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: float | torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain, step-by-step attention: ``softmax(q·kᵀ·scale + bias, masked) · v``.

    Arguments as in :func:`scaled_dot_product_attention` (``mask`` already includes any causal mask).

    Returns:
        ``(output, weights)``: output ``(..., Tq, Dv)`` in ``v``'s dtype and the float32 attention
        weights ``(..., Tq, Tk)`` before dropout, with masked entries exactly 0.
    """
    return attention_from_scores(attention_scores(q, k, bias, scale), v, mask, dropout_p)


def _fused_attention(q, k, v, mask, bias, scale, dropout_p, causal) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with tfcourse's mask semantics (fully masked rows → zeros)."""
    # The kernel wants masks with explicit (Tq, Tk) axes; a (Tk,) mask applies to every query.
    mask = mask if mask is None else mask.reshape((1,) * (2 - mask.dim()) + mask.shape)
    bias = bias if bias is None else bias.reshape((1,) * (2 - bias.dim()) + bias.shape)
    is_causal = causal and mask is None and bias is None and q.shape[-2] == k.shape[-2]
    if causal and not is_causal and q.shape[-2] > 1:  # a single query is the last position: it sees every key
        causal_part = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
        mask = causal_part if mask is None else mask & causal_part
    if isinstance(scale, torch.Tensor):
        q, scale = q * scale.to(q.dtype), 1.0  # a per-row scale folds into the queries
    row_has_key = None
    if mask is not None:
        row_has_key = mask.any(dim=-1, keepdim=True)  # (..., Tq, 1)
        # Let fully masked rows attend everywhere (no NaN in the kernel), then zero their output.
        mask = mask | ~row_has_key
    attn_mask = mask
    if bias is not None:
        attn_mask = bias.to(q.dtype)
        if mask is not None:
            attn_mask = attn_mask.masked_fill(~mask, torch.finfo(q.dtype).min)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
    if row_has_key is not None:
        out = out.masked_fill(~row_has_key, 0.0)
    return out


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: float | torch.Tensor | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    *,
    causal: bool = False,
    impl: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Attention of Vaswani et al. (2017), eq. 1, with masks and additive biases.

    .. math:: \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\lambda\, Q K^\top + b\right) V,
       \qquad \lambda = 1/\sqrt{d_k} \text{ by default.}

    Args:
        q: ``(..., Tq, Dh)`` queries, usually ``(B, H, Tq, Dh)``.
        k: ``(..., Tk, Dh)`` keys.
        v: ``(..., Tk, Dv)`` values.
        mask: bool, broadcastable to ``(..., Tq, Tk)``; True = may attend. A row with no True gives zeros.
        bias: float, broadcastable to ``(..., Tq, Tk)``; added to the scaled scores (relative positions).
        scale: ``None`` for ``1/√Dh``, a number, or a tensor broadcastable to ``(..., Tq, 1)`` (for
            instance :func:`entropy_invariant_scale` with per-row lengths).
        dropout_p: dropout on the attention weights; pass 0 at evaluation time.
        return_weights: also return the ``(..., Tq, Tk)`` float32 weights (forces the plain path).
        causal: also apply :func:`tfcourse.masks.causal_mask` (bottom-right aligned).
        impl: ``"auto"`` (fused unless weights are requested), ``"reference"`` or ``"fused"``.

    Returns:
        ``(..., Tq, Dv)`` output, or ``(output, weights)`` when ``return_weights`` is True.
    """
    _check_attention_args(q, k, v, mask, bias, scale, dropout_p)
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if impl == "fused" and return_weights:
        raise ValueError("impl='fused' cannot return weights; use impl='auto' or 'reference'")
    if impl == "fused" or (impl == "auto" and not return_weights):
        return _fused_attention(q, k, v, mask, bias, scale, dropout_p, causal)
    if causal:
        causal_part = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
        mask = causal_part if mask is None else mask & causal_part
    output, weights = attention_reference(q, k, v, mask, bias, scale, dropout_p)
    return (output, weights) if return_weights else output


def _head_multipliers(head_mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``head_mask`` ``(H,)`` or ``(B, H)`` as ``(B|1, H, 1, 1)`` multipliers in ``out``'s dtype."""
    if not isinstance(head_mask, torch.Tensor):
        raise TypeError(f"head_mask must be a tensor, got {type(head_mask).__name__}")
    b, h = out.shape[0], out.shape[1]
    if head_mask.dim() == 1 and head_mask.shape[0] == h:
        head_mask = head_mask[None]  # (1, H)
    elif head_mask.dim() != 2 or head_mask.shape[1] != h or head_mask.shape[0] not in (1, b):
        raise ValueError(
            f"head_mask must have shape (H,) = ({h},) or (B, H) = ({b}, {h}), got {tuple(head_mask.shape)}"
        )
    if not (head_mask.dtype == torch.bool or head_mask.is_floating_point()):
        raise TypeError(f"head_mask must be bool or floating point, got {head_mask.dtype}")
    return head_mask.to(device=out.device, dtype=out.dtype)[:, :, None, None]  # (B|1, H, 1, 1)


class AttentionOutput(NamedTuple):
    """What :class:`MultiHeadAttention` returns when weights, scores or a cache are involved."""

    output: torch.Tensor
    """``(B, Tq, D)``."""
    weights: torch.Tensor | None
    """``(B, H, Tq, Tk)`` float32 weights if requested, else None."""
    cache: KVCache | None
    """The cache passed in, now holding this call's keys and values too."""
    scores: torch.Tensor | None = None
    """``(B, H, Tq, Tk)`` float32 raw scores (scaled, bias added, before masking) if requested."""


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al. 2017, §3.2.2): H heads of width D/H, then an output projection.

    Each head projects the inputs into its own ``Dh = D/H`` subspace, attends there, and the concatenated
    head outputs pass through ``out_proj`` (the Ω_c of Prince 2023). Splitting D into H heads costs the
    same as one head of width D.

    Args:
        d_model: D, the width of the queries' input and of the output.
        num_heads: H; must divide ``d_model`` unless ``head_dim`` is given.
        kdim: width of the key input for cross-attention (defaults to D).
        vdim: width of the value input (defaults to ``kdim``).
        bias: whether the four projections have biases.
        dropout: dropout on the attention weights while training.
        scale: fixed score scale; ``None`` means ``1/√Dh``.
        rotary: an optional :class:`tfcourse.positions.RotaryEmbedding` applied to queries and keys
            (self-attention only).
        head_dim: Dh, the width of each head; defaults to ``D/H``. T5 sets it on its own (``d_kv``), so
            the heads' total width ``H·Dh`` may differ from D (the output projection maps it back to D).
        logn_train_len: if given, scale each query's scores by the entropy-invariant
            ``log(n) / (log(logn_train_len)·√Dh)`` (Su 2021), ``n`` being the number of keys that query may
            attend to (:func:`keys_per_query`); it equals ``1/√Dh`` where ``n = logn_train_len``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        scale: float | None = None,
        rotary: nn.Module | None = None,
        head_dim: int | None = None,
        logn_train_len: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        if logn_train_len is not None and scale is not None:
            raise ValueError(f"give either scale={scale} or logn_train_len={logn_train_len}, not both")
        check_positive_int("num_heads", num_heads)
        if head_dim is None and d_model % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide d_model={d_model}")
        head_dim = d_model // num_heads if head_dim is None else check_positive_int("head_dim", head_dim)
        inner = num_heads * head_dim  # H·Dh, the concatenated heads' width
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        kdim = d_model if kdim is None else check_positive_int("kdim", kdim)
        vdim = kdim if vdim is None else check_positive_int("vdim", vdim)
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, head_dim
        self.dropout, self.scale, self.rotary = dropout, scale, rotary
        if logn_train_len is not None:
            entropy_invariant_scale(logn_train_len, head_dim, logn_train_len)  # validates it (≥ 2)
        self.logn_train_len = logn_train_len
        self.q_proj = nn.Linear(d_model, inner, bias=bias)
        self.k_proj = nn.Linear(kdim, inner, bias=bias)
        self.v_proj = nn.Linear(vdim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, d_model, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        return_weights: bool = False,
        return_scores: bool = False,
        head_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | AttentionOutput:
        """Attend from ``query`` to ``key``/``value`` (self-attention when ``key`` is None).

        Args:
            query: ``(B, Tq, D)``.
            key: ``(B, Tk, kdim)`` for cross-attention; None for self-attention.
            value: ``(B, Tk, vdim)``; defaults to ``key``.
            mask: bool, broadcastable to ``(B, H, Tq, Tk)``, True = may attend; with a cache, Tk counts
                the cached positions too.
            bias: float additive bias broadcastable to ``(B, H, Tq, Tk)`` (relative position schemes).
            causal: apply the bottom-right aligned causal mask (correct with a cache as well).
            cache: a :class:`~tfcourse.cache.KVCache`. In self-attention this call's keys and values are
                appended and attention runs over everything cached. In cross-attention the cache holds the
                projected memory: the first call fills it, later calls reuse it and ignore ``key``/``value``.
            positions: ``(Tq,)`` or ``(B, Tq)`` positions for ``rotary``; default: after the cached ones.
            return_weights: return the attention weights (uses the plain path).
            return_scores: return the raw scores too (plain path), for residual attention (RealFormer).
            head_mask: ``(H,)`` or ``(B, H)`` multipliers of the heads' outputs before ``out_proj`` (bool or
                float): 0 removes a head, 1 keeps it (Michel et al. 2019, §2 "head masking"). A float mask
                that requires grad gives each head's importance as ``|∂loss/∂mask|``. The returned weights
                stay unmasked.

        Returns:
            The ``(B, Tq, D)`` output, or an :class:`AttentionOutput` when weights or scores are requested
            or a cache is given.
        """
        check_floating("query", query)
        check_rank("query", query, 3)
        if query.shape[-1] != self.d_model:
            raise ValueError(f"query has width {query.shape[-1]} (shape {tuple(query.shape)}), expected {self.d_model}")
        self_attention = key is None
        key = query if key is None else key
        value = key if value is None else value
        for name, x, width in (
            ("key", key, self.k_proj.in_features),
            ("value", value, self.v_proj.in_features),
        ):
            check_rank(name, x, 3)
            if x.shape[-1] != width or x.shape[0] != query.shape[0]:
                raise ValueError(f"{name} has shape {tuple(x.shape)}, expected (B={query.shape[0]}, T, {width})")
        if key.shape[1] != value.shape[1]:
            raise ValueError(f"key and value lengths differ: {tuple(key.shape)} vs {tuple(value.shape)}")
        if self.rotary is not None and not self_attention:
            raise ValueError("rotary position embeddings apply to self-attention only; got a separate key")

        q = split_heads(self.q_proj(query), self.num_heads)  # (B, H, Tq, Dh)
        if cache is not None and not self_attention and cache.length > 0:
            k, v = cache.keys[:, :, : cache.length], cache.values[:, :, : cache.length]  # projected memory
        else:
            k = split_heads(self.k_proj(key), self.num_heads)  # (B, H, Tk_new, Dh)
            v = split_heads(self.v_proj(value), self.num_heads)  # (B, H, Tk_new, Dh)
            if self.rotary is not None:
                if positions is None:
                    start = cache.length if cache is not None else 0
                    positions = torch.arange(start, start + query.shape[1], device=query.device)
                q, k = self.rotary(q, positions), self.rotary(k, positions)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, H, Tk, Dh): cached + new
        dropout_p = self.dropout if self.training else 0.0
        scale = self.scale
        if self.logn_train_len is not None:  # one scale per query row: (..., Tq, 1)
            n = keys_per_query(q.shape[-2], k.shape[-2], mask, causal, device=q.device)
            scale = entropy_invariant_scale(n, self.head_dim, self.logn_train_len).to(q.dtype)
        scores = None
        if return_scores:
            # Residual attention needs the raw scores, so run the plain path in its two visible steps.
            if causal:
                causal_part = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
                mask = causal_part if mask is None else mask & causal_part
            scores = attention_scores(q, k, bias, scale)  # (B, H, Tq, Tk)
            out, weights = attention_from_scores(scores, v, mask, dropout_p)
            weights = weights if return_weights else None
        else:
            result = scaled_dot_product_attention(
                q, k, v, mask, bias, scale, dropout_p, return_weights=return_weights, causal=causal
            )
            out, weights = result if return_weights else (result, None)
        if head_mask is not None:
            out = out * _head_multipliers(head_mask, out)  # (B, H, Tq, Dh) * (B|1, H, 1, 1)
        out = self.out_proj(merge_heads(out))  # (B, Tq, D)
        if return_weights or return_scores or cache is not None:
            return AttentionOutput(out, weights, cache, scores)
        return out

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """Build an equivalent module from ``torch.nn.MultiheadAttention``, copying its weights.

        Note the polarity difference: PyTorch's ``key_padding_mask`` and boolean ``attn_mask`` use
        True = *ignore*, the opposite of tfcourse's True = may attend.
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module must be nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn have no equivalent in tfcourse's attention")
        d = module.embed_dim
        has_bias = module.in_proj_bias is not None
        ours = cls(d, module.num_heads, kdim=module.kdim, vdim=module.vdim, bias=has_bias, dropout=module.dropout)
        ours = ours.to(device=module.out_proj.weight.device, dtype=module.out_proj.weight.dtype)
        with torch.no_grad():
            if module._qkv_same_embed_dim:
                weights = module.in_proj_weight.chunk(3, dim=0)
            else:
                weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
            biases = module.in_proj_bias.chunk(3) if has_bias else (None, None, None)
            for proj, w, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), weights, biases, strict=True):
                proj.weight.copy_(w)
                if b is not None:
                    proj.bias.copy_(b)
            ours.out_proj.weight.copy_(module.out_proj.weight)
            if has_bias:
                ours.out_proj.bias.copy_(module.out_proj.bias)
        return ours
