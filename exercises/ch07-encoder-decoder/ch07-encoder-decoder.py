# %% [markdown]
# # Exercise 7 · Encoder, decoder and generation
#
# This notebook goes with chapter 7. A decoder trains in parallel thanks to teacher forcing and generates one
# token at a time, reusing the keys and values of earlier tokens. You will write
#
# 1. the shifted decoder inputs and labels of teacher forcing;
# 2. one decoding step with a key/value cache held in preallocated buffers;
# 3. top-k filtering of the next-token logits;
# 4. top-p (nucleus) filtering;
# 5. and size a KV cache.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answer. tfcourse's generation helpers and attention functions are switched off while your code is
# being checked.

# %% locked id=setup
import math

import torch

from tfcourse import attention as ref_attention
from tfcourse import generation as ref_generation
from tfcourse.cache import KVCache as RefKVCache
from tfcourse.grading import (
    CheckFailed,
    Mistake,
    check_answered,
    check_function,
    check_value,
    compare,
    guard,
    inputs,
    mistakes,
    run_learner,
)
from tfcourse.grading.compare import matches
from tfcourse.models import seq2seq as ref_seq2seq

# %% [markdown]
# ## 1. Teacher forcing: shifted targets (2 points)
#
# `targets` is a `(B, T)` batch of target ids `y_1 … y_n, EOS`, right-padded with `pad_id`. During training the
# decoder reads the targets shifted right by one and predicts each target from the ones before it. Return
# `(tgt_in, tgt_out)`, both `(B, T)`:
#
# - `tgt_in = [bos_id, y_1, …, y_{T-1}]`: `bos_id` first, then the targets without their last column;
# - `tgt_out` = the targets themselves, with every `pad_id` replaced by `-100` (the `ignore_index` of
#   `F.cross_entropy`, so that padding costs nothing).


# %% solution id=shift_targets
def shift_targets(targets: torch.Tensor, bos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) padded targets -> (tgt_in, tgt_out), both (B, T)."""
    ### BEGIN SOLUTION
    bos = torch.full_like(targets[:, :1], bos_id)  # (B, 1)
    tgt_in = torch.cat([bos, targets[:, :-1]], dim=1)  # (B, T)
    tgt_out = targets.masked_fill(targets == pad_id, -100)  # (B, T)
    return tgt_in, tgt_out
    ### END SOLUTION


# %% tests id=test_shift_targets points=2
_PAD, _BOS, _EOS = 0, 1, 2


def _shift_reference(targets, bos_id, pad_id):
    return tuple(ref_seq2seq.shift_targets(targets, bos_id, pad_id))


def _targets_inputs(b=None, t=None):
    b, t = b or inputs.size(1, 4), t or inputs.size(2, 8)
    lengths = inputs.lengths(b, t, min_len=1)  # tokens including EOS
    targets = inputs.randint(3, 20, (b, t))
    positions = torch.arange(t)[None, :]
    targets = targets.masked_fill(positions == lengths[:, None] - 1, _EOS).masked_fill(
        positions >= lengths[:, None], _PAD
    )
    return {"targets": targets, "bos_id": _BOS, "pad_id": _PAD}


def _shifted_left(targets, pad_id):
    # the targets shifted left by one, padded at the end: tfcourse's right shift of the reversed sequences
    return ref_seq2seq.shift_targets(targets.flip(1), pad_id, pad_id)[0].flip(1)


_shift_mistakes = [
    Mistake(
        "labels-shifted-too",
        "your labels are shifted as well: tgt_out is the targets themselves (position t reads BOS, y_1 … y_t-1 "
        "and predicts y_t); only the decoder input is shifted",
        lambda targets, bos_id, pad_id: (
            _shift_reference(targets, bos_id, pad_id)[0],
            _shift_reference(_shifted_left(targets, pad_id), bos_id, pad_id)[1],
        ),
    ),
    Mistake(
        "padding-not-ignored",
        "padded positions of tgt_out must hold -100 so that the loss skips them",
        lambda targets, bos_id, pad_id: (_shift_reference(targets, bos_id, pad_id)[0], targets.clone()),
    ),
    Mistake(
        "shifted-left",
        "you shifted the decoder input to the left; shift it right: BOS first, then y_1 … y_T-1",
        lambda targets, bos_id, pad_id: (
            _shifted_left(targets, pad_id),
            _shift_reference(targets, bos_id, pad_id)[1],
        ),
    ),
]
check_function(
    shift_targets,
    _shift_reference,
    _targets_inputs,
    name="(tgt_in, tgt_out)",
    mistakes=_shift_mistakes,
    forbidden=guard.GENERATION,
)
### BEGIN HIDDEN TESTS
# hidden: one-token targets (just EOS), and a single sequence with no padding
check_function(
    shift_targets,
    _shift_reference,
    lambda: _targets_inputs(t=1),
    name="(tgt_in, tgt_out)",
    mistakes=_shift_mistakes,
    forbidden=guard.GENERATION,
    trials=1,
)
check_function(
    shift_targets,
    _shift_reference,
    lambda: _targets_inputs(b=1),
    name="(tgt_in, tgt_out)",
    mistakes=_shift_mistakes,
    forbidden=guard.GENERATION,
    trials=2,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. One step with a key/value cache (3 points)
#
# `keys` and `values` are buffers of shape `(B, H, max_len, Dh)`, allocated once for the whole generation; the
# first `length` positions hold the keys and values of the tokens so far, the rest is unused. For the new
# token you get its query, key and value, each `(B, H, 1, Dh)`. Then:
#
# 1. write `k_new` and `v_new` **into the buffers in place** at position `length` (no `torch.cat`: the point of
#    preallocating is that a step copies one position, not the whole history);
# 2. attend with `q` over the first `length + 1` keys and values: `softmax(q·kᵀ/√Dh)·v`, no mask needed (every
#    cached token is in the past);
# 3. return `(output, length + 1)` with `output` of shape `(B, H, 1, Dh)`.


# %% solution id=cache_step
def cache_step(
    keys: torch.Tensor,
    values: torch.Tensor,
    length: int,
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Append k_new, v_new at position length of the buffers, attend over them: -> (output, new length)."""
    ### BEGIN SOLUTION
    keys[:, :, length] = k_new[:, :, 0]
    values[:, :, length] = v_new[:, :, 0]
    k, v = keys[:, :, : length + 1], values[:, :, : length + 1]  # (B, H, length + 1, Dh)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, H, 1, length + 1)
    return weights @ v, length + 1
    ### END SOLUTION


