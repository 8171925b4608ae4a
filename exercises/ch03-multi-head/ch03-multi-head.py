# %% [markdown]
# # Exercise 3 · Multi-head attention
#
# This notebook goes with chapter 3. You will
#
# 1. split a `(B, T, D)` tensor into `H` heads of width `D/H`;
# 2. merge the heads back;
# 3. put them together into multi-head attention with an output projection;
# 4. count the parameters of a multi-head attention layer.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answer. PyTorch's and tfcourse's attention, `split_heads` and `merge_heads` are switched off while
# your code is being checked.

# %% locked id=setup
import math

import torch

from tfcourse import attention as ref_attention
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs, mistakes

# %% [markdown]
# ## 1. Split the heads (2 points)
#
# `x` has shape `(B, T, D)` with `D = H·Dh`. Head `h` owns the contiguous slice of features
# `x[..., h·Dh : (h+1)·Dh]`. Return a tensor of shape `(B, H, T, Dh)` whose `[:, h]` holds head `h`'s
# slice for every time step.


# %% solution id=split_heads
def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, H·Dh) -> (B, H, T, Dh)."""
    ### BEGIN SOLUTION
    b, t, d = x.shape
    return x.reshape(b, t, num_heads, d // num_heads).transpose(1, 2)  # (B, T, H, Dh) -> (B, H, T, Dh)
    ### END SOLUTION


# %% tests id=test_split_heads points=2
def _split_inputs():
    b, t, h, dh = inputs.size(1, 3), inputs.size(2, 6), inputs.size(2, 4), inputs.size(1, 5)
    return {"x": inputs.randn(b, t, h * dh), "num_heads": h}


_split_mistakes = [
    Mistake(
        "split-without-transpose",
        "you reshaped straight to (B, H, T, Dh), so each head gets a block of time steps instead of a slice of "
        "the features of every time step",
        lambda x, h: x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h),
    ),
    Mistake(
        "split-strided",
        "your heads take every H-th feature instead of a contiguous slice of Dh features",
        # Dh "heads" of width H, axes swapped: head h gets features h, h + H, h + 2H, …
        lambda x, h: ref_attention.split_heads(x, x.shape[-1] // h).transpose(1, 3),
    ),
]
check_function(
    split_heads,
    ref_attention.split_heads,
    _split_inputs,
    name="split heads",
    mistakes=_split_mistakes,
    forbidden=guard.MULTI_HEAD,
)
### BEGIN HIDDEN TESTS
# hidden: one head, and float64
check_function(
    split_heads,
    ref_attention.split_heads,
    lambda: {"x": inputs.randn(2, 3, 4, dtype=torch.float64), "num_heads": 1},
    name="split heads",
    mistakes=_split_mistakes,
    forbidden=guard.MULTI_HEAD,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Merge the heads (2 points)
#
# The inverse of part 1: from `(B, H, T, Dh)` back to `(B, T, H·Dh)`, head `h` in features
# `h·Dh : (h+1)·Dh`. This is the concatenation of the heads' outputs.


# %% solution id=merge_heads
def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, Dh) -> (B, T, H·Dh)."""
    ### BEGIN SOLUTION
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, T, H, Dh) -> (B, T, H·Dh)
    ### END SOLUTION


# %% tests id=test_merge_heads points=2
def _merge_inputs():
    return {"x": inputs.randn(inputs.size(1, 3), inputs.size(2, 4), inputs.size(2, 6), inputs.size(1, 5))}


