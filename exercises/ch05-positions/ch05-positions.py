# %% [markdown]
# # Exercise 5 · Position encodings
#
# This notebook goes with chapter 5. Attention on its own is blind to word order; you will write three ways of
# telling it where each token is:
#
# 1. the fixed sinusoidal table of the original Transformer;
# 2. rotary position embedding (RoPE), with the paper's interleaved pairing;
# 3. T5's relative position buckets;
# 4. and read one bucket off by hand.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse.positions`; the grader runs a few more tests of the same kind, and checks
# the numeric answer. tfcourse's position functions are switched off while your code is being checked.

# %% locked id=setup
import math

import torch

from tfcourse import positions as ref_positions
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs, mistakes

# %% [markdown]
# ## 1. The sinusoidal table (2 points)
#
# Return the `(T, D)` float32 table with, for positions `pos = 0 … T-1` and pair index `i = 0 … D/2 - 1`,
#
# $$P_{pos,\,2i} = \sin\!\big(pos / 10000^{2i/D}\big), \qquad P_{pos,\,2i+1} = \cos\!\big(pos / 10000^{2i/D}\big).$$
#
# Sines sit in the even columns and cosines in the odd ones, interleaved. `D` is even.


# %% solution id=sinusoidal_table
def sinusoidal_table(num_positions: int, d_model: int) -> torch.Tensor:
    """(T, D) float32 table: sin in even columns, cos in odd columns."""
    ### BEGIN SOLUTION
    pos = torch.arange(num_positions, dtype=torch.float64)  # (T,)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (D/2,)
    angles = pos[:, None] * inv_freq[None, :]  # (T, D/2)
    table = torch.empty(num_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()
    return table.float()
    ### END SOLUTION


# %% tests id=test_sinusoidal_table points=2
def _sines_and_cosines(t, d, base=10000.0):
    table = ref_positions.sinusoidal_positions(t, d, base)  # (T, D)
    return table[:, 0::2], table[:, 1::2]  # (T, D/2) each


_table_mistakes = [
    Mistake(
        "sin-cos-halves",
        "you put all the sines in the first half of the columns and all the cosines in the second; the table "
        "interleaves them: sin in column 2i, cos in column 2i+1",
        lambda t, d: torch.cat(_sines_and_cosines(t, d), dim=-1),
    ),
    Mistake(
        "sin-cos-swapped",
        "your sines and cosines are swapped: column 2i holds the sine, column 2i+1 the cosine",
        lambda t, d: torch.stack(_sines_and_cosines(t, d)[::-1], dim=-1).flatten(-2),
    ),
    Mistake(
        "exponent-doubled",
        "your frequencies use 10000^(4i/D): the column index 2i already contains the factor 2, so the exponent "
        "is 2i/D with i the pair index (or j/D with j = 0, 2, 4, … the even column)",
        lambda t, d: ref_positions.sinusoidal_positions(t, d, base=10000.0**2),  # 10000^(4i/D) = (10000²)^(2i/D)
    ),
]
check_function(
    sinusoidal_table,
    ref_positions.sinusoidal_positions,
    lambda: {"num_positions": inputs.size(2, 40), "d_model": 2 * inputs.size(2, 16)},
    name="sinusoidal table",
    mistakes=_table_mistakes,
    forbidden=guard.POSITIONS,
)
### BEGIN HIDDEN TESTS
# hidden: a single position, and the narrowest table
check_function(
    sinusoidal_table,
    ref_positions.sinusoidal_positions,
    lambda: {"num_positions": 1, "d_model": 2 * inputs.size(1, 8)},
    name="sinusoidal table",
    forbidden=guard.POSITIONS,
    trials=1,
)
check_function(
    sinusoidal_table,
    ref_positions.sinusoidal_positions,
    lambda: {"num_positions": inputs.size(2, 9), "d_model": 2},
    name="sinusoidal table",
    mistakes=_table_mistakes,
    forbidden=guard.POSITIONS,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Rotary position embedding (3 points)
#
# `x` holds queries or keys of shape `(B, H, T, Dh)` and `positions` the `(T,)` integer positions of the `T`
# tokens (they need not start at 0: with a cache, new tokens sit further along). RoPE rotates each **pair of
# neighbouring features** `(x[..., 2i], x[..., 2i+1])` of the token at position `m` by the angle `m·θ_i`, with
# `θ_i = 10000^(-2i/Dh)`:
#
# $$\begin{pmatrix} x'_{2i} \\ x'_{2i+1} \end{pmatrix} = \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\
# \sin m\theta_i & \cos m\theta_i \end{pmatrix} \begin{pmatrix} x_{2i} \\ x_{2i+1} \end{pmatrix}$$
#
# This is the RoFormer paper's *interleaved* pairing. (Llama's code pairs `x[i]` with `x[i + Dh/2]` instead;
# that is not what is asked here.) Compute the angles in float32, as `tfcourse` does, and return a tensor of
# `x`'s shape and dtype.


# %% solution id=rope
def rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate neighbouring feature pairs of x (B, H, T, Dh) by positions (T,) times θ_i."""
    ### BEGIN SOLUTION
    dh = x.shape[-1]
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh)  # (Dh/2,)
    angles = positions.float()[:, None] * inv_freq  # (T, Dh/2)
    cos, sin = angles.cos(), angles.sin()
    xf = x.float()
    even, odd = xf[..., 0::2], xf[..., 1::2]  # (B, H, T, Dh/2) each
    out = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (B, H, T, Dh/2, 2)
    return out.flatten(-2).to(x.dtype)  # (B, H, T, Dh)
    ### END SOLUTION


# %% tests id=test_rope points=3
def _rope_reference(x, positions):
    return ref_positions.apply_rotary(x, ref_positions.rotary_angles(positions, x.shape[-1]))


def _rope_inputs(dtype=torch.float32):
    b, h, t, dh = inputs.size(1, 3), inputs.size(1, 3), inputs.size(1, 6), 2 * inputs.size(1, 8)
    start = inputs.size(0, 20)
    return {"x": inputs.randn(b, h, t, dh, dtype=dtype), "positions": torch.arange(start, start + t)}


_rope_mistakes = [
    mistakes.ROPE_HALF_SPLIT,
    Mistake(
        "rope-backwards",
        "you rotate by -mθ_i instead of +mθ_i: the second component is x_2i·sin + x_2i+1·cos, the first "
        "x_2i·cos - x_2i+1·sin",
        lambda x, positions: ref_positions.apply_rotary(x, -ref_positions.rotary_angles(positions, x.shape[-1])),
    ),
]
check_function(
    rope, _rope_reference, _rope_inputs, name="rotated x", mistakes=_rope_mistakes, forbidden=guard.POSITIONS
)
### BEGIN HIDDEN TESTS
# hidden: float64 inputs keep their dtype (the angles stay float32, hence the tolerance)
check_function(
    rope,
    _rope_reference,
    lambda: _rope_inputs(torch.float64),
    name="rotated x (float64)",
    mistakes=_rope_mistakes,
    forbidden=guard.POSITIONS,
    atol=1e-5,
    rtol=1e-4,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. T5's relative position buckets (3 points)
#
# T5 adds to each score a learned bias that depends on the offset `rel = key_position - query_position`,
# through a bucket id. Write `t5_bucket(rel, bidirectional, num_buckets, max_distance)` for an integer tensor
# `rel` of any shape, returning `long` bucket ids of the same shape:
#
# - **Bidirectional** (encoder): halve `num_buckets` to `n`; keys *after* the query (`rel > 0`) add `n` to
#   their bucket (they use the upper half); the distance is `|rel|`.
# - **Unidirectional** (decoder): `n = num_buckets`; the distance is `max(-rel, 0)` (future keys count as 0).
# - With `max_exact = n // 2`: a distance `< max_exact` is its own bucket. A larger distance gets
#   `max_exact + int(log(distance / max_exact) / log(max_distance / max_exact) · (n - max_exact))`, computed in
#   float32 and truncated with `.long()`, then capped at `n - 1`.


# %% solution id=t5_bucket
def t5_bucket(rel: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket ids (long, shaped like rel) of the offsets key - query."""
    ### BEGIN SOLUTION
    rel = rel.long()
    if bidirectional:
        n = num_buckets // 2
        offset = (rel > 0).long() * n
        distance = rel.abs()
    else:
        n = num_buckets
        offset = torch.zeros_like(rel)
        distance = (-rel).clamp(min=0)
    max_exact = n // 2
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (n - max_exact)).long()).clamp(max=n - 1)
    return offset + torch.where(distance < max_exact, distance, large)
    ### END SOLUTION


