# %% [markdown]
# # Exercise 4 · Masks
#
# This notebook goes with chapter 4. Masks are `torch.bool` tensors in which **True means "may attend"**,
# broadcastable to the scores' shape `(B, H, Tq, Tk)`: rows are queries, columns are keys. You will write
#
# 1. a validity mask from sequence lengths;
# 2. the causal (look-ahead) mask;
# 3. the padding mask for self-attention, which masks padded keys *and* padded queries;
# 4. masked attention whose fully masked rows give zeros, never NaN;
# 5. and count the allowed pairs of a causal mask.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answer. tfcourse's mask and attention functions are switched off while your code is being checked.

# %% locked id=setup
import math

import torch

from tfcourse import attention as ref_attention
from tfcourse import masks as ref_masks
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs, mistakes

# %% [markdown]
# ## 1. Lengths to a mask (2 points)
#
# `lengths` is a `(B,)` tensor of integers and `max_len` the padded length `T`. Return the `(B, T)` bool
# mask that is True at the real tokens (positions `0 … lengths[b] - 1`) and False at the padding. Build it by
# broadcasting, without a Python loop.


# %% solution id=lengths_to_mask
def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True at real tokens."""
    ### BEGIN SOLUTION
    positions = torch.arange(max_len, device=lengths.device)  # (T,)
    return positions[None, :] < lengths[:, None]  # (1, T) < (B, 1) -> (B, T)
    ### END SOLUTION


# %% tests id=test_lengths_to_mask points=2
def _lengths_inputs():
    b, t = inputs.size(1, 5), inputs.size(1, 9)
    return {"lengths": inputs.lengths(b, t), "max_len": t}


_length_mistakes = [
    Mistake(
        "lengths-inclusive",
        "your mask marks one padded position as real: position i is real when i < length, not i <= length",
        lambda lengths, t: ref_masks.lengths_to_mask(lengths + 1, t + 1)[:, :t],  # one more real position
    ),
    Mistake(
        "lengths-inverted",
        "your mask is inverted: True must mark the real tokens",
        lambda lengths, t: ~ref_masks.lengths_to_mask(lengths, t),
    ),
]
check_function(
    lengths_to_mask,
    ref_masks.lengths_to_mask,
    _lengths_inputs,
    name="validity mask",
    mistakes=_length_mistakes,
    forbidden=guard.MASKS,
)
### BEGIN HIDDEN TESTS
# hidden: empty sequences and a padded length longer than every sequence
check_function(
    lengths_to_mask,
    ref_masks.lengths_to_mask,
    lambda: {"lengths": torch.tensor([0, 2, 0]), "max_len": 4},
    name="validity mask",
    mistakes=_length_mistakes,
    forbidden=guard.MASKS,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. The causal mask (2 points)
#
# Return the `(T, T)` bool mask in which query `i` may attend to key `j` exactly when `j <= i`: each token
# sees itself and the past, never the future.


# %% solution id=causal_mask
def causal_mask(t: int) -> torch.Tensor:
    """(T, T) bool, True on and below the diagonal."""
    ### BEGIN SOLUTION
    return torch.ones(t, t, dtype=torch.bool).tril()
    ### END SOLUTION


# %% tests id=test_causal_mask points=2
_causal_mistakes = [mistakes.CAUSAL_NO_DIAGONAL, mistakes.CAUSAL_ONE_AHEAD, mistakes.CAUSAL_INVERTED]
check_function(
    causal_mask,
    ref_masks.causal_mask,
    lambda: {"t": inputs.size(2, 12)},
    name="causal mask",
    mistakes=_causal_mistakes,
    forbidden=guard.MASKS,
)
### BEGIN HIDDEN TESTS
# hidden: a single token
check_function(
    causal_mask, ref_masks.causal_mask, lambda: {"t": 1}, name="causal mask", forbidden=guard.MASKS, trials=1
)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The padding mask for self-attention (2 points)
#
# `valid` is a `(B, T)` bool mask, True at real tokens. Return the `(B, 1, T, T)` mask for self-attention:
# query `i` may attend to key `j` only if **both** are real tokens. A padded query then has a row of all
# False; forgetting the query side is the classic bug.


# %% solution id=padding_mask
def padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, T) bool -> (B, 1, T, T) bool: query and key must both be real."""
    ### BEGIN SOLUTION
    return valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, T, 1) & (B, 1, 1, T)
    ### END SOLUTION


