r"""FLASH (Hua et al. 2022, "Transformer Quality in Linear Time"): the gated attention unit and chunked
linear-time attention.

**The gated attention unit (GAU, §2).** A gated linear unit whose value path is mixed across positions
by a cheap single-head attention::

    U = φ(X W_u),  V = φ(X W_v)            (T, e), e = 2D, φ = SiLU
    Z = φ(X W_z)                           (T, s), shared and small (s = 128)
    Q = Z ⊙ γ_q + β_q,  K = Z ⊙ γ_k + β_k   per-dimension scale and offset
    A = relu²(Q Kᵀ / √s + b) / n           squared ReLU instead of softmax, normalised by length
    O = (U ⊙ A V) W_o

The gate ``U`` carries so much of the work that one head of width ``s`` suffices, and one GAU (with
``e = 2D``) replaces an attention layer plus a feed-forward layer.

**Mixed chunk attention (FLASH, §3.2).** Split the sequence into ``G = T/C`` chunks of size ``C``. Inside a
chunk, the exact quadratic GAU attention (cost ``T·C``); across chunks, *linear* attention, which needs
only a ``(s, e)`` summary ``K_hᵀ V_h`` per chunk (cost ``T·s·e``)::

    V̂_g = relu²(Q_g K_gᵀ / √s + b) V_g / C  +  Q'_g · mean_h (K'_hᵀ V_h)

with four scale-offset variants ``Q, K, Q', K'`` of the same ``Z``, ``h`` running over all chunks
(non-causal) or over the chunks before ``g`` (causal: an exclusive cumulative sum, so the cost stays
linear and nothing from chunk ``g`` onward leaks into it). No ``(T, T)`` tensor is ever formed.

Normalisation is where the paper's pseudo-code is silent; here the quadratic part divides by ``C`` (the
GAU's ``1/n`` for one chunk) and the linear part by the number of keys summed (``T`` non-causal,
``g·C`` causal). The causal variant is then exactly prefix-invariant: an output never depends on later
tokens, nor on how many there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse._checks import (
    check_bool,
    check_broadcastable,
    check_floating,
    check_min_rank,
    check_positive_int,
)
from tfcourse.attention import attention_scores
from tfcourse.masks import causal_mask
from tfcourse.models._embedding import check_token_ids
from tfcourse.positions import ShawRelativeBias, apply_rotary, rotary_angles

__all__ = [
    "FLASH",
    "GAU",
    "FLASHConfig",
    "ScaleOffset",
    "mixed_chunk_attention",
    "mixed_chunk_attention_matrix",
    "squared_relu_attention",
]


# --------------------------------------------------------------------------------------------------------------
# Pure functions


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, names=("q", "k", "v")) -> None:
    """Same leading dims, ``q``/``k`` of one width, ``k``/``v`` of one length."""
    for name, x in zip(names, (q, k, v), strict=True):
        check_floating(name, x)
        check_min_rank(name, x, 2)
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"{names[0]}, {names[1]}, {names[2]} must be (..., Tq, S), (..., Tk, S), (..., Tk, E) with the same "
            f"leading dims; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )


def _squared_relu_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    """The GAU's attention matrix ``relu²(scale·q kᵀ + bias) / normalizer`` in float32: ``(..., Tq, Tk)``.

    Arguments as in :func:`squared_relu_attention` (already checked). Masked entries are exactly 0 (no softmax, so no
    ``finfo.min`` is needed: a zero weight is simply a zero).
    """
    tq, tk = q.shape[-2], k.shape[-2]
    scores_shape = (*q.shape[:-1], tk)
    if bias is not None:
        check_floating("bias", bias)
        check_broadcastable("bias", bias, scores_shape)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    normalizer = tk if normalizer is None else normalizer
    if not normalizer > 0:
        raise ValueError(f"normalizer must be positive, got {normalizer}")
    if mask is not None:
        check_bool("mask", mask)
        check_broadcastable("mask", mask, scores_shape)
    if causal:
        mask = causal_mask(tq, tk, device=q.device) if mask is None else mask & causal_mask(tq, tk, device=q.device)
    weights = F.relu(attention_scores(q, k, bias, scale)).square() / normalizer  # (..., Tq, Tk), float32
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights


def squared_relu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    normalizer: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Quadratic GAU attention (Hua et al. 2022, §2): ``A V`` with ``A = relu²(scale·Q Kᵀ + b) / n``.

    Args:
        q: ``(..., Tq, S)`` queries (a scale-offset of the shared ``Z``).
        k: ``(..., Tk, S)`` keys.
        v: ``(..., Tk, E)`` values.
        bias: float, broadcastable to ``(..., Tq, Tk)``: relative position bias, added inside the relu.
        mask: bool, broadcastable to ``(..., Tq, Tk)``, True = may attend; masked weights are 0.
        causal: also apply the bottom-right aligned causal mask.
        scale: multiplies ``Q Kᵀ``; ``None`` means ``1/√S``.
        normalizer: ``n``; ``None`` means ``Tk``, the paper's sequence length. Note that with the
            default a causal output depends on the total length ``Tk``; pass a fixed ``n`` (e.g. the
            training length) to make it prefix-invariant.
        return_weights: also return ``A`` ``(..., Tq, Tk)`` in float32.

    Returns:
        ``(..., Tq, E)`` in ``v``'s dtype, or ``(output, weights)``.
    """
    _check_qkv(q, k, v)
    weights = _squared_relu_weights(q, k, bias=bias, mask=mask, causal=causal, scale=scale, normalizer=normalizer)
    out = torch.matmul(weights, v.float()).to(v.dtype)  # (..., Tq, Tk) @ (..., Tk, E) -> (..., Tq, E)
    return (out, weights) if return_weights else out