# %% tests id=test_t5_bucket points=3
def _bucket_inputs(bidirectional=True):
    num_buckets = 2 * inputs.size(4, 16)
    max_distance = inputs.size(num_buckets, 4 * num_buckets)
    rel = inputs.randint(-3 * max_distance, 3 * max_distance, (inputs.size(10, 40),))
    rel = torch.cat([rel, torch.arange(-8, 9)])  # the small offsets around 0, every time
    return {"rel": rel, "bidirectional": bidirectional, "num_buckets": num_buckets, "max_distance": max_distance}


def _bucket_direction_swapped(rel, bidirectional, num_buckets, max_distance):
    return ref_positions.t5_relative_position_bucket(-rel, bidirectional, num_buckets, max_distance)


_bucket_mistakes = [
    Mistake(
        "t5-bucket-direction",
        "your directions are swapped: keys *after* the query (rel = key - query > 0) use the upper half of the "
        "buckets, and a decoder gives every future key distance 0",
        _bucket_direction_swapped,
    ),
]
check_function(
    t5_bucket,
    ref_positions.t5_relative_position_bucket,
    _bucket_inputs,
    name="bucket ids",
    mistakes=_bucket_mistakes,
    forbidden=guard.POSITIONS,
)
check_function(
    t5_bucket,
    ref_positions.t5_relative_position_bucket,
    lambda: _bucket_inputs(bidirectional=False),
    name="bucket ids (unidirectional)",
    mistakes=_bucket_mistakes,
    forbidden=guard.POSITIONS,
)
### BEGIN HIDDEN TESTS
# hidden: the missing cap (written out in full, so it is named only here), and T5's own settings on a full
# (Tq, Tk) grid of offsets, both directions
_bucket_mistakes = list(_bucket_mistakes)