# %% tests id=test_cache_step points=3
_FORBIDDEN_CACHE = (*guard.ATTENTION, *guard.GENERATION)


def _cache_mistakes(q, k, v, buffer_k, buffer_v):
    """(name, message, wrong output) for the usual slips, from the keys and values the step should use."""
    found = [
        ("missing-scale", mistakes.MESSAGES["missing-scale"], mistakes.MISSING_SCALE(q, k, v)),
        (
            "whole-buffer",
            "you attended over the whole buffer, empty slots included; only the first length + 1 positions hold "
            "keys and values",
            mistakes.attention(q, buffer_k, buffer_v),
        ),
    ]
    if k.shape[-2] > 1:
        found.append(
            (
                "stale-cache",
                "the new token does not attend to itself: write its key and value into the buffers before "
                "attending, then use the first length + 1 positions",
                mistakes.attention(q, k[..., :-1, :], v[..., :-1, :]),
            )
        )
    return found


def _check_cache_steps(dtype=torch.float32, min_prompt=1, atol=None, rtol=None):
    b, h, dh = inputs.size(1, 2), inputs.size(1, 3), inputs.size(2, 8)
    prompt, steps = inputs.size(min_prompt, 4), inputs.size(1, 3)
    max_len = prompt + steps + inputs.size(0, 3)
    cache = RefKVCache(b, h, max_len, dh, dtype=dtype)
    keys = torch.zeros(b, h, max_len, dh, dtype=dtype)  # the learner's buffers
    values = torch.zeros(b, h, max_len, dh, dtype=dtype)
    if prompt:
        prompt_k, prompt_v = inputs.randn(b, h, prompt, dh, dtype=dtype), inputs.randn(b, h, prompt, dh, dtype=dtype)
        cache.update(prompt_k, prompt_v)
        keys[:, :, :prompt], values[:, :, :prompt] = prompt_k, prompt_v
    length = prompt
    for _ in range(steps):
        q, k_new, v_new = (inputs.randn(b, h, 1, dh, dtype=dtype) for _ in range(3))
        where = f"(step with length={length}, buffers of shape {tuple(keys.shape)}, {str(dtype).split('.')[-1]})"
        k, v = cache.update(k_new, v_new)
        expected = ref_attention.scaled_dot_product_attention(q, k, v)
        result = run_learner(
            cache_step, keys, values, length, q.clone(), k_new.clone(), v_new.clone(), forbidden=_FORBIDDEN_CACHE
        )
        if not isinstance(result, tuple) or len(result) != 2:
            compare(result, (expected, cache.length), "the result of cache_step()")
        output, new_length = result
        for name, buffer, reference in (("keys", keys, cache.keys), ("values", values, cache.values)):
            if not matches(buffer[:, :, : cache.length], reference[:, :, : cache.length]):
                raise CheckFailed(
                    f"the {name} buffer does not hold the new token's {name[:-1]} at position length={length}: write "
                    f"it into the buffer in place ({name}[:, :, length] = …), do not build a new tensor {where}"
                )
        try:
            compare(output, expected, "the attention output", atol=atol, rtol=rtol)
        except CheckFailed as failure:
            for _name, message, wrong in _cache_mistakes(q, k, v, cache.keys, cache.values):
                if matches(output, wrong, atol=atol, rtol=rtol):
                    raise CheckFailed(f"the attention output is wrong: {message}.") from None
            raise CheckFailed(f"{failure}\n{where}") from None
        if not isinstance(new_length, int) or new_length != cache.length:
            raise CheckFailed(f"the new length is {new_length!r}, expected length + 1 = {cache.length} {where}")
        length = new_length


