"""tfcourse: tested reference implementations for an open course on Transformers.

The public names are re-exported here; each lives in a module named after its concept
(:mod:`tfcourse.masks`, :mod:`tfcourse.attention`, :mod:`tfcourse.entropy`, :mod:`tfcourse.positions`,
:mod:`tfcourse.cache`). Masks are boolean with True = may attend throughout.
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

__version__ = "0.1.0"

__all__ = [
    "AttentionOutput",
    "KVCache",
    "LearnedPositions",
    "MultiHeadAttention",
    "RotaryEmbedding",
    "ShawRelativeBias",
    "SinusoidalPositions",
    "T5RelativeBias",
    "apply_rotary",
    "attention_mask",
    "attention_reference",
    "causal_mask",
    "entropy",
    "entropy_invariant_scale",
    "entropy_normalize",
    "half_to_interleaved",
    "interleaved_to_half",
    "lengths_to_mask",
    "mask_to_bias",
    "merge_heads",
    "rel_shift",
    "relative_positions",
    "rotary_angles",
    "scaled_dot_product_attention",
    "shaw_key_logits",
    "sinusoidal_positions",
    "split_heads",
    "t5_relative_position_bucket",
]