def _to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``(..., T, F)`` → ``(..., G, C, F)``, zero-padding T up to a multiple of C."""
    pad = -x.shape[-2] % chunk_size
    x = F.pad(x, (0, 0, 0, pad))  # (..., G·C, F)
    return x.view(*x.shape[:-2], x.shape[-2] // chunk_size, chunk_size, x.shape[-1])  # (..., G, C, F)


def _check_mixed(q_quad, k_quad, q_lin, k_lin, v, chunk_size, bias) -> None:
    check_positive_int("chunk_size", chunk_size)
    _check_qkv(q_quad, k_quad, v, names=("q_quad", "k_quad", "v"))
    _check_qkv(q_lin, k_lin, v, names=("q_lin", "k_lin", "v"))
    for name, x in (("q_quad", q_quad), ("q_lin", q_lin), ("k_lin", k_lin)):
        if x.shape != k_quad.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected k_quad's {tuple(k_quad.shape)}")
    if bias is not None:
        check_broadcastable("bias", bias, (*v.shape[:-2], -(-v.shape[-2] // chunk_size), chunk_size, chunk_size))


def _linear_summaries(k_lin: torch.Tensor, v: torch.Tensor, causal: bool, length: int) -> torch.Tensor:
    """Per-chunk means of ``K'_hᵀ V_h`` over the chunks each chunk may see: ``(..., G, S, E)`` float32.

    ``k_lin``: ``(..., G, C, S)``, ``v``: ``(..., G, C, E)`` (padding rows of ``v`` are zero).
    """
    g, c = v.shape[-3], v.shape[-2]
    kv = torch.einsum("...gcs,...gce->...gse", k_lin.float(), v.float())  # (..., G, S, E): one summary per chunk
    if not causal:
        return (kv.sum(dim=-3, keepdim=True) / length).expand_as(kv)  # (..., G, S, E): every chunk sees all
    before = torch.cat([torch.zeros_like(kv[..., :1, :, :]), kv[..., :-1, :, :].cumsum(dim=-3)], dim=-3)
    count = (torch.arange(g, device=v.device) * c).clamp(min=1)  # (G,) keys summed into chunk g's summary
    return before / count[:, None, None].to(kv.dtype)  # (..., G, S, E): chunks before g only (exclusive)


def mixed_chunk_attention(
    q_quad: torch.Tensor,
    k_quad: torch.Tensor,
    q_lin: torch.Tensor,
    k_lin: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int,
    causal: bool = False,
    *,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    r"""FLASH's mixed chunk attention (Hua et al. 2022, §3.2): time and memory linear in T.

    .. math:: \hat V_g = \frac{1}{C}\,\mathrm{relu}^2\!\left(\frac{Q_g K_g^\top}{\sqrt s} + B\right) V_g
              + Q'_g \frac{\sum_{h \in \mathcal H_g} K_h'^\top V_h}{|\mathcal H_g|\,C}

    with :math:`\mathcal H_g` all chunks (non-causal; the denominator is then T) or the chunks before
    ``g`` (causal; the quadratic part is then causally masked inside the chunk). A last partial chunk is
    zero-padded; zero values make the padded keys contribute nothing.

    Args:
        q_quad, k_quad: ``(..., T, S)`` queries and keys of the within-chunk quadratic attention.
        q_lin, k_lin: ``(..., T, S)`` queries and keys of the across-chunk linear attention.
        v: ``(..., T, E)`` values.
        chunk_size: C.
        causal: autoregressive variant.
        bias: within-chunk relative bias broadcastable to ``(..., G, C, C)``, usually ``(C, C)``.
        scale: multiplies ``Q Kᵀ`` of the quadratic part; ``None`` means ``1/√S``.

    Returns:
        ``(..., T, E)`` in ``v``'s dtype.
    """
    _check_mixed(q_quad, k_quad, q_lin, k_lin, v, chunk_size, bias)
    t = v.shape[-2]
    qq, kq, ql, kl, vc = (_to_chunks(x, chunk_size) for x in (q_quad, k_quad, q_lin, k_lin, v))  # (..., G, C, ·)
    quad = squared_relu_attention(qq, kq, vc.float(), bias=bias, causal=causal, scale=scale, normalizer=chunk_size)
    summaries = _linear_summaries(kl, vc, causal, t)  # (..., G, S, E)
    lin = torch.einsum("...gcs,...gse->...gce", ql.float(), summaries)  # (..., G, C, E)
    out = (quad + lin).flatten(-3, -2)[..., :t, :]  # (..., G·C, E) -> (..., T, E): drop the padding
    return out.to(v.dtype)


def mixed_chunk_attention_matrix(
    q_quad: torch.Tensor,
    k_quad: torch.Tensor,
    q_lin: torch.Tensor,
    k_lin: torch.Tensor,
    chunk_size: int,
    causal: bool = False,
    *,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """The dense ``(..., T, T)`` matrix that :func:`mixed_chunk_attention` applies to ``v`` without forming it.

    Quadratic blocks on the diagonal, rank-``S`` linear weights elsewhere (all chunks, or only earlier ones
    when ``causal``). It costs ``O(T²)``: for pictures and checks, not for use.

    Returns:
        float32 ``(..., T, T)``; ``mixed_chunk_attention(...) == matrix @ v``.
    """
    v_dummy = q_quad.new_zeros(*q_quad.shape[:-1], 1)
    _check_mixed(q_quad, k_quad, q_lin, k_lin, v_dummy, chunk_size, bias)
    t, c = q_quad.shape[-2], chunk_size
    qq, kq = _to_chunks(q_quad, c), _to_chunks(k_quad, c)  # (..., G, C, S)
    g = qq.shape[-3]
    blocks = _squared_relu_weights(qq, kq, bias=bias, causal=causal, scale=scale, normalizer=c)  # (..., G, C, C)
    eye = torch.eye(g, device=q_quad.device)[:, None, :, None]  # (G, 1, G, 1): chunk g meets chunk g only
    quad = (blocks[..., :, :, None, :] * eye).flatten(-4, -3).flatten(-2, -1)  # (..., G, C, G, C) -> (..., GC, GC)
    chunk = torch.arange(g * c, device=q_quad.device) // c  # (G·C,) chunk of each position
    if causal:
        seen = chunk[None, :] < chunk[:, None]  # (GC, GC): earlier chunks only
        count = (chunk * c).clamp(min=1)[:, None]  # (GC, 1)
    else:
        seen = torch.ones(g * c, g * c, dtype=torch.bool, device=q_quad.device)
        count = torch.full((g * c, 1), t, device=q_quad.device)
    ql, kl = F.pad(q_lin.float(), (0, 0, 0, g * c - t)), F.pad(k_lin.float(), (0, 0, 0, g * c - t))
    lin = torch.matmul(ql, kl.transpose(-2, -1)) * seen / count  # (..., GC, GC)
    return (quad + lin)[..., :t, :t]


# --------------------------------------------------------------------------------------------------------------
# Modules


class ScaleOffset(nn.Module):
    """``n`` cheap per-dimension transforms of one shared ``Z``: ``Z ⊙ γ_i + β_i`` (Hua et al. 2022, §2).

    γ starts as N(0, 0.02²) and β at zero, as in the paper's pseudo-code.
    """

    def __init__(self, width: int, count: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(check_positive_int("count", count), width) * 0.02)
        self.beta = nn.Parameter(torch.zeros(count, check_positive_int("width", width)))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(..., T, s)`` → ``count`` tensors of the same shape."""
        out = z[..., None, :] * self.gamma + self.beta  # (..., T, n, s)
        return out.unbind(dim=-2)