_check_cache_steps()
_check_cache_steps()
### BEGIN HIDDEN TESTS
# hidden: start from an empty cache; float64 buffers (the reference attention scores in float32)
_check_cache_steps(min_prompt=0)
_check_cache_steps(dtype=torch.float64, atol=1e-5, rtol=1e-4)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Top-k filtering (2 points)
#
# `logits` is `(B, V)`, one row of next-token scores per sequence. Keep the `k` largest logits of each row and
# set every other entry to `torch.finfo(logits.dtype).min`, so that its probability after the softmax is 0
# (and fp16 stays finite). Ties with the k-th largest value are kept. A `k` larger than `V` keeps everything.
# Return a new tensor; leave `logits` unchanged.


# %% solution id=top_k_filter
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row; the rest get finfo(dtype).min."""
    ### BEGIN SOLUTION
    k = min(k, logits.shape[-1])
    kth_largest = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, torch.finfo(logits.dtype).min)
    ### END SOLUTION


# %% tests id=test_top_k_filter points=2
def _logits_inputs(dtype=torch.float32, k_max=None):
    b, vocab = inputs.size(1, 4), inputs.size(5, 30)
    k = inputs.size(1, k_max or vocab)
    return {"logits": 2 * inputs.randn(b, vocab, dtype=dtype), "k": k}


def _top_k_keep(logits, k):
    return ref_generation.top_k_filter(logits, k) == logits  # True where tfcourse keeps the logit


_top_k_mistakes = [
    Mistake(
        "top-k-fill-zero",
        "you set the removed logits to 0, which leaves them a probability exp(0)/Z > 0; use "
        "torch.finfo(logits.dtype).min",
        lambda logits, k: logits.masked_fill(~_top_k_keep(logits, k), 0.0),
    ),
    Mistake(
        "top-k-fill-inf",
        "you set the removed logits to -inf; the course fills with torch.finfo(logits.dtype).min, which gives the "
        "same probabilities but never produces NaN",
        lambda logits, k: logits.masked_fill(~_top_k_keep(logits, k), -math.inf),
    ),
    Mistake(
        "top-k-inverted",
        "you kept the k smallest logits; keep the k largest",
        lambda logits, k: logits.masked_fill(_top_k_keep(logits, k), torch.finfo(logits.dtype).min),
    ),
]
check_function(
    top_k_filter,
    ref_generation.top_k_filter,
    _logits_inputs,
    name="filtered logits",
    mistakes=_top_k_mistakes,
    forbidden=guard.GENERATION,
)
### BEGIN HIDDEN TESTS
# hidden: k larger than the vocabulary, k = 1, float64
check_function(
    top_k_filter,
    ref_generation.top_k_filter,
    lambda: {"logits": inputs.randn(2, 6), "k": inputs.size(7, 20)},
    name="filtered logits (k > V)",
    forbidden=guard.GENERATION,
    trials=1,
)
check_function(
    top_k_filter,
    ref_generation.top_k_filter,
    lambda: _logits_inputs(torch.float64, k_max=1),
    name="filtered logits (k = 1, float64)",
    mistakes=_top_k_mistakes,
    forbidden=guard.GENERATION,
    trials=2,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Top-p (nucleus) filtering (2 points)
#
# Keep, in each row, the **smallest set of most likely tokens whose probabilities add up to at least `p`**, and
# set the other logits to `torch.finfo(logits.dtype).min`. Sort each row's probabilities (softmax in float32)
# in descending order; a token stays exactly when the tokens *strictly more likely* than it sum to less than
# `p` (so the most likely token always stays, and so does the token that takes the total past `p`). Return the
# logits in the original vocabulary order.


# %% solution id=top_p_filter
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering of (B, V) logits: the rest get finfo(dtype).min."""
    ### BEGIN SOLUTION
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
    probs = sorted_logits.float().softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)
    ### END SOLUTION


