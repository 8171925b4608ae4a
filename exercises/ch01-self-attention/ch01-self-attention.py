# %% [markdown]
# # Exercise 1 · Self-attention from scratch
#
# This notebook goes with chapter 1. You will write the two steps of self-attention yourself and answer one
# question about symmetric scores:
#
# 1. `attention_weights(q, k)`: the attention matrix, a softmax over the keys of the scaled scores;
# 2. `self_attention(x, w_q, w_k, w_v)`: queries, keys and values as linear maps of `x`, then attention;
# 3. a short question about `K·Kᵀ`.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind. Use basic tensor
# operations (`@`, `.transpose`, `torch.softmax`): PyTorch's and tfcourse's attention functions are switched
# off while your code is being checked.

# %% locked id=setup
import math

import torch

from tfcourse import attention as ref_attention
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs, mistakes

# %% [markdown]
# ## 1. Attention weights (2 points)
#
# Queries `q` have shape `(..., Tq, d)` and keys `k` have shape `(..., Tk, d)`; any leading axes (a batch)
# broadcast. Return the `(..., Tq, Tk)` matrix `softmax(q·kᵀ / √d)`, where the softmax runs over the keys,
# so that each query's row sums to 1. Keep the inputs' dtype.


# %% solution id=attention_weights
def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Attention weights softmax(q·kᵀ/√d) over the keys: (..., Tq, d), (..., Tk, d) -> (..., Tq, Tk)."""
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    return torch.softmax(scores, dim=-1)
    ### END SOLUTION


# %% tests id=test_attention_weights points=2
def _weights(q, k):
    return ref_attention.attention_reference(q, k, k)[1].to(q.dtype)  # (..., Tq, Tk)


def _queries_and_keys(batch=True, dtype=torch.float32):
    b, tq, tk, d = inputs.size(1, 3), inputs.size(1, 7), inputs.size(1, 7), inputs.size(2, 32)
    lead = (b,) if batch else ()
    return {"q": inputs.randn(*lead, tq, d, dtype=dtype), "k": inputs.randn(*lead, tk, d, dtype=dtype)}


def _weights_variant(q, k, **knobs):
    # mistakes.attention with the identity as values returns the attention weights themselves
    return mistakes.attention(q, k, torch.eye(k.shape[-2], dtype=q.dtype), **knobs)  # (..., Tq, Tk)


_weight_mistakes = [
    Mistake("missing-scale", mistakes.MESSAGES["missing-scale"], lambda q, k: _weights_variant(q, k, scale=1.0)),
    Mistake(
        "softmax-over-queries",
        mistakes.MESSAGES["softmax-over-queries"],
        lambda q, k: _weights_variant(q, k, softmax_dim=-2),
    ),
]
check_function(
    attention_weights,
    _weights,
    _queries_and_keys,
    name="attention weights",
    mistakes=_weight_mistakes,
    forbidden=guard.ATTENTION,
)
### BEGIN HIDDEN TESTS
# hidden: no batch axis; float64 inputs keep their dtype (the reference sums in float32, hence the tolerance)
check_function(
    attention_weights,
    _weights,
    lambda: _queries_and_keys(batch=False),
    name="attention weights",
    mistakes=_weight_mistakes,
    forbidden=guard.ATTENTION,
)
check_function(
    attention_weights,
    _weights,
    lambda: _queries_and_keys(dtype=torch.float64),
    name="attention weights",
    mistakes=_weight_mistakes,
    forbidden=guard.ATTENTION,
    atol=1e-5,
    rtol=1e-4,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Self-attention (3 points)
#
# `x` has shape `(B, T, D)`. The projections `w_q` and `w_k` have shape `(D, d)` and `w_v` has shape
# `(D, d_v)`; they act on the right (`x @ w_q`). Compute queries, keys and values, then return the
# `(B, T, d_v)` output in which row `n` is the attention-weighted sum of the values,
# `Σ_m a[n, m] v_m`. You may call your `attention_weights` from part 1.


# %% solution id=self_attention
def self_attention(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
    """Single-head self-attention: (B, T, D) -> (B, T, d_v)."""
    ### BEGIN SOLUTION
    q, k, v = x @ w_q, x @ w_k, x @ w_v  # (B, T, d), (B, T, d), (B, T, d_v)
    return attention_weights(q, k) @ v  # (B, T, T) @ (B, T, d_v) -> (B, T, d_v)
    ### END SOLUTION


# %% tests id=test_self_attention points=3
def _self_attention(x, w_q, w_k, w_v):
    return ref_attention.attention_reference(x @ w_q, x @ w_k, x @ w_v)[0]


def _projections(dtype=torch.float32):
    b, t, d_model, d, d_v = (
        inputs.size(1, 3),
        inputs.size(2, 8),
        inputs.size(2, 16),
        inputs.size(2, 16),
        inputs.size(1, 8),
    )
    return {
        "x": inputs.randn(b, t, d_model, dtype=dtype),
        "w_q": inputs.randn(d_model, d, dtype=dtype) / math.sqrt(d_model),
        "w_k": inputs.randn(d_model, d, dtype=dtype) / math.sqrt(d_model),
        "w_v": inputs.randn(d_model, d_v, dtype=dtype),
    }


_symmetric = "you used the same projection for queries and keys, which makes the scores symmetric (K·Kᵀ)"
_sa_mistakes = [
    Mistake(
        "missing-scale",
        mistakes.MESSAGES["missing-scale"],
        lambda x, wq, wk, wv: mistakes.attention(x @ wq, x @ wk, x @ wv, scale=1.0),
    ),
    Mistake("keys-as-queries", _symmetric, lambda x, wq, wk, wv: mistakes.attention(x @ wk, x @ wk, x @ wv)),
    Mistake("queries-as-keys", _symmetric, lambda x, wq, wk, wv: mistakes.attention(x @ wq, x @ wq, x @ wv)),
    Mistake(
        "transposed-weights",
        "you multiplied the values by the transposed attention matrix: row n of the weights (query n) mixes the values",
        lambda x, wq, wk, wv: ref_attention.attention_reference(x @ wq, x @ wk, x @ wv)[1].mT.to(x.dtype) @ (x @ wv),
    ),
]
check_function(
    self_attention,
    _self_attention,
    _projections,
    name="self-attention output",
    mistakes=_sa_mistakes,
    forbidden=guard.ATTENTION,
)
### BEGIN HIDDEN TESTS
# hidden: float64 keeps its dtype
check_function(
    self_attention,
    _self_attention,
    lambda: _projections(torch.float64),
    name="self-attention output",
    mistakes=_sa_mistakes,
    forbidden=guard.ATTENTION,
    atol=1e-5,
    rtol=1e-4,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Symmetric scores (1 point)
#
# If we used the keys as queries too, the score matrix `S = K·Kᵀ` would be symmetric: token a would score
# token b exactly as b scores a. For a sequence of `T = 6` tokens, how many of the `T² = 36` scores can
# differ from one another at most (how many entries of a symmetric 6 × 6 matrix are free)?
# Set `answer_free_scores` to a number.

# %% solution id=free_scores
answer_free_scores = None  # replace None with your answer
### BEGIN SOLUTION
answer_free_scores = 21
### END SOLUTION

# %% tests id=test_free_scores points=1
check_answered(answer_free_scores, "answer_free_scores")
### BEGIN HIDDEN TESTS
check_value(
    answer_free_scores,
    21,
    "answer_free_scores",
    rel=0,
    abs_tol=0.01,
    mistakes={
        36: "that counts every entry, but S[a, b] = S[b, a], so the entries below the diagonal repeat those above",
        15: "the diagonal entries S[a, a] are free too",
        30: "the 6 diagonal entries are not repeated: count the upper triangle with the diagonal",
    },
)
### END HIDDEN TESTS
