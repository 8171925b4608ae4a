# %% [markdown]
# # Exercise 8 · BERT
#
# This notebook goes with chapter 8. You will build BERT's inputs and one of its outputs:
#
# 1. the masked-LM corruption: select 15 % of the tokens, then 80 % → `[MASK]`, 10 % → a random token,
#    10 % unchanged;
# 2. packing a sentence pair as `[CLS] A [SEP] B [SEP]` with segment ids;
# 3. the input embedding: token + segment + position, then LayerNorm;
# 4. the pooled output;
# 5. and count the tokens that are predicted but left unchanged.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; part 1 is random, so its check counts outcomes over thousands of
# tokens. The grader runs a few more tests of the same kind, and checks the numeric answer. tfcourse's BERT
# helpers are switched off while your code is being checked.

# %% locked id=setup
import torch
import torch.nn.functional as F

from tfcourse.grading import (
    CheckFailed,
    Mistake,
    check_answered,
    check_function,
    check_proportions,
    check_value,
    guard,
    inputs,
    run_learner,
)
from tfcourse.grading.proportions import draws_needed
from tfcourse.models import bert as ref_bert
from tfcourse.pretraining import bert as ref_pretraining

# %% [markdown]
# ## 1. Masked-LM corruption (3 points)
#
# `input_ids` is a `(B, T)` batch of ids in `[0, vocab_size)`; `special_ids` lists the ids that must never be
# selected (`[PAD]`, `[CLS]`, `[SEP]`, …, `[MASK]` included). Return `(corrupted, labels)`, both `(B, T)`:
#
# - select each non-special token independently with probability 0.15;
# - of the selected tokens, replace 80 % by `mask_id`, 10 % by a random id drawn uniformly from the
#   **non-special** ids, and leave 10 % unchanged (one uniform draw per token decides which);
# - `labels` holds the original id at every selected position (all three groups) and `-100` elsewhere;
#   `corrupted` is `input_ids` with the replacements, and equals it everywhere else.
#
# Use `torch.rand` / `torch.randint` (no fixed seed).