class GAU(nn.Module):
    """Gated attention unit (Hua et al. 2022, §2), quadratic or chunked (FLASH, §3.2).

    It is the whole sublayer body: the caller adds the norm and the residual (``x + GAU(LN(x))``).

    Args:
        d_model: D.
        expansion: ``e = expansion · D`` (2 in the paper).
        s: width of the shared ``Z`` (128 in the paper); even when ``rotary`` is on.
        chunk_size: ``None`` for quadratic attention (FLASH-Quad), else C for mixed chunk attention.
        causal: autoregressive masking.
        rotary: rotate queries and keys with RoPE (Su et al. 2021) at their absolute positions.
        max_distance: if set, add a learned relative bias (one scalar per offset in ``[-K, K]``).
        dropout: on the gated values before the output projection.
    """

    def __init__(
        self,
        d_model: int,
        *,
        expansion: int = 2,
        s: int = 128,
        chunk_size: int | None = None,
        causal: bool = False,
        rotary: bool = True,
        max_distance: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_model, self.s = check_positive_int("d_model", d_model), check_positive_int("s", s)
        self.e = check_positive_int("expansion", expansion) * d_model
        if chunk_size is not None:
            check_positive_int("chunk_size", chunk_size)
        if rotary and s % 2:
            raise ValueError(f"s must be even for rotary pairs, got s={s}")
        self.chunk_size, self.causal, self.rotary = chunk_size, causal, rotary
        self.proj = nn.Linear(d_model, 2 * self.e + s)  # U, V and Z in one product
        self.scale_offset = ScaleOffset(s, 2 if chunk_size is None else 4)
        self.rel_bias = None if max_distance is None else ShawRelativeBias(1, max_distance)
        self.out_proj = nn.Linear(self.e, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, T, D)``; ``positions`` ``(T,)`` for RoPE default to ``0 … T-1``."""
        check_floating("x", x)
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, D={self.d_model}), got {tuple(x.shape)}")
        t = x.shape[1]
        u, v, z = F.silu(self.proj(x)).split([self.e, self.e, self.s], dim=-1)  # (B, T, e), (B, T, e), (B, T, s)
        qk = self.scale_offset(z)  # (q, k) or (q_quad, k_quad, q_lin, k_lin), each (B, T, s)
        if self.rotary:
            positions = torch.arange(t, device=x.device) if positions is None else positions
            if positions.shape != (t,):
                raise ValueError(f"positions must have shape (T,) = ({t},), got {tuple(positions.shape)}")
            angles = rotary_angles(positions, self.s)  # (T, s/2)
            qk = tuple(apply_rotary(part, angles) for part in qk)
        if self.chunk_size is None:
            bias = None if self.rel_bias is None else self.rel_bias(t)[0, 0].to(x.dtype)  # (T, T)
            mixed = squared_relu_attention(*qk, v, bias=bias, causal=self.causal)  # (B, T, e)
        else:
            c = self.chunk_size
            bias = None if self.rel_bias is None else self.rel_bias(c)[0, 0].to(x.dtype)  # (C, C)
            mixed = mixed_chunk_attention(*qk, v, c, self.causal, bias=bias)  # (B, T, e)
        return self.out_proj(self.dropout(u * mixed))  # gate, then (B, T, e) -> (B, T, D)


@dataclass(frozen=True)
class FLASHConfig:
    """Hyper-parameters of :class:`FLASH`, a language model built from GAUs only.

    Attributes:
        vocab_size: V.
        d_model, num_layers: width and number of GAUs (two GAUs stand in for one attention + FFN layer).
        expansion, s: GAU widths ``e = expansion·D`` and ``s``.
        chunk_size: C for FLASH, ``None`` for FLASH-Quad.
        causal: autoregressive (language model) or bidirectional.
        rotary, max_distance: position information inside the GAUs.
        dropout: after the embeddings and inside each GAU.
        tie_weights: share the token embedding with the output layer.
    """

    vocab_size: int = 32000
    d_model: int = 768
    num_layers: int = 24
    expansion: int = 2
    s: int = 128
    chunk_size: int | None = 256
    causal: bool = True
    rotary: bool = True
    max_distance: int | None = None
    dropout: float = 0.0
    tie_weights: bool = True

    def __post_init__(self) -> None:
        check_positive_int("num_layers", self.num_layers)
        if self.chunk_size is not None:
            check_positive_int("chunk_size", self.chunk_size)
        if self.rotary and self.s % 2:
            raise ValueError(f"s must be even for rotary pairs, got s={self.s}")

    @classmethod
    def tiny(cls, **overrides) -> FLASHConfig:
        """Two GAUs of width 32 with ``s = 16`` and chunks of 8."""
        sizes = dict(vocab_size=64, d_model=32, num_layers=2, s=16, chunk_size=8)
        return cls(**{**sizes, **overrides})


class FLASH(nn.Module):
    """Pre-LN stack of GAUs, ``x = x + Dropout(GAU(LN(x)))``, with token embeddings and a (tied) output layer."""

    def __init__(self, config: FLASHConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)
        self.scale = math.sqrt(c.d_model)
        self.dropout = nn.Dropout(c.dropout)
        gau = dict(expansion=c.expansion, s=c.s, chunk_size=c.chunk_size, causal=c.causal, rotary=c.rotary)
        self.layers = nn.ModuleList(
            GAU(c.d_model, **gau, max_distance=c.max_distance, dropout=c.dropout) for _ in range(c.num_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(c.d_model) for _ in range(c.num_layers))
        self.final_norm = nn.LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.embed.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` token ids → ``(B, T, V)`` logits (next-token logits when ``causal``)."""
        check_token_ids("input_ids", input_ids, self.config.vocab_size)
        x = self.dropout(self.embed(input_ids) * self.scale)  # (B, T, D)
        for norm, gau in zip(self.norms, self.layers, strict=True):
            x = x + self.dropout(gau(norm(x)))
        return self.lm_head(self.final_norm(x))  # (B, T, V)