# %% tests id=test_top_p_filter points=2
def _nucleus_inputs(p=None):
    b, vocab = inputs.size(1, 4), inputs.size(5, 30)
    return {"logits": 2 * inputs.randn(b, vocab), "p": p if p is not None else inputs.size(20, 95) / 100}


def _without_crossing_token(logits, p):
    # tfcourse's nucleus minus its least likely token, the one whose probability takes the total past p
    kept = ref_generation.top_p_filter(logits, p)
    least_likely = logits.masked_fill(kept != logits, math.inf).argmin(dim=-1, keepdim=True)  # (B, 1)
    return kept.scatter(-1, least_likely, torch.finfo(logits.dtype).min)


_top_p_mistakes = [
    Mistake(
        "top-p-drops-crossing-token",
        "you dropped the token that takes the total past p, so what is left sums to less than p; drop a token "
        "only when the tokens more likely than it already sum to p",
        _without_crossing_token,
    ),
]
check_function(
    top_p_filter,
    ref_generation.top_p_filter,
    _nucleus_inputs,
    name="filtered logits",
    mistakes=_top_p_mistakes,
    forbidden=guard.GENERATION,
    trials=4,
)
### BEGIN HIDDEN TESTS
# hidden: the sums in vocabulary order (written out, so that mistake is named only here); p = 1 keeps
# everything; a tiny p keeps only the most likely token
_top_p_mistakes = list(_top_p_mistakes)


def _unsorted_nucleus(logits, p):
    probs = logits.float().softmax(dim=-1)
    return logits.masked_fill(probs.cumsum(-1) - probs >= p, torch.finfo(logits.dtype).min)


_top_p_mistakes.append(
    Mistake(
        "top-p-unsorted",
        "you summed the probabilities in vocabulary order; sort them in descending order first, then map the "
        "decision back to the vocabulary order",
        _unsorted_nucleus,
    )
)
check_function(
    top_p_filter,
    ref_generation.top_p_filter,
    _nucleus_inputs,
    name="filtered logits",
    mistakes=_top_p_mistakes,
    forbidden=guard.GENERATION,
    trials=4,
)
for _p in (1.0, 0.01):
    check_function(
        top_p_filter,
        ref_generation.top_p_filter,
        lambda p=_p: _nucleus_inputs(p),
        name=f"filtered logits (p = {_p})",
        mistakes=_top_p_mistakes,
        forbidden=guard.GENERATION,
        trials=1,
    )
### END HIDDEN TESTS

# %% [markdown]
# ## 5. The size of a KV cache (1 point)
#
# GPT-2 small has 12 layers of width `D = 768` (12 heads of 64). How many **MiB** (2²⁰ bytes) does its KV cache
# take for one sequence of 1024 tokens in float32? Count the keys and values of every layer. Set
# `answer_cache_mib` to a number.

# %% solution id=cache_mib
answer_cache_mib = None  # replace None with your answer
### BEGIN SOLUTION
answer_cache_mib = 2 * 12 * 1024 * 768 * 4 / 2**20
### END SOLUTION

# %% tests id=test_cache_mib points=1
check_answered(answer_cache_mib, "answer_cache_mib")
### BEGIN HIDDEN TESTS
check_value(
    answer_cache_mib,
    72,
    "answer_cache_mib",
    mistakes={
        36: "that counts the keys only (or 2 bytes per number): the cache stores keys and values, 4 bytes each",
        6: "that is one layer's cache; every one of the 12 layers keeps its own keys and values",
        75.497472: "that is in millions of bytes (MB); the question asks for MiB = 2**20 bytes",
        3: "that is one layer's keys only; count keys and values of all 12 layers",
    },
)
### END HIDDEN TESTS
