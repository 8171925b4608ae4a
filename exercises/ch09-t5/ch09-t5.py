# %% [markdown]
# # Exercise 9 · T5: relative buckets and span corruption
#
# This notebook goes with chapter 9. You will write
#
# 1. T5's relative-position buckets, for the encoder (bidirectional) and the decoder (causal);
# 2. span corruption for a given noise mask: the encoder input with one sentinel per dropped span, and the
#    target that lists each sentinel followed by its span;
# 3. its inverse, which puts the spans back;
# 4. and work out the length of a corrupted input.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answer. tfcourse's bucket and span-corruption functions are switched off while your code is checked.

# %% locked id=setup
import math

import torch

from tfcourse import positions as ref_positions
from tfcourse import pretraining as ref_pretraining
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs

# %% [markdown]
# ## 1. Relative-position buckets (3 points)
#
# `relative_position` holds integer offsets `key_position - query_position` (any shape). Return T5's bucket
# ids, a `torch.long` tensor of the same shape with values in `[0, num_buckets)`:
#
# - **bidirectional** (encoder): half of the buckets serve each direction. Keys *after* the query
#   (offset > 0) use the upper half: add `num_buckets // 2` to their bucket. The distance is `|offset|`.
# - **not bidirectional** (decoder): all buckets serve the past; future keys (offset > 0) have distance 0.
#   The distance is `max(-offset, 0)`.
#
# Within a direction of `nb` buckets (`num_buckets // 2` or `num_buckets`), let `max_exact = nb // 2`.
# Distances below `max_exact` get a bucket each (bucket = distance). Larger distances share logarithmically
# wider buckets, clamped to the last one, `nb - 1`:
#
# ```python
# large = max_exact + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
#                      * (nb - max_exact)).long()
# ```
#
# Compute `large` exactly like this (in float32, in this order, truncating with `.long()`): that is what
# T5 does, and the bucket borders fall on exact ties, so another order can move a distance to the next bucket.


# %% solution id=t5_bucket
def t5_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """Offsets (key - query) -> T5 bucket ids, long, same shape."""
    ### BEGIN SOLUTION
    rel = relative_position.long()
    if bidirectional:
        nb = num_buckets // 2
        offset = (rel > 0).long() * nb  # future keys use the upper half
        distance = rel.abs()
    else:
        nb = num_buckets
        offset = torch.zeros_like(rel)
        distance = (-rel).clamp(min=0)  # future keys: distance 0
    max_exact = nb // 2
    large = (
        max_exact
        + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (nb - max_exact)).long()
    )
    large = large.clamp(max=nb - 1)
    return offset + torch.where(distance < max_exact, distance, large)
    ### END SOLUTION


# %% tests id=test_t5_bucket points=3
def _buckets(relative_position, bidirectional, num_buckets, max_distance):
    return ref_positions.t5_relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance)


def _offsets(bidirectional, far=False):
    num_buckets = 2 ** inputs.size(3, 5)  # 8, 16 or 32
    max_distance = num_buckets * 2 ** inputs.size(1, 2)
    tq, tk = inputs.size(1, 12), inputs.size(1, 40)
    rel = ref_positions.relative_positions(tq, tk, query_offset=inputs.size(0, tk))
    if far:  # offsets well beyond max_distance, both ways
        rel = inputs.randint(-4 * max_distance, 4 * max_distance, (tq, tk))
    return {
        "relative_position": rel,
        "bidirectional": bidirectional,
        "num_buckets": num_buckets,
        "max_distance": max_distance,
    }


