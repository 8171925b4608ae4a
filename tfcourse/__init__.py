"""tfcourse: tested reference implementations for an open course on Transformers.

The public names are re-exported here; each lives in a module named after its concept
(:mod:`tfcourse.masks`, :mod:`tfcourse.attention`, :mod:`tfcourse.entropy`, :mod:`tfcourse.positions`,
:mod:`tfcourse.cache`, :mod:`tfcourse.pretraining`, :mod:`tfcourse.sparse`). Masks are boolean with
True = may attend throughout.
"""

from tfcourse.attention import (
    AttentionOutput,
    MultiHeadAttention,
    attention_reference,
    entropy_invariant_scale,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from tfcourse.blocks import Decoder, Encoder, FeedForward, TransformerLayer, deepnorm_constants
from tfcourse.cache import KVCache
from tfcourse.entropy import entropy, entropy_normalize
from tfcourse.masks import attention_mask, causal_mask, lengths_to_mask, mask_to_bias
from tfcourse.positions import (
    LearnedPositions,
    RotaryEmbedding,
    ShawRelativeBias,
    SinusoidalPositions,
    T5RelativeBias,
    apply_rotary,
    half_to_interleaved,
    interleaved_to_half,
    rel_shift,
    relative_positions,
    rotary_angles,
    shaw_key_logits,
    sinusoidal_positions,
    t5_relative_position_bucket,
)
from tfcourse.pretraining import (
    IGNORE_INDEX,
    IS_NEXT,
    NOT_NEXT,
    MaskedLM,
    PackedPair,
    SentencePair,
    SpanCorruption,
    merge_span_corruption,
    mlm_mask,
    noise_span_counts,
    nsp_pairs,
    pack_pair,
    random_spans_noise_mask,
    span_corruption,
)
from tfcourse.schedules import transformer_lr, warmup_inverse_sqrt
from tfcourse.sparse import (
    PatternDensity,
    SparsePattern,
    fixed_pattern,
    pattern_density,
    sparse_attention,
    strided_pattern,
)

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX",
    "IS_NEXT",
    "NOT_NEXT",
    "AttentionOutput",
    "Decoder",
    "Encoder",
    "FeedForward",
    "KVCache",
    "LearnedPositions",
    "MaskedLM",
    "MultiHeadAttention",
    "PackedPair",
    "PatternDensity",
    "RotaryEmbedding",
    "SentencePair",
    "ShawRelativeBias",
    "SinusoidalPositions",
    "SpanCorruption",
    "SparsePattern",
    "T5RelativeBias",
    "TransformerLayer",
    "apply_rotary",
    "attention_mask",
    "attention_reference",
    "causal_mask",
    "deepnorm_constants",
    "entropy",
    "entropy_invariant_scale",
    "entropy_normalize",
    "fixed_pattern",
    "half_to_interleaved",
    "interleaved_to_half",
    "lengths_to_mask",
    "mask_to_bias",
    "merge_heads",
    "merge_span_corruption",
    "mlm_mask",
    "noise_span_counts",
    "nsp_pairs",
    "pack_pair",
    "pattern_density",
    "random_spans_noise_mask",
    "rel_shift",
    "relative_positions",
    "rotary_angles",
    "scaled_dot_product_attention",
    "shaw_key_logits",
    "sinusoidal_positions",
    "span_corruption",
    "sparse_attention",
    "split_heads",
    "strided_pattern",
    "t5_relative_position_bucket",
    "transformer_lr",
    "warmup_inverse_sqrt",
]