# %% tests id=test_padding_mask points=2
def _valid_inputs():
    b, t = inputs.size(2, 5), inputs.size(2, 8)
    return {"valid": ref_masks.lengths_to_mask(inputs.lengths(b, t, min_len=1), t)}


_padding_mistakes = [
    mistakes.NO_QUERY_PADDING,
    Mistake("padding-inverted", mistakes.MESSAGES["inverted-mask"], lambda valid: ~ref_masks.attention_mask(valid)),
]
check_function(
    padding_mask,
    ref_masks.attention_mask,
    _valid_inputs,
    name="padding mask",
    mistakes=_padding_mistakes,
    forbidden=guard.MASKS,
)
### BEGIN HIDDEN TESTS
# hidden: a batch with an empty sequence
check_function(
    padding_mask,
    ref_masks.attention_mask,
    lambda: {"valid": torch.tensor([[True, True, False], [False, False, False]])},
    name="padding mask",
    mistakes=_padding_mistakes,
    forbidden=guard.MASKS,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Masked attention (3 points)
#
# Write scaled dot-product attention for `q` `(B, H, Tq, d)`, `k` `(B, H, Tk, d)`, `v` `(B, H, Tk, d_v)` and a
# bool `mask` broadcastable to `(B, H, Tq, Tk)`. Masked keys must get weight exactly 0. A row with no allowed
# key at all (a padded query) must give an output of zeros, **not NaN**: fill masked scores with
# `torch.finfo(scores.dtype).min` rather than `-inf`, and zero those rows' weights.


# %% solution id=masked_attention
def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d, masked)·v with fully masked rows giving zeros: -> (B, H, Tq, d_v)."""
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).masked_fill(~mask, 0.0)  # (B, H, Tq, Tk)
    return weights @ v  # (B, H, Tq, d_v)
    ### END SOLUTION


# %% tests id=test_masked_attention points=3
def _reference_attention(q, k, v, mask):
    return ref_attention.attention_reference(q, k, v, mask)[0]


def _attention_inputs(causal=False):
    b, h, t, d = inputs.size(2, 3), inputs.size(1, 2), inputs.size(3, 7), inputs.size(2, 16)
    lengths = inputs.lengths(b, t)
    lengths[(int(torch.argmax(lengths)) + 1) % b] = inputs.size(0, t - 1)  # at least one padded sequence
    valid = ref_masks.lengths_to_mask(lengths, t)
    return {
        "q": inputs.randn(b, h, t, d),
        "k": inputs.randn(b, h, t, d),
        "v": inputs.randn(b, h, t, d),
        "mask": ref_masks.attention_mask(valid, causal=causal),
    }


_attention_mistakes = [mistakes.NAN_MASKED_ROWS, mistakes.INVERTED_MASK, mistakes.MISSING_SCALE]
check_function(
    masked_attention,
    _reference_attention,
    _attention_inputs,
    name="masked attention output",
    mistakes=_attention_mistakes,
    forbidden=guard.ATTENTION,
)
### BEGIN HIDDEN TESTS
# hidden: padding and causal masks together
check_function(
    masked_attention,
    _reference_attention,
    lambda: _attention_inputs(causal=True),
    name="masked attention output (causal)",
    mistakes=_attention_mistakes,
    forbidden=guard.ATTENTION,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 5. Counting allowed pairs (1 point)
#
# In a causal mask for a sequence of `T = 10` tokens (no padding), how many (query, key) pairs may attend?
# Set `answer_allowed_pairs` to a number.

# %% solution id=allowed_pairs
answer_allowed_pairs = None  # replace None with your answer
### BEGIN SOLUTION
answer_allowed_pairs = 55
### END SOLUTION

# %% tests id=test_allowed_pairs points=1
check_answered(answer_allowed_pairs, "answer_allowed_pairs")
### BEGIN HIDDEN TESTS
check_value(
    answer_allowed_pairs,
    55,
    "answer_allowed_pairs",
    rel=0,
    abs_tol=0.01,
    mistakes={
        45: "that leaves out the diagonal: every token may attend to itself",
        100: "that is every pair; the causal mask blocks the future",
        50: "count row by row: query i may attend to keys 0 … i, that is i + 1 keys",
    },
)
### END HIDDEN TESTS