_bucket_mistakes = [
    Mistake(
        "no-direction-offset",
        "future keys (offset > 0) must use the upper half of the buckets: add "
        "num_buckets // 2 to their bucket when bidirectional",
        # both directions in the lower half: a decoder's buckets of the distance |offset|
        lambda r, b, n, m: _buckets(-r.abs(), False, n // 2, m) if b else _buckets(r, b, n, m),
    ),
    Mistake(
        "direction-swapped",
        "your upper half holds the past keys; it is for future keys, offset = key - query > 0",
        lambda r, b, n, m: _buckets(-r, b, n, m) if b else _buckets(r, b, n, m),
    ),
    Mistake(
        "causal-abs",
        "without bidirectional buckets, future keys must all have distance 0 (bucket 0): "
        "use max(-offset, 0), not |offset|",
        lambda r, b, n, m: _buckets(r, b, n, m) if b else _buckets(-r.abs(), b, n, m),
    ),
]
for _bidirectional in (True, False):
    check_function(
        t5_bucket,
        _buckets,
        lambda b=_bidirectional: _offsets(b),
        name="buckets",
        mistakes=_bucket_mistakes,
        forbidden=guard.T5,
    )
### BEGIN HIDDEN TESTS
# hidden: the mistakes that need the bucket computation written out (a variant of the answer, so it lives here);
# near and far offsets, both kinds
_bucket_mistakes = list(_bucket_mistakes)


def _variant(
    rel,
    bidirectional,
    num_buckets,
    max_distance,
    *,
    exact_from_all=False,
    clamp=True,
    rounding=False,
):
    rel = rel.long()
    if bidirectional:
        nb = num_buckets // 2
        offset = (rel > 0).long() * nb
        distance = rel.abs()
    else:
        nb = num_buckets
        offset = torch.zeros_like(rel)
        distance = (-rel).clamp(min=0)
    max_exact = (num_buckets if exact_from_all else nb) // 2
    ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (nb - max_exact)
    large = max_exact + (ratio.round() if rounding else ratio).long()
    if clamp:
        large = large.clamp(max=nb - 1)
    return offset + torch.where(distance < max_exact, distance, large)


_bucket_mistakes += [
    Mistake(
        "max-exact-of-all",
        "max_exact is half of one direction's buckets (num_buckets // 4 when bidirectional), not half of all of them",
        lambda r, b, n, m: _variant(r, b, n, m, exact_from_all=True),
    ),
    Mistake(
        "no-clamp",
        "distances beyond max_distance must stay in the last bucket of their direction: "
        "clamp the large-distance bucket to nb - 1",
        lambda r, b, n, m: _variant(r, b, n, m, clamp=False),
    ),
    Mistake(
        "rounded",
        "the logarithmic buckets are truncated (.long(), i.e. floored for these non-negative values), not rounded",
        lambda r, b, n, m: _variant(r, b, n, m, rounding=True),
    ),
]
for _bidirectional in (True, False):
    for _far in (False, True):
        check_function(
            t5_bucket,
            _buckets,
            lambda b=_bidirectional, f=_far: _offsets(b, far=f),
            name="buckets of far offsets" if _far else "buckets",
            mistakes=_bucket_mistakes,
            forbidden=guard.T5,
        )
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Span corruption (3 points)
#
# `tokens` is a `(T,)` long tensor and `noise_mask` a `(T,)` bool tensor, True at the tokens to drop. Each
# run of consecutive True positions is one **noise span**. Span `k` (counting from 0, left to right) gets the
# sentinel id `sentinel_start_id - k`: sentinels count **down**, as in T5's vocabulary, where `<extra_id_0>`
# is the last id. Return `(inputs, targets)`, both 1-D long tensors:
#
# - `inputs`: the kept tokens, with each noise span replaced by its sentinel;
# - `targets`: for each span in order, its sentinel followed by the span's tokens (no final sentinel, no EOS).
#
# ```
# tokens      10 11 12 13 14 15 16        sentinel_start_id = 99
# noise_mask   .  x  x  .  .  x  .
# inputs      10 99 13 14 98 16
# targets     99 11 12 98 15
# ```


# %% solution id=span_corruption
def span_corruption(tokens: torch.Tensor, noise_mask: torch.Tensor, sentinel_start_id: int):
    """(T,) tokens and (T,) bool noise mask -> (inputs, targets), sentinels counting down."""
    ### BEGIN SOLUTION
    previous = torch.cat([noise_mask.new_zeros(1), noise_mask[:-1]])  # (T,) was the token before noise?
    starts = noise_mask & ~previous  # (T,) first token of each span
    sentinels = sentinel_start_id - (torch.cumsum(starts.long(), 0) - 1)  # (T,) valid at span starts
    slots = torch.stack([sentinels.to(tokens.dtype), tokens], dim=1).reshape(-1)  # (2T,) sentinel slot, token
    inputs_ = slots[torch.stack([starts, ~noise_mask], dim=1).reshape(-1)]
    targets = slots[torch.stack([starts, noise_mask], dim=1).reshape(-1)]
    return inputs_, targets
    ### END SOLUTION


# %% tests id=test_span_corruption points=3
def _corrupt(tokens, noise_mask, sentinel_start_id):
    result = ref_pretraining.span_corruption(tokens, sentinel_start_id=sentinel_start_id, noise_mask=noise_mask)
    return result.inputs, result.targets


def _noisy_tokens(mask=None):
    t = inputs.size(2, 16) if mask is None else len(mask)
    vocab = inputs.size(20, 60)
    if mask is None:
        mask = inputs.randint(0, 3, (t,)) == 0  # about a third dropped
        mask |= torch.roll(mask, 1) & (inputs.randint(0, 2, (t,)) == 0)  # ... in longer spans
    return {
        "tokens": inputs.randint(0, vocab, (t,)),
        "noise_mask": torch.as_tensor(mask, dtype=torch.bool),
        "sentinel_start_id": vocab + 99,
    }


def _sentinels_up(ids, start):
    # sentinel start - k becomes start + k (the tokens here lie below the sentinel block)
    return torch.where(ids > start - 100, 2 * start - ids, ids)


def _one_span_per_token(tokens, noise, start):
    # a kept token after every token splits each noise span into one-token spans; drop those tokens again
    spaced = torch.stack([tokens, torch.zeros_like(tokens)], dim=1).flatten()  # (2T,)
    ins, outs = _corrupt(spaced, torch.stack([noise, torch.zeros_like(noise)], dim=1).flatten(), start)
    return ins[0::2], outs


def _without_target_sentinels(tokens, noise, start):
    ins, outs = _corrupt(tokens, noise, start)
    return ins, outs[outs <= start - 100]


_corruption_mistakes = [
    Mistake(
        "sentinels-count-up",
        "your sentinels count up; T5's count down: span k gets sentinel_start_id - k",
        lambda t, m, s: tuple(_sentinels_up(ids, s) for ids in _corrupt(t, m, s)),
    ),
    Mistake(
        "sentinel-per-token",
        "you gave every dropped token its own sentinel; a whole span of consecutive dropped tokens shares one",
        _one_span_per_token,
    ),
    Mistake(
        "targets-without-sentinels",
        "your targets lack the sentinels: each span in the targets follows "
        "its sentinel, so the model knows which gap it fills",
        _without_target_sentinels,
    ),
]
check_function(
    span_corruption,
    _corrupt,
    _noisy_tokens,
    name="(inputs, targets)",
    mistakes=_corruption_mistakes,
    forbidden=guard.T5,
)
### BEGIN HIDDEN TESTS
# hidden: a span at the very start and at the very end, no noise at all, everything noise
for _mask in ([1, 1, 0, 0, 1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1], [1, 0, 1, 0, 1]):
    check_function(
        span_corruption,
        _corrupt,
        lambda m=_mask: _noisy_tokens(m),
        name="(inputs, targets)",
        mistakes=_corruption_mistakes,
        forbidden=guard.T5,
        trials=1,
    )
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Putting the spans back (2 points)
#
# Undo part 2: given `inputs` and `targets` as produced there, return the original `(T,)` tokens. Ids from
# `sentinel_start_id - 99` to `sentinel_start_id` are sentinels (T5 has 100); in `inputs` each sentinel
# stands for the span that follows the same sentinel in `targets`. A Python loop over the ids is fine here.


# %% solution id=merge_spans
def merge_spans(inputs_: torch.Tensor, targets: torch.Tensor, sentinel_start_id: int) -> torch.Tensor:
    """Inverse of span_corruption: (Ti,), (Tt,) -> (T,) original tokens."""

    ### BEGIN SOLUTION
    def is_sentinel(t):
        return sentinel_start_id - 99 <= t <= sentinel_start_id

    spans = {}
    for t in targets.tolist():
        if is_sentinel(t):
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    merged = []
    for t in inputs_.tolist():
        merged.extend(spans[t] if is_sentinel(t) else [t])
    return torch.tensor(merged, dtype=inputs_.dtype)
    ### END SOLUTION


# %% tests id=test_merge_spans points=2
def _merge(inputs_, targets, sentinel_start_id):
    return ref_pretraining.merge_span_corruption(inputs_, targets, sentinel_start_id=sentinel_start_id)


def _corrupted(mask=None):
    args = _noisy_tokens(mask)
    ins, outs = _corrupt(**args)
    return {"inputs_": ins, "targets": outs, "sentinel_start_id": args["sentinel_start_id"]}


def _keep_sentinels(ins, outs, start):
    # merged by tfcourse with a second sentinel block above the first: each old sentinel becomes an ordinary
    # token that opens its own span
    moved = torch.where(ins > start - 100, ins + 100, ins)
    opened = [u for t in outs.tolist() for u in ((t + 100, t) if t > start - 100 else (t,))]
    return _merge(moved, torch.tensor(opened, dtype=outs.dtype), start + 100)


_merge_mistakes = [
    Mistake(
        "sentinels-kept",
        "your result still holds the sentinels: each one must be replaced by its span",
        _keep_sentinels,
    ),
]
check_function(merge_spans, _merge, _corrupted, name="merged tokens", mistakes=_merge_mistakes, forbidden=guard.T5)
### BEGIN HIDDEN TESTS
for _mask in ([1, 1, 0, 0, 1, 0, 1, 1], [0, 0, 0], [1, 1]):
    check_function(
        merge_spans,
        _merge,
        lambda m=_mask: _corrupted(m),
        name="merged tokens",
        mistakes=_merge_mistakes,
        forbidden=guard.T5,
        trials=1,
    )
### END HIDDEN TESTS

# %% [markdown]
# ## 4. How long is the corrupted input? (1 point)
#
# T5 corrupts a sequence of `T = 512` tokens with noise density 15 % and mean span length 3: it drops
# `round(512 · 0.15) = 77` tokens in `round(77 / 3) = 26` spans. How many ids does the encoder input have
# (no EOS)? Set `answer_input_length` to a number.

# %% solution id=input_length
answer_input_length = None  # replace None with your answer
### BEGIN SOLUTION
answer_input_length = 461
### END SOLUTION

# %% tests id=test_input_length points=1
check_answered(answer_input_length, "answer_input_length")
### BEGIN HIDDEN TESTS
check_value(
    answer_input_length,
    461,
    "answer_input_length",
    rel=0,
    abs_tol=0.01,
    mistakes={
        435: "that counts the kept tokens only; each of the 26 spans leaves one sentinel behind",
        103: "that is the target's length (26 sentinels and 77 tokens); the question asks about the input",
        538: "the dropped tokens leave the input: subtract them, then add one sentinel per span",
    },
)
### END HIDDEN TESTS
