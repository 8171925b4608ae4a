"""Named mistakes: what typical wrong answers compute, so that feedback can name the mistake.

A :class:`Mistake` pairs a message addressed to the learner with a function that reproduces the wrong
answer from the same inputs as the reference. When a learner's result differs from the reference but
matches a mistake's result, the check reports the mistake ("your scores are not divided by √d_k")
instead of a bare numerical difference.

The functions below follow the signatures of the reference functions named in their docstrings; exercise
authors wrap them (``lambda x, w_q, w_k, w_v: ...``) when an exercise's function takes other arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tfcourse.positions import apply_rotary, rotary_angles

__all__ = [
    "CAUSAL_INVERTED",
    "CAUSAL_NO_DIAGONAL",
    "CAUSAL_ONE_AHEAD",
    "ENTROPY_IN_BITS",
    "ENTROPY_NAN_AT_ZERO",
    "INVERTED_MASK",
    "MESSAGES",
    "MISSING_SCALE",
    "NAN_MASKED_ROWS",
    "NO_QUERY_PADDING",
    "ROPE_HALF_SPLIT",
    "ROPE_INTERLEAVED",
    "SCALED_BY_D",
    "SOFTMAX_OVER_QUERIES",
    "Mistake",
    "attention",
]

MESSAGES = {
    "missing-scale": "your scores are not divided by √d_k (the head width)",
    "scaled-by-d": "your scores are divided by d_k instead of √d_k",
    "softmax-over-queries": "your softmax normalises over the queries (dim=-2); each query's row must sum to 1 "
    "over the keys (dim=-1)",
    "inverted-mask": "your mask polarity is inverted: in tfcourse True means 'may attend', so masked_fill "
    "must use ~mask",
    "nan-masked-rows": "fully masked rows come out as NaN: with -inf everywhere, softmax computes 0/0; fill with "
    "torch.finfo(dtype).min and set those rows to zero",
    "causal-no-diagonal": "your causal mask excludes the diagonal: a token may attend to itself (use <=, or "
    "tril with diagonal=0)",
    "causal-one-ahead": "your causal mask lets each token see one step into the future (diagonal=1 instead of 0)",
    "causal-inverted": "your causal mask is inverted: True must mark the allowed keys (the lower triangle)",
    "no-query-padding": "you masked padded keys but forgot the padded queries: their rows must be all False",
    "rope-half-split": "you rotated the pairs (x[i], x[i + d/2]) (half-split, as in Llama); this exercise "
    "pairs neighbours (x[2i], x[2i+1]) (interleaved, as in the RoFormer paper)",
    "rope-interleaved": "you rotated neighbouring pairs (x[2i], x[2i+1]); this exercise pairs (x[i], x[i + d/2]) "
    "(half-split)",
    "entropy-bits": "your entropy is in bits (log2); the course measures entropy in nats (natural log)",
    "entropy-nan-at-zero": "your entropy is NaN where a probability is 0: 0·log 0 must count as 0 "
    "(torch.special.xlogy does this)",
    "mlm-swapped": "your 80/10/10 split is swapped: 80 % of the selected tokens should become [MASK], "
    "10 % a random token and 10 % stay unchanged",
}


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer.

    Attributes:
        name: a short identifier, e.g. ``"missing-scale"``.
        message: what the learner did, addressed to them; shown when their result matches ``fn``'s.
        fn: computes the wrong answer; takes the same arguments as the reference.
    """

    name: str
    message: str
    fn: Callable[..., object]

    def __call__(self, *args, **kwargs) -> object:
        return self.fn(*args, **kwargs)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    softmax_dim: int = -1,
    invert_mask: bool = False,
    fill: float | None = None,
    zero_masked_rows: bool = True,
) -> torch.Tensor:
    """Plain attention with knobs for the usual mistakes; the defaults give the right answer.

    Computed in float64 and returned in ``v``'s dtype. ``fill`` replaces the masked scores (default
    ``finfo.min``; ``-inf`` reproduces the NaN of fully masked rows when ``zero_masked_rows`` is False).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q.double(), k.double().transpose(-2, -1)) * scale  # (..., Tq, Tk)
    if mask is not None:
        mask = ~mask if invert_mask else mask
        fill_value = torch.finfo(torch.float64).min if fill is None else fill
        scores = scores.masked_fill(~mask, fill_value)
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask is not None and zero_masked_rows:
        weights = weights.masked_fill(~mask, 0.0)
    return torch.matmul(weights, v.double()).to(v.dtype)  # (..., Tq, Dv)


def _rope(x: torch.Tensor, positions: torch.Tensor, pairing: str) -> torch.Tensor:
    return apply_rotary(x, rotary_angles(positions, x.shape[-1]), pairing=pairing)


def _causal(t: int, diagonal: int) -> torch.Tensor:
    return torch.ones(t, t, dtype=torch.bool).tril(diagonal)


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1) / math.log(2)


def _entropy_nan(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.log()).sum(-1)  # 0 · log 0 = 0 · (-inf) = NaN


# Attention(q, k, v[, mask]) -> output, as tfcourse.scaled_dot_product_attention.
MISSING_SCALE = Mistake(
    "missing-scale", MESSAGES["missing-scale"], lambda q, k, v, mask=None: attention(q, k, v, mask, scale=1.0)
)
SCALED_BY_D = Mistake(
    "scaled-by-d", MESSAGES["scaled-by-d"], lambda q, k, v, mask=None: attention(q, k, v, mask, scale=1 / q.shape[-1])
)
SOFTMAX_OVER_QUERIES = Mistake(
    "softmax-over-queries",
    MESSAGES["softmax-over-queries"],
    lambda q, k, v, mask=None: attention(q, k, v, mask, softmax_dim=-2),
)
INVERTED_MASK = Mistake(
    "inverted-mask", MESSAGES["inverted-mask"], lambda q, k, v, mask: attention(q, k, v, mask, invert_mask=True)
)
NAN_MASKED_ROWS = Mistake(
    "nan-masked-rows",
    MESSAGES["nan-masked-rows"],
    lambda q, k, v, mask: attention(q, k, v, mask, fill=-math.inf, zero_masked_rows=False),
)

# causal_mask(t) -> (t, t) bool, as tfcourse.causal_mask.
CAUSAL_NO_DIAGONAL = Mistake("causal-no-diagonal", MESSAGES["causal-no-diagonal"], lambda t: _causal(t, -1))
CAUSAL_ONE_AHEAD = Mistake("causal-one-ahead", MESSAGES["causal-one-ahead"], lambda t: _causal(t, 1))
CAUSAL_INVERTED = Mistake("causal-inverted", MESSAGES["causal-inverted"], lambda t: ~_causal(t, 0))

# attention_mask(valid) -> (B, 1, T, T) bool from a (B, T) validity mask, as tfcourse.attention_mask.
NO_QUERY_PADDING = Mistake(
    "no-query-padding",
    MESSAGES["no-query-padding"],
    lambda valid: valid[:, None, None, :].expand(-1, 1, valid.shape[1], -1),  # (B, 1, T, T), keys only
)

# rope(x, positions) -> x rotated, for an exercise asking for one pairing.
ROPE_HALF_SPLIT = Mistake(
    "rope-half-split", MESSAGES["rope-half-split"], lambda x, positions: _rope(x, positions, "half")
)
ROPE_INTERLEAVED = Mistake(
    "rope-interleaved", MESSAGES["rope-interleaved"], lambda x, positions: _rope(x, positions, "interleaved")
)

# entropy(p) -> (...,) over the last axis, as tfcourse.entropy.
ENTROPY_IN_BITS = Mistake("entropy-bits", MESSAGES["entropy-bits"], _entropy_bits)
ENTROPY_NAN_AT_ZERO = Mistake("entropy-nan-at-zero", MESSAGES["entropy-nan-at-zero"], _entropy_nan)
