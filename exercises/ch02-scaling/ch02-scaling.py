# %% [markdown]
# # Exercise 2 · Scaling the scores
#
# This notebook goes with chapter 2. You will
#
# 1. work out the variance of a dot product of random vectors;
# 2. write the scaled scores `q·kᵀ / √d`;
# 3. measure how spread out an attention row is, with its entropy;
# 4. write the entropy-invariant scale that keeps that spread steady as sequences grow.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answers.

# %% locked id=setup
import math

import torch

from tfcourse import attention as ref_attention
from tfcourse.entropy import entropy as reference_entropy
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs, mistakes

# %% [markdown]
# ## 1. The variance of a dot product (1 point)
#
# The entries of `q` and `k` are independent, with mean 0 and variance 1, and both vectors have length
# `d = 64`. What is the variance of the score `q·k`? Set `answer_variance` to a number.

# %% solution id=variance
answer_variance = None  # replace None with your answer
### BEGIN SOLUTION
answer_variance = 64
### END SOLUTION

# %% tests id=test_variance points=1
check_answered(answer_variance, "answer_variance")
### BEGIN HIDDEN TESTS
check_value(
    answer_variance,
    64,
    "answer_variance",
    mistakes={
        8: "8 = √64 is the standard deviation; the question asks for the variance",
        1: "1 is the variance after dividing the score by √d; the question asks about the raw score q·k",
    },
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Scaled scores (2 points)
#
# Return the scores `q·kᵀ / √d` of shape `(..., Tq, Tk)` for queries `(..., Tq, d)` and keys `(..., Tk, d)`,
# in the inputs' dtype. Dividing by `√d` brings the variance you found above back to 1.


# %% solution id=scaled_scores
def scaled_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product scores: (..., Tq, d), (..., Tk, d) -> (..., Tq, Tk)."""
    ### BEGIN SOLUTION
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    ### END SOLUTION


# %% tests id=test_scaled_scores points=2
def _scores(q, k):
    return ref_attention.attention_scores(q, k).to(q.dtype)


def _queries_and_keys(dtype=torch.float32):
    b, tq, tk, d = inputs.size(1, 3), inputs.size(1, 7), inputs.size(1, 7), inputs.size(2, 64)
    return {"q": inputs.randn(b, tq, d, dtype=dtype), "k": inputs.randn(b, tk, d, dtype=dtype)}


_score_mistakes = [
    Mistake(
        "missing-scale",
        mistakes.MESSAGES["missing-scale"],
        lambda q, k: ref_attention.attention_scores(q, k, scale=1.0).to(q.dtype),
    ),
    Mistake(
        "scaled-by-d",
        mistakes.MESSAGES["scaled-by-d"],
        lambda q, k: ref_attention.attention_scores(q, k, scale=1 / q.shape[-1]).to(q.dtype),
    ),
]
check_function(
    scaled_scores, _scores, _queries_and_keys, name="scores", mistakes=_score_mistakes, forbidden=guard.ATTENTION
)
### BEGIN HIDDEN TESTS
# hidden: float64 keeps its dtype (tfcourse's scores are float32, so the mistakes are computed here in float64)
_score_mistakes_float64 = [
    Mistake("missing-scale", mistakes.MESSAGES["missing-scale"], lambda q, k: q @ k.mT),
    Mistake("scaled-by-d", mistakes.MESSAGES["scaled-by-d"], lambda q, k: q @ k.mT / q.shape[-1]),
]
check_function(
    scaled_scores,
    _scores,
    lambda: _queries_and_keys(torch.float64),
    name="scores",
    mistakes=_score_mistakes_float64,
    forbidden=guard.ATTENTION,
    atol=1e-5,
    rtol=1e-5,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The entropy of attention rows (2 points)
#
# `p` holds attention rows along its last axis: non-negative numbers that sum to 1, some of them exactly 0
# (masked keys). Return the entropy `H = -Σ p·log p` of each row **in nats** (natural logarithm), with the
# convention `0·log 0 = 0`. The result has `p`'s shape without the last axis.


# %% solution id=attention_entropy
def attention_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each distribution along the last axis: (..., n) -> (...)."""
    ### BEGIN SOLUTION
    return -torch.special.xlogy(p, p).sum(dim=-1)
    ### END SOLUTION


# %% tests id=test_attention_entropy points=2
def _entropy(p):
    return reference_entropy(p).to(p.dtype)


def _rows(dtype=torch.float32):
    b, n = inputs.size(1, 6), inputs.size(2, 12)
    keep = inputs.randn(b, n) > -0.5  # drop about 30 % of the keys ...
    keep[:, 0] = True  # ... but never all of them
    scores = (2 * inputs.randn(b, n)).masked_fill(~keep, -math.inf)
    return {"p": torch.softmax(scores, dim=-1).to(dtype)}


_entropy_forbidden = (
    "tfcourse.entropy.entropy",
    "torch.distributions.Categorical.entropy",
    "tfcourse.grading.mistakes._entropy_bits",  # the entropy in bits: times log 2 it is the answer
)
_entropy_mistakes = [mistakes.ENTROPY_NAN_AT_ZERO, mistakes.ENTROPY_IN_BITS]
check_function(
    attention_entropy, _entropy, _rows, name="entropy", mistakes=_entropy_mistakes, forbidden=_entropy_forbidden
)
### BEGIN HIDDEN TESTS
# hidden: float64, and one-hot rows (entropy exactly 0)
check_function(
    attention_entropy,
    _entropy,
    lambda: _rows(torch.float64),
    name="entropy",
    mistakes=_entropy_mistakes,
    forbidden=_entropy_forbidden,
    atol=1e-6,
    rtol=1e-6,
)
check_function(
    attention_entropy,
    _entropy,
    lambda: {"p": torch.eye(inputs.size(2, 9))},
    name="entropy of one-hot rows",
    mistakes=_entropy_mistakes,
    forbidden=_entropy_forbidden,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. The entropy-invariant scale (2 points)
#
# With the usual `1/√d`, the entropy of attention rows grows like `log n` with the number of keys `n`, so a
# model trained on sequences of length `train_len` sees blurrier attention on longer ones. Su (2021)
# scales the scores by `κ·log n / d` instead. Choose `κ` so that the scale equals the usual `1/√d` when
# `n = train_len`, and return the scale for `n` keys as a Python float.


# %% solution id=entropy_invariant_scale
def entropy_invariant_scale(n: int, d: int, train_len: int) -> float:
    """The entropy-invariant score scale for n keys, equal to the usual 1/√d when n = train_len."""
    ### BEGIN SOLUTION
    return math.log(n) / (math.log(train_len) * math.sqrt(d))
    ### END SOLUTION


# %% tests id=test_entropy_invariant_scale points=2
def _scale_inputs():
    return {"n": inputs.size(2, 8192), "d": 2 ** inputs.size(3, 8), "train_len": inputs.size(16, 4096)}


_scale_mistakes = [
    Mistake(
        "divided-by-d",
        "your scale divides by d; with κ chosen to match 1/√d at the training length it divides by √d",
        lambda n, d, train_len: ref_attention.entropy_invariant_scale(n, d * d, train_len),
    ),
]
check_function(
    entropy_invariant_scale,
    ref_attention.entropy_invariant_scale,
    _scale_inputs,
    name="scale",
    mistakes=_scale_mistakes,
    forbidden=("tfcourse.attention.entropy_invariant_scale",),
    trials=5,
    rtol=1e-6,
)
### BEGIN HIDDEN TESTS
# hidden: the scale without κ (its message names κ, so it is not shown before grading), more draws, and
# exactly 1/√d at the training length
_scale_mistakes_hidden = [
    *_scale_mistakes,
    Mistake(
        "no-train-length",
        "your scale log(n)/√d leaves out κ: divide by log(train_len) so that it equals 1/√d at n = train_len",
        lambda n, d, train_len: math.log(n) / math.sqrt(d),
    ),
]
check_function(
    entropy_invariant_scale,
    ref_attention.entropy_invariant_scale,
    _scale_inputs,
    name="scale",
    mistakes=_scale_mistakes_hidden,
    forbidden=("tfcourse.attention.entropy_invariant_scale",),
    trials=5,
    rtol=1e-6,
)
check_function(
    entropy_invariant_scale,
    ref_attention.entropy_invariant_scale,
    lambda: {"n": 512, "d": 64, "train_len": 512},
    name="scale at n = train_len",
    mistakes=_scale_mistakes_hidden,
    forbidden=("tfcourse.attention.entropy_invariant_scale",),
    trials=1,
    rtol=1e-6,
)
### END HIDDEN TESTS