# %% solution id=mlm_corrupt
def mlm_corrupt(
    input_ids: torch.Tensor, mask_id: int, vocab_size: int, special_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 masking: -> (corrupted ids, labels with -100 at unselected positions)."""
    ### BEGIN SOLUTION
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[special_ids] = False
    allowed_ids = allowed.nonzero().squeeze(1)  # (V',) ids a random token may take
    selected = allowed[input_ids] & (torch.rand(input_ids.shape) < 0.15)
    u = torch.rand(input_ids.shape)
    masked = selected & (u < 0.8)
    randomized = selected & (u >= 0.8) & (u < 0.9)
    random_ids = allowed_ids[torch.randint(len(allowed_ids), input_ids.shape)]
    corrupted = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    corrupted = torch.where(randomized, random_ids, corrupted)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    return corrupted, labels
    ### END SOLUTION


# %% tests id=test_mlm_corrupt points=3
_PAD, _CLS, _SEP, _MASK, _VOCAB = 0, 1, 2, 3, 500
_SPECIAL = [_PAD, _CLS, _SEP, _MASK]


def _mlm_batch(b=64, t=64):
    ids = inputs.randint(len(_SPECIAL), _VOCAB, (b, t))
    lengths = inputs.lengths(b, t, min_len=3)
    positions = torch.arange(t)[None, :]
    ids[:, 0] = _CLS
    ids = ids.masked_fill(positions == lengths[:, None] - 1, _SEP).masked_fill(positions >= lengths[:, None], _PAD)
    return ids


# Enough draws that a right answer fails, and one off by 1.5 points in the share (or 5 in the split) passes,
# each with probability below 1e-6 (tfcourse.grading.proportions).
_SHARE_TOLERANCE, _SPLIT_TOLERANCE = 0.0075, 0.025
_SHARE_DRAWS = draws_needed((0.15, 0.85), _SHARE_TOLERANCE)
_SPLIT_DRAWS = draws_needed((0.8, 0.1, 0.1), _SPLIT_TOLERANCE)


def _draw_mlm(counts, b, t):
    ids = _mlm_batch(b, t)
    # The reference, on the same batch, for its shape and dtype (its draws differ, of course).
    expected = ref_pretraining.mlm_mask(ids, mask_token_id=_MASK, vocab_size=_VOCAB, special_token_ids=_SPECIAL)
    result = run_learner(mlm_corrupt, ids.clone(), _MASK, _VOCAB, list(_SPECIAL), forbidden=guard.BERT)
    if result is None:
        raise CheckFailed("mlm_corrupt returned nothing (is it still a stub, or missing `return`?)")
    if not isinstance(result, tuple) or len(result) != 2:
        raise CheckFailed("mlm_corrupt should return a pair (corrupted, labels)")
    corrupted, labels = result
    for name, value, reference in (
        ("corrupted", corrupted, expected.input_ids),
        ("labels", labels, expected.labels),
    ):
        if not isinstance(value, torch.Tensor) or value.shape != ids.shape:
            raise CheckFailed(f"{name} should be a tensor of shape {tuple(ids.shape)}, like input_ids")
        if value.dtype != reference.dtype:
            raise CheckFailed(f"{name} has dtype {value.dtype}, expected {reference.dtype}")
    special = torch.isin(ids, torch.tensor(_SPECIAL))
    selected = labels != -100
    if (selected & special).any():
        raise CheckFailed(
            "mlm_corrupt selected special or padding tokens ([PAD], [CLS], [SEP]): only real tokens may be "
            "selected for prediction"
        )
    if not torch.equal(labels[selected], ids[selected]):
        raise CheckFailed("labels must hold the original id at every selected position (not the replacement)")
    if not torch.equal(corrupted[~selected], ids[~selected]):
        raise CheckFailed(
            "corrupted differs from input_ids at a position whose label is -100: every replaced token must be "
            "labelled, and unselected tokens stay as they are"
        )
    random_group = selected & (corrupted != _MASK) & (corrupted != ids)
    if torch.isin(corrupted[random_group], torch.tensor(_SPECIAL)).any():
        raise CheckFailed("a random replacement is a special token: draw random ids from the non-special ids only")
    counts["eligible"] += int((~special).sum())
    counts["selected"] += int(selected.sum())
    counts["mask"] += int((selected & (corrupted == _MASK)).sum())
    counts["random"] += int(random_group.sum())
    counts["unchanged"] += int((selected & (corrupted == ids)).sum())


def _check_mlm(b=128, t=64, max_batches=400):
    counts = {"selected": 0, "eligible": 0, "mask": 0, "random": 0, "unchanged": 0}
    for _ in range(max_batches):
        if counts["eligible"] >= _SHARE_DRAWS:
            break
        _draw_mlm(counts, b, t)
    check_proportions(
        [counts["selected"], counts["eligible"] - counts["selected"]],
        (0.15, 0.85),
        name="the share of selected tokens",
        labels=["selected", "not selected"],
        mistakes={
            (0.12, 0.88): "only the [MASK]ed tokens carry a label; the random and unchanged ones are predicted too",
            (0.135, 0.865): "the tokens left unchanged carry no label; all selected tokens are predicted",
        },
        tolerance=_SHARE_TOLERANCE,
    )
    for _ in range(max_batches):
        if counts["selected"] >= _SPLIT_DRAWS:
            break
        _draw_mlm(counts, b, t)
    check_proportions(
        [counts["mask"], counts["random"], counts["unchanged"]],
        (0.8, 0.1, 0.1),
        name="the 80/10/10 split of the selected tokens",
        labels=["[MASK]", "random", "unchanged"],
        tolerance=_SPLIT_TOLERANCE,
    )


_check_mlm()
### BEGIN HIDDEN TESTS
# hidden: short sequences with much padding
_check_mlm(b=512, t=12)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Packing a sentence pair (3 points)
#
# `a` and `b` are two non-empty lists of token ids. Return `(input_ids, token_type_ids)`, two `(T,)` long
# tensors for `[CLS] a [SEP] b [SEP]`: segment id 0 for `[CLS]`, `a` and the first `[SEP]`, 1 for `b` and the
# last `[SEP]`.
#
# If `max_length` is not `None` and the pair is too long (`len(a) + len(b) + 3 > max_length`), remove tokens
# one at a time from the end of the **longer** segment (from `b` when they are equally long), as BERT's
# `truncate_seq_pair` does, until it fits. `max_length` is at least 5.


# %% solution id=pack_pair
def pack_pair(
    a: list[int], b: list[int], cls_id: int, sep_id: int, max_length: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] a [SEP] b [SEP] with segment ids, truncating the longer segment to fit max_length."""
    ### BEGIN SOLUTION
    a, b = list(a), list(b)
    if max_length is not None:
        while len(a) + len(b) + 3 > max_length:
            (a if len(a) > len(b) else b).pop()
    ids = [cls_id, *a, sep_id, *b, sep_id]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return torch.tensor(ids), torch.tensor(types)
    ### END SOLUTION


# %% tests id=test_pack_pair points=3
def _pack_reference(a, b, cls_id, sep_id, max_length):
    return tuple(ref_pretraining.pack_pair(a, b, cls_token_id=cls_id, sep_token_id=sep_id, max_length=max_length))


def _pair_inputs(truncate=False):
    a = inputs.randint(5, 100, (inputs.size(1, 8),)).tolist()
    b = inputs.randint(5, 100, (inputs.size(1, 8),)).tolist()
    max_length = inputs.size(5, max(5, len(a) + len(b) + 2)) if truncate else None  # pack_pair needs >= 5
    return {"a": a, "b": b, "cls_id": 101, "sep_id": 102, "max_length": max_length}


def _sep_in_b(a, b, cls_id, sep_id, max_length):
    ids, types = _pack_reference(a, b, cls_id, sep_id, max_length)
    first_sep = int((ids == sep_id).nonzero()[0])
    return ids, types.index_fill(0, torch.tensor([first_sep]), 1)


def _truncate_b_first(a, b, cls_id, sep_id, max_length):
    # B shortened down to one token before A loses any, then packed by tfcourse
    room = len(a) + len(b) if max_length is None else max_length - 3
    keep_b = min(len(b), max(1, room - len(a)))
    keep_a = min(len(a), room - keep_b)
    return _pack_reference(a[:keep_a], b[:keep_b], cls_id, sep_id, None)


_pack_mistakes = [
    Mistake(
        "first-sep-in-segment-b",
        "your first [SEP] has segment id 1; it closes segment A, so it belongs to segment 0",
        _sep_in_b,
    ),
    Mistake(
        "truncate-b-first",
        "you truncated segment B regardless of length; remove tokens from the end of the *longer* segment, one "
        "at a time",
        _truncate_b_first,
    ),
]
check_function(
    pack_pair,
    _pack_reference,
    _pair_inputs,
    name="(input_ids, token_type_ids)",
    mistakes=_pack_mistakes,
    forbidden=guard.BERT,
)
check_function(
    pack_pair,
    _pack_reference,
    lambda: _pair_inputs(truncate=True),
    name="(input_ids, token_type_ids) after truncation",
    mistakes=_pack_mistakes,
    forbidden=guard.BERT,
)
### BEGIN HIDDEN TESTS
# hidden: one-token segments, the shortest max_length, and a max_length that needs no truncation
for _case in (
    lambda: {"a": [7], "b": [8], "cls_id": 101, "sep_id": 102, "max_length": 5},
    lambda: {**_pair_inputs(), "max_length": 5},
    lambda: {**_pair_inputs(), "max_length": 30},
):
    check_function(
        pack_pair,
        _pack_reference,
        _case,
        name="(input_ids, token_type_ids)",
        mistakes=_pack_mistakes,
        forbidden=guard.BERT,
        trials=2,
    )
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The input embedding (2 points)
#
# BERT adds three learned embeddings and normalises the sum: for `input_ids` and `token_type_ids` `(B, T)`,
# tables `word` `(V, D)`, `segment` `(2, D)`, `position` `(max_len, D)` and LayerNorm parameters `gamma`,
# `beta` `(D,)`, return the `(B, T, D)` tensor
#
# $$\mathrm{LN}\big(\mathrm{word}[\text{id}] + \mathrm{segment}[\text{type}] + \mathrm{position}[t]\big)$$
#
# at positions `t = 0 … T-1`, with BERT's `eps = 1e-12` (you may use `F.layer_norm` here).


# %% solution id=bert_embeddings
def bert_embeddings(
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    word: torch.Tensor,
    segment: torch.Tensor,
    position: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
) -> torch.Tensor:
    """LN(word[ids] + segment[types] + position[0..T-1]): (B, T) ids -> (B, T, D)."""
    ### BEGIN SOLUTION
    t = input_ids.shape[1]
    x = word[input_ids] + segment[token_type_ids] + position[:t]  # (B, T, D) + (B, T, D) + (T, D)
    return F.layer_norm(x, x.shape[-1:], gamma, beta, eps=1e-12)
    ### END SOLUTION


# %% tests id=test_bert_embeddings points=2
def _embeddings_reference(input_ids, token_type_ids, word, segment, position, gamma, beta, normalise=True):
    config = ref_bert.BertConfig(
        vocab_size=word.shape[0], d_model=word.shape[1], num_heads=1, max_len=position.shape[0], dropout=0.0
    )
    module = ref_bert.BertEmbeddings(config).eval()
    if not normalise:
        module.norm = torch.nn.Identity()
    with torch.no_grad():
        module.tokens.weight.copy_(word)
        module.segments.weight.copy_(segment)
        module.positions.embedding.weight.copy_(position)
        if normalise:
            module.norm.weight.copy_(gamma)
            module.norm.bias.copy_(beta)
        return module(input_ids, token_type_ids)


def _embedding_inputs():
    b, t, d, vocab, max_len = inputs.size(1, 3), inputs.size(1, 8), inputs.size(2, 12), 30, 16
    split = inputs.lengths(b, t)  # segment B starts here
    return {
        "input_ids": inputs.randint(0, vocab, (b, t)),
        "token_type_ids": (torch.arange(t)[None, :] >= split[:, None]).long(),
        "word": inputs.randn(vocab, d),
        "segment": inputs.randn(2, d),
        "position": inputs.randn(max_len, d),
        "gamma": 1 + 0.5 * inputs.randn(d),
        "beta": inputs.randn(d),
    }


_embedding_mistakes = [
    Mistake(
        "no-segment-embedding",
        "the segment embedding is missing: add segment[token_type_ids]",
        lambda ids, types, word, segment, position, gamma, beta: _embeddings_reference(
            ids, types, word, torch.zeros_like(segment), position, gamma, beta
        ),
    ),
    Mistake(
        "no-position-embedding",
        "the position embedding is missing: add position[t] for t = 0 … T-1",
        lambda ids, types, word, segment, position, gamma, beta: _embeddings_reference(
            ids, types, word, segment, torch.zeros_like(position), gamma, beta
        ),
    ),
    Mistake(
        "embeddings-not-normalised",
        "the sum is not normalised: BERT applies LayerNorm to the summed embeddings",
        lambda ids, types, word, segment, position, gamma, beta: _embeddings_reference(
            ids, types, word, segment, position, gamma, beta, normalise=False
        ),
    ),
]
check_function(
    bert_embeddings,
    _embeddings_reference,
    _embedding_inputs,
    name="embeddings",
    mistakes=_embedding_mistakes,
    forbidden=guard.BERT,
)
### BEGIN HIDDEN TESTS
# hidden: a single token per sequence
check_function(
    bert_embeddings,
    _embeddings_reference,
    lambda: {
        **_embedding_inputs(),
        "input_ids": inputs.randint(0, 30, (2, 1)),
        "token_type_ids": torch.zeros(2, 1, dtype=torch.long),
    },
    name="embeddings",
    mistakes=_embedding_mistakes,
    forbidden=guard.BERT,
    trials=2,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. The pooled output (1 point)
#
# `hidden` is the encoder's `(B, T, D)` output. BERT's pooled output, used by the next-sentence and sentence
# classification heads, is the `[CLS]` vector (position 0) through a dense layer and `tanh`:
# `tanh(hidden[:, 0] @ weightᵀ + bias)` for `weight` `(D, D)` and `bias` `(D,)`. Return it, `(B, D)`.


# %% solution id=pooled_output
def pooled_output(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """tanh(W·h_[CLS] + b): (B, T, D) -> (B, D)."""
    ### BEGIN SOLUTION
    return torch.tanh(hidden[:, 0] @ weight.T + bias)
    ### END SOLUTION


# %% tests id=test_pooled_output points=1
class _Given(torch.nn.Module):
    """Stands in for BERT's embeddings and encoder: returns the given hidden states."""

    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs):
        return self.hidden


def _pooled_reference(hidden, weight, bias):
    # tfcourse's BertModel with the encoder's output given: only its pooler computes anything
    b, t, d = hidden.shape
    config = ref_bert.BertConfig(
        vocab_size=1, d_model=d, num_heads=1, num_layers=1, d_ff=1, max_len=t, dropout=0.0, attention_dropout=0.0
    )
    model = ref_bert.BertModel(config).to(hidden.dtype).eval()
    model.embeddings = model.encoder = _Given(hidden)
    with torch.no_grad():
        model.pooler.weight.copy_(weight)
        model.pooler.bias.copy_(bias)
        return model(torch.zeros(b, t, dtype=torch.long)).pooled_output


def _pooled_inputs():
    b, t, d = inputs.size(1, 4), inputs.size(2, 6), inputs.size(2, 10)
    return {"hidden": inputs.randn(b, t, d), "weight": inputs.randn(d, d) / d**0.5, "bias": inputs.randn(d)}


_pooled_mistakes = [
    Mistake(
        "pooled-mean",
        "you pooled the mean over the tokens; BERT's pooled output takes the [CLS] vector, position 0",
        lambda hidden, weight, bias: _pooled_reference(hidden.mean(1, keepdim=True), weight, bias),
    ),
    Mistake(
        "pooled-last-token",
        "you took the last token; BERT's [CLS] token is the first one, position 0",
        lambda hidden, weight, bias: _pooled_reference(hidden[:, -1:], weight, bias),
    ),
    Mistake(
        "pooled-no-tanh",
        "the tanh is missing after the dense layer",
        lambda hidden, weight, bias: torch.atanh(_pooled_reference(hidden.double(), weight.double(), bias.double())).to(
            hidden.dtype
        ),
    ),
    Mistake(
        "pooled-weight-not-transposed",
        "you multiplied by weight instead of its transpose: a dense layer computes x @ weight.T + bias",
        lambda hidden, weight, bias: _pooled_reference(hidden, weight.mT, bias),
    ),
]
check_function(
    pooled_output,
    _pooled_reference,
    _pooled_inputs,
    name="pooled output",
    mistakes=_pooled_mistakes,
    forbidden=guard.BERT,
)
### BEGIN HIDDEN TESTS
# hidden: float64 keeps its dtype
check_function(
    pooled_output,
    _pooled_reference,
    lambda: {k: v.double() for k, v in _pooled_inputs().items()},
    name="pooled output (float64)",
    mistakes=_pooled_mistakes,
    forbidden=guard.BERT,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 5. Predicted but unchanged (1 point)
#
# A sequence has 512 real tokens (no special tokens). With BERT's masking, how many of them are, on average,
# **predicted by the masked-LM loss but left unchanged** in the input? Set `answer_unchanged` to a number.

# %% solution id=unchanged
answer_unchanged = None  # replace None with your answer
### BEGIN SOLUTION
answer_unchanged = 512 * 0.15 * 0.1
### END SOLUTION

# %% tests id=test_unchanged points=1
check_answered(answer_unchanged, "answer_unchanged")
### BEGIN HIDDEN TESTS
check_value(
    answer_unchanged,
    7.68,
    "answer_unchanged",
    mistakes={
        51.2: "that is 10 % of all tokens; only the 15 % selected are split 80/10/10",
        61.44: "that is the number replaced by [MASK] (80 % of the selected)",
        76.8: "that is every selected token; only 10 % of them stay unchanged",
        15.36: "that counts the random and the unchanged tokens together; the unchanged are 10 % of the selected",
    },
)
### END HIDDEN TESTS