def _bucket_no_cap(rel, bidirectional, num_buckets, max_distance):
    n = num_buckets // 2 if bidirectional else num_buckets
    offset = (rel > 0).long() * n if bidirectional else torch.zeros_like(rel)
    distance = rel.abs() if bidirectional else (-rel).clamp(min=0)
    max_exact = n // 2
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (n - max_exact)).long()
    return offset + torch.where(distance < max_exact, distance, large)


_bucket_mistakes.append(
    Mistake(
        "t5-bucket-no-cap",
        "distances beyond max_distance run past the last bucket: cap the log-spaced bucket at n - 1",
        _bucket_no_cap,
    )
)
for _bidirectional in (True, False):
    check_function(
        t5_bucket,
        ref_positions.t5_relative_position_bucket,
        lambda b=_bidirectional: _bucket_inputs(bidirectional=b),
        name="bucket ids",
        mistakes=_bucket_mistakes,
        forbidden=guard.POSITIONS,
    )
for _bidirectional in (True, False):
    check_function(
        t5_bucket,
        ref_positions.t5_relative_position_bucket,
        lambda b=_bidirectional: {
            "rel": ref_positions.relative_positions(inputs.size(1, 30), inputs.size(100, 300)),
            "bidirectional": b,
            "num_buckets": 32,
            "max_distance": 128,
        },
        name="bucket ids (T5 settings)",
        mistakes=_bucket_mistakes,
        forbidden=guard.POSITIONS,
        trials=2,
    )
### END HIDDEN TESTS

# %% [markdown]
# ## 4. One bucket by hand (1 point)
#
# In T5's encoder (`bidirectional=True`, `num_buckets=32`, `max_distance=128`), which bucket holds the key
# **5 positions after** the query (`rel = +5`)? Work it out from the rules above, then set `answer_bucket`.

# %% solution id=bucket
answer_bucket = None  # replace None with your answer
### BEGIN SOLUTION
answer_bucket = 21
### END SOLUTION

# %% tests id=test_bucket points=1
check_answered(answer_bucket, "answer_bucket")
### BEGIN HIDDEN TESTS
check_value(
    answer_bucket,
    21,
    "answer_bucket",
    rel=0,
    abs_tol=0.01,
    mistakes={
        5: "that is the bucket of a key 5 positions *before* the query; keys after it use the upper half (+16)",
        37: "the upper half starts at num_buckets / 2 = 16, not at 32",
    },
)
### END HIDDEN TESTS