check_function(merge_heads, ref_attention.merge_heads, _merge_inputs, name="merged heads", forbidden=guard.MULTI_HEAD)
### BEGIN HIDDEN TESTS
# hidden: the usual mistake (it is one edit away from the answer, so it is named only here); merge undoes split
_merge_mistakes = [
    Mistake(
        "merge-without-transpose",
        "you reshaped (B, H, T, Dh) straight to (B, T, H·Dh), which mixes time steps across heads; swap the H "
        "and T axes first, then reshape",
        lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
    )
]
check_function(
    merge_heads,
    ref_attention.merge_heads,
    _merge_inputs,
    name="merged heads",
    mistakes=_merge_mistakes,
    forbidden=guard.MULTI_HEAD,
)
check_function(
    lambda x, h: merge_heads(ref_attention.split_heads(x, h)),
    lambda x, h: x,
    _split_inputs,
    name="merge_heads(split_heads(x))",
    forbidden=guard.ATTENTION,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Multi-head attention (3 points)
#
# `x` has shape `(B, T, D)`; `w_q`, `w_k`, `w_v` and `w_o` are `(D, D)` matrices acting on the right
# (`x @ w_q`). Project `x` to queries, keys and values, split each into `num_heads` heads, run scaled
# dot-product attention in every head (scale `1/√Dh`), merge the heads and apply the output projection
# `w_o`. Return the `(B, T, D)` result. Use your functions from parts 1 and 2.


# %% solution id=multi_head_attention
def multi_head_attention(
    x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """Multi-head self-attention without biases: (B, T, D) -> (B, T, D)."""
    ### BEGIN SOLUTION
    q = split_heads(x @ w_q, num_heads)  # (B, H, T, Dh)
    k = split_heads(x @ w_k, num_heads)  # (B, H, T, Dh)
    v = split_heads(x @ w_v, num_heads)  # (B, H, T, Dh)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    heads = torch.softmax(scores, dim=-1) @ v  # (B, H, T, Dh)
    return merge_heads(heads) @ w_o  # (B, T, D)
    ### END SOLUTION


# %% tests id=test_multi_head_attention points=3
def _mha(x, w_q, w_k, w_v, w_o, h, scale=None, heads=None):
    heads = h if heads is None else heads
    q, k, v = (ref_attention.split_heads(x @ w, heads) for w in (w_q, w_k, w_v))  # (B, H, T, Dh) each
    return ref_attention.merge_heads(ref_attention.attention_reference(q, k, v, scale=scale)[0]) @ w_o


def _mha_inputs(dtype=torch.float32):
    b, t, h, dh = inputs.size(1, 3), inputs.size(2, 6), inputs.size(2, 4), inputs.size(2, 6)
    d = h * dh
    w = [inputs.randn(d, d, dtype=dtype) / math.sqrt(d) for _ in range(4)]
    return {"x": inputs.randn(b, t, d, dtype=dtype), "w_q": w[0], "w_k": w[1], "w_v": w[2], "w_o": w[3], "num_heads": h}


_mha_mistakes = [
    Mistake(
        "scaled-by-model-width",
        "you scaled the scores by 1/√D (the model width); each head's scores need 1/√Dh with Dh = D/H",
        lambda x, wq, wk, wv, wo, h: _mha(x, wq, wk, wv, wo, h, scale=1 / math.sqrt(x.shape[-1])),
    ),
    Mistake(
        "missing-scale",
        mistakes.MESSAGES["missing-scale"],
        lambda x, wq, wk, wv, wo, h: _mha(x, wq, wk, wv, wo, h, scale=1.0),
    ),
    Mistake(
        "no-output-projection",
        "you left out the output projection: multiply the merged heads by w_o",
        lambda x, wq, wk, wv, wo, h: _mha(x, wq, wk, wv, torch.eye(x.shape[-1], dtype=x.dtype), h),
    ),
    Mistake(
        "one-head",
        "you attended with a single head of width D; split into num_heads heads first",
        lambda x, wq, wk, wv, wo, h: _mha(x, wq, wk, wv, wo, h, heads=1),
    ),
]
check_function(
    multi_head_attention,
    _mha,
    _mha_inputs,
    name="multi-head attention output",
    mistakes=_mha_mistakes,
    forbidden=guard.MULTI_HEAD,
)
### BEGIN HIDDEN TESTS
# hidden: float64 keeps its dtype
check_function(
    multi_head_attention,
    _mha,
    lambda: _mha_inputs(torch.float64),
    name="multi-head attention output",
    mistakes=_mha_mistakes,
    forbidden=guard.MULTI_HEAD,
    atol=1e-5,
    rtol=1e-4,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Counting parameters (1 point)
#
# A multi-head attention layer with `D = 512` and `H = 8` heads has four `D × D` projections (queries, keys,
# values and output), each with a bias vector of length `D`. How many parameters does it have in total?
# Set `answer_parameters` to a number.

# %% solution id=parameters
answer_parameters = None  # replace None with your answer
### BEGIN SOLUTION
answer_parameters = 4 * (512 * 512 + 512)
### END SOLUTION

# %% tests id=test_parameters points=1
check_answered(answer_parameters, "answer_parameters")
### BEGIN HIDDEN TESTS
check_value(
    answer_parameters,
    1_050_624,
    "answer_parameters",
    rel=0,
    abs_tol=0.5,
    mistakes={
        1_048_576: "that leaves out the four bias vectors",
        787_968: "that leaves out the output projection",
        8_404_992: "the heads do not each get four D × D projections: each head uses a slice of the shared ones, "
        "so the count does not grow with H",
    },
)
### END HIDDEN TESTS
