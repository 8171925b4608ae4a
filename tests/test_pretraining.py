"""Pre-training objectives: MLM rates and groups within binomial bounds, NSP pairs and packing, T5 span
corruption (round trips, counts, a hand-derived example), parity with Hugging Face, and bad input."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcourse.pretraining import (
    IGNORE_INDEX,
    IS_NEXT,
    NOT_NEXT,
    merge_span_corruption,
    mlm_mask,
    noise_span_counts,
    nsp_pairs,
    pack_pair,
    random_spans_noise_mask,
    span_corruption,
)

# A BERT-like vocabulary: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, then ordinary words.
V, PAD, UNK, CLS, SEP, MASK = 1000, 0, 1, 2, 3, 4
SPECIAL = (UNK, CLS, SEP)
N_ALLOWED = V - 5  # ids a random replacement may take
Z = 5.0  # standard deviations allowed before a rate counts as wrong (false alarm ≈ 6e-7 per check)


def within(count: int, n: int, p: float, z: float = Z) -> bool:
    """Is ``count`` within ``z`` standard deviations of the mean of Binomial(n, p)?"""
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p)) + 0.5  # + 0.5: counts are whole numbers


def same_rate(k1: int, n1: int, k2: int, n2: int, z: float = Z) -> bool:
    """Two-sample test: are k1/n1 and k2/n2 within ``z`` standard errors of each other?"""
    pooled = (k1 + k2) / (n1 + n2)
    return abs(k1 / n1 - k2 / n2) <= z * math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)) + 1e-12


def corpus(gen: torch.Generator, b: int = 2000, t: int = 100) -> torch.Tensor:
    """``(b, t)`` = 200k ids: [CLS] words [SEP] then padding of random length, like a padded BERT batch."""
    ids = torch.randint(5, V, (b, t), generator=gen)
    lengths = torch.randint(t // 2, t + 1, (b,), generator=gen)
    ids[:, 0] = CLS
    ids[torch.arange(b), lengths - 1] = SEP
    ids[torch.arange(t)[None, :] >= lengths[:, None]] = PAD
    return ids


def observed_counts(original: torch.Tensor, corrupted: torch.Tensor, labels: torch.Tensor) -> dict[str, int]:
    """What anyone can see in an MLM batch: selected positions, and among them mask / same / other ids."""
    selected = labels != IGNORE_INDEX
    to_mask = selected & (corrupted == MASK)
    same = selected & (corrupted == original)
    eligible = ~torch.isin(original, torch.tensor([PAD, MASK, *SPECIAL]))
    return {
        "eligible": int(eligible.sum()),
        "selected": int(selected.sum()),
        "mask": int(to_mask.sum()),
        "same": int(same.sum()),
        "other": int((selected & ~to_mask & ~same).sum()),
    }


def mlm_rates_ok(counts: dict[str, int], p: float = 0.15, mask: float = 0.8, random: float = 0.1) -> bool:
    """Are the observed counts consistent with BERT's scheme? A random id equals the original w.p. 1/V'."""
    n = counts["selected"]
    keep = 1 - mask - random
    return (
        within(counts["selected"], counts["eligible"], p)
        and within(counts["mask"], n, mask)
        and within(counts["same"], n, keep + random / N_ALLOWED)
        and within(counts["other"], n, random * (1 - 1 / N_ALLOWED))
    )


def mlm(ids: torch.Tensor, seed: int = 0, **kwargs):
    kwargs = {"mask_token_id": MASK, "vocab_size": V, "special_token_ids": SPECIAL, "pad_token_id": PAD} | kwargs
    return mlm_mask(ids, generator=torch.Generator().manual_seed(seed), **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Masked LM


def test_mlm_rates_match_15_percent_and_80_10_10(gen):
    ids = corpus(gen)
    out = mlm(ids)
    counts = observed_counts(ids, out.input_ids, out.labels)
    assert counts["selected"] > 20_000  # enough draws that 5 s.d. is about ±1 percentage point
    assert mlm_rates_ok(counts)


def test_mlm_rate_check_detects_swapped_proportions(gen):
    ids = corpus(gen)
    swapped = mlm(ids, mask_fraction=0.1, random_fraction=0.8)
    assert not mlm_rates_ok(observed_counts(ids, swapped.input_ids, swapped.labels))
    # ...and the check accepts the same call once told the proportions it was given.
    assert mlm_rates_ok(observed_counts(ids, swapped.input_ids, swapped.labels), mask=0.1, random=0.8)
    half = mlm(ids, mlm_probability=0.3)
    assert not mlm_rates_ok(observed_counts(ids, half.input_ids, half.labels))


def test_mlm_groups_labels_and_special_tokens(gen, device):
    ids = corpus(gen, b=200).to(device)
    out = mlm(ids)
    assert out.input_ids.device == ids.device and out.labels.dtype == torch.long
    special = torch.isin(ids, torch.tensor([PAD, *SPECIAL], device=device))
    assert not out.selected[special].any()
    assert torch.equal(out.input_ids[special], ids[special])
    assert torch.equal(out.labels == IGNORE_INDEX, ~out.selected)
    assert torch.equal(out.labels[out.selected], ids[out.selected])
    assert torch.equal(out.input_ids[~out.selected], ids[~out.selected])
    # The three groups are disjoint, cover the selection, and do what their names say.
    unchanged = out.selected & ~out.masked & ~out.randomized
    assert not (out.masked & out.randomized).any()
    assert torch.equal(out.masked | out.randomized | unchanged, out.selected)
    assert (out.input_ids[out.masked] == MASK).all()
    assert torch.equal(out.input_ids[unchanged], ids[unchanged])
    assert unchanged.any() and out.randomized.any()
    assert not torch.isin(out.input_ids[out.randomized], torch.tensor([PAD, MASK, *SPECIAL], device=device)).any()


def test_mlm_random_tokens_are_uniform_over_non_special_ids(gen):
    ids = torch.randint(5, 12, (20_000,), generator=gen)
    out = mlm_mask(
        ids, mask_token_id=MASK, vocab_size=12, special_token_ids=SPECIAL, pad_token_id=PAD,
        mlm_probability=1.0, mask_fraction=0.0, random_fraction=1.0, generator=gen,
    )  # fmt: skip
    assert out.randomized.all()
    counts = torch.bincount(out.input_ids, minlength=12)
    assert counts[:5].sum() == 0  # never [PAD], [UNK], [CLS], [SEP] or [MASK]
    assert all(within(int(c), ids.numel(), 1 / 7) for c in counts[5:])


def test_mlm_is_reproducible_and_follows_the_seed_on_any_device(device):
    ids = corpus(torch.Generator().manual_seed(0), b=50)
    first, again, other = mlm(ids, seed=7), mlm(ids.to(device), seed=7), mlm(ids, seed=8)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b.cpu())  # draws happen on the CPU generator, so CUDA gives the same batch
    assert not torch.equal(first.input_ids, other.input_ids)
    assert mlm_mask(ids.int(), mask_token_id=MASK, vocab_size=V).input_ids.dtype == torch.int32  # global RNG


def test_mlm_statistics_match_hugging_face_collator(gen):
    transformers = pytest.importorskip("transformers")
    words = [f"w{i}" for i in range(V - 5)]
    tokenizer = transformers.BertTokenizer(
        vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    )
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]", "[MASK]"]) == [PAD, CLS, SEP, MASK]
    assert len(tokenizer) == V
    ids = corpus(gen)
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    theirs = collator([{"input_ids": row} for row in ids])
    ours = mlm(ids)
    a = observed_counts(ids, theirs["input_ids"], theirs["labels"])
    b = observed_counts(ids, ours.input_ids, ours.labels)
    assert same_rate(a["selected"], a["eligible"], b["selected"], b["eligible"])
    for group in ("mask", "same", "other"):
        assert same_rate(a[group], a["selected"], b[group], b["selected"]), group
    assert mlm_rates_ok(a)  # the shared statistic also accepts Hugging Face's batch


def test_mlm_errors_name_the_argument():
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match=r"input_ids must hold ids in \[0, 1000\), got min 5, max 1000"):
        mlm(torch.tensor([5, 1000]))
    with pytest.raises(TypeError, match="input_ids must hold integer token ids"):
        mlm(ids.float())
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        mlm(ids, mlm_probability=1.5)
    with pytest.raises(ValueError, match="random_fraction must be in"):
        mlm(ids, random_fraction=-0.1)
    with pytest.raises(ValueError, match=r"mask_fraction \+ random_fraction must be at most 1, got 0.8 \+ 0.3"):
        mlm(ids, random_fraction=0.3)
    with pytest.raises(ValueError, match=r"mask_token_id must be in \[0, 1000\), got 1000"):
        mlm(ids, mask_token_id=1000)
    with pytest.raises(ValueError, match="special_token_ids"):
        mlm(ids, special_token_ids=(-1,))
    with pytest.raises(ValueError, match="every one of the 2 ids is special"):
        mlm_mask(torch.tensor([0, 1]), mask_token_id=0, vocab_size=2, special_token_ids=(1,))


# ---------------------------------------------------------------------------------------------------------
# Next-sentence prediction


def documents(gen: torch.Generator, n: int = 300) -> list[list[list[int]]]:
    """Documents of 1 to 60 sentences; sentence i of document d is the unique ids [d, i]."""
    lengths = torch.randint(1, 61, (n,), generator=gen).tolist()
    return [[[d, i] for i in range(length)] for d, length in enumerate(lengths)]


def test_nsp_pairs_are_half_next_and_really_consecutive(gen):
    docs = documents(gen)
    pairs = nsp_pairs(docs, generator=gen)
    anchors = [(d, i) for d, doc in enumerate(docs) for i in range(len(doc) - 1)]
    assert [p.a_source for p in pairs] == anchors  # every sentence with a successor, in order
    assert len(pairs) > 5000
    assert within(sum(p.label == IS_NEXT for p in pairs), len(pairs), 0.5)
    for p in pairs:
        (da, ia), (db, ib) = p.a, p.b  # read the provenance from the sentences themselves
        assert (da, ia) == p.a_source and (db, ib) == p.b_source
        if p.label == IS_NEXT:
            assert (db, ib) == (da, ia + 1)
        else:
            assert p.label == NOT_NEXT and db != da


def test_nsp_probability_is_honoured_and_the_check_has_power(gen):
    pairs = nsp_pairs(documents(gen), is_next_probability=0.8, generator=gen)
    is_next = sum(p.label == IS_NEXT for p in pairs)
    assert within(is_next, len(pairs), 0.8)
    assert not within(is_next, len(pairs), 0.5)


def test_nsp_random_document_is_uniform_over_the_others(gen):
    # Only document 0 has anchors; documents 1 and 2 (one sentence each) can only serve as random B.
    docs = [[f"s{i}" for i in range(4001)], ["x"], ["y"]]
    pairs = [p for p in nsp_pairs(docs, generator=gen) if p.label == NOT_NEXT]
    assert within(sum(p.b == "x" for p in pairs), len(pairs), 0.5)
    assert {p.b for p in pairs} == {"x", "y"}


def test_nsp_is_reproducible(gen):
    docs = documents(gen, n=20)
    assert nsp_pairs(docs, generator=torch.Generator().manual_seed(3)) == nsp_pairs(
        docs, generator=torch.Generator().manual_seed(3)
    )
    assert nsp_pairs(docs, generator=torch.Generator().manual_seed(3)) != nsp_pairs(
        docs, generator=torch.Generator().manual_seed(4)
    )


def test_nsp_errors_name_the_argument():
    with pytest.raises(ValueError, match="at least 2 documents.*got 0"):
        nsp_pairs([])
    with pytest.raises(ValueError, match="at least 2 documents.*got 1"):
        nsp_pairs([[[1], [2], [3]]])
    with pytest.raises(ValueError, match=r"documents\[1\] is empty"):
        nsp_pairs([[[1], [2]], []])
    with pytest.raises(ValueError, match=r"no document has two sentences.*\[1, 1\]"):
        nsp_pairs([[[1]], [[2]]])
    with pytest.raises(TypeError, match=r"documents\[0\] must be a list of sentences"):
        nsp_pairs(["abc", [[1]]])
    with pytest.raises(ValueError, match="is_next_probability must be in"):
        nsp_pairs([[[1], [2]], [[3]]], is_next_probability=2.0)


def test_pack_pair_literal():
    packed = pack_pair([5, 6, 7], torch.tensor([8, 9]), cls_token_id=CLS, sep_token_id=SEP)
    assert packed.input_ids.tolist() == [CLS, 5, 6, 7, SEP, 8, 9, SEP]
    assert packed.token_type_ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]


def test_pack_pair_truncates_the_longer_segment_first():
    # 5 + 2 tokens, room for 8 - 3 = 5: A loses its last two tokens, B is untouched.
    packed = pack_pair([11, 12, 13, 14, 15], [21, 22], cls_token_id=CLS, sep_token_id=SEP, max_length=8)
    assert packed.input_ids.tolist() == [CLS, 11, 12, 13, SEP, 21, 22, SEP]
    assert packed.token_type_ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # 3 + 3 tokens, room for 5: on a tie B loses its last token.
    packed = pack_pair([1, 2, 3], [4, 5, 6], cls_token_id=CLS, sep_token_id=SEP, max_length=8)
    assert packed.input_ids.tolist() == [CLS, 1, 2, 3, SEP, 4, 5, SEP]
    assert packed.token_type_ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # 4 + 4 tokens, room for 4: they take turns, B first on each tie, down to (2, 2).
    packed = pack_pair([1, 2, 3, 4], [5, 6, 7, 8], cls_token_id=CLS, sep_token_id=SEP, max_length=7)
    assert packed.input_ids.tolist() == [CLS, 1, 2, SEP, 5, 6, SEP]


def test_pack_pair_errors_name_the_argument():
    with pytest.raises(ValueError, match="max_length must be at least 5.*got 4"):
        pack_pair([1], [2], cls_token_id=CLS, sep_token_id=SEP, max_length=4)
    with pytest.raises(ValueError, match="b is empty"):
        pack_pair([1], [], cls_token_id=CLS, sep_token_id=SEP)
    with pytest.raises(TypeError, match="a must be a sequence of int token ids"):
        pack_pair("hello", [2], cls_token_id=CLS, sep_token_id=SEP)
    with pytest.raises(ValueError, match="a must have 1 dimensions"):
        pack_pair(torch.ones(2, 2, dtype=torch.long), [2], cls_token_id=CLS, sep_token_id=SEP)


# ---------------------------------------------------------------------------------------------------------
# Span corruption


def runs(mask: torch.Tensor) -> list[tuple[bool, int]]:
    """Run-length encoding of a bool mask: [(value, length), ...]."""
    out: list[tuple[bool, int]] = []
    for value in mask.tolist():
        if out and out[-1][0] == value:
            out[-1] = (value, out[-1][1] + 1)
        else:
            out.append((value, 1))
    return out


@settings(max_examples=150, deadline=None)
@given(
    length=st.integers(2, 200),
    density=st.floats(0.01, 0.99),
    mean=st.floats(1.0, 10.0),
    seed=st.integers(0, 2**31),
    eos=st.booleans(),
)
def test_span_corruption_round_trip_counts_and_sentinels(length, density, mean, seed, eos):
    start, eos_id = 999, (1 if eos else None)
    tokens = torch.randint(2, 899, (length,), generator=torch.Generator().manual_seed(seed))
    out = span_corruption(
        tokens, sentinel_start_id=start, noise_density=density, mean_span_length=mean, eos_id=eos_id,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    merged = merge_span_corruption(out.inputs, out.targets, sentinel_start_id=start, eos_id=eos_id)
    assert torch.equal(merged, tokens)
    # The documented counts, written out again here rather than taken from noise_span_counts.
    num_noise = min(max(round(length * density), 1), length - 1)
    num_spans = min(max(round(num_noise / mean), 1), num_noise, length - num_noise)
    assert int(out.noise_mask.sum()) == num_noise
    assert noise_span_counts(length, density, mean) == (num_noise, num_spans)
    # Spans alternate kept / noise, starting with kept tokens and ending with noise (the paper's layout).
    layout = runs(out.noise_mask)
    assert [value for value, _ in layout] == [False, True] * num_spans
    # Sentinels count down from the start id, in the same order on both sides.
    sentinels = list(range(start, start - num_spans, -1))
    assert [t for t in out.inputs.tolist() if t > 899] == sentinels
    assert [t for t in out.targets.tolist() if t > 899] == sentinels
    extra = 1 if eos else 0
    assert len(out.inputs) == length - num_noise + num_spans + extra
    assert len(out.targets) == num_noise + num_spans + extra


def test_span_corruption_literal_from_a_given_mask():
    tokens = torch.arange(10, 20)  # 10 11 12 13 14 15 16 17 18 19
    noise = torch.tensor([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=torch.bool)  # spans {12, 13} and {17}
    out = span_corruption(tokens, sentinel_start_id=99, num_sentinels=10, noise_mask=noise)
    assert out.inputs.tolist() == [10, 11, 99, 14, 15, 16, 98, 18, 19]
    assert out.targets.tolist() == [99, 12, 13, 98, 17]
    # A mask may also start with noise; with EOS appended to both sides.
    noise = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    out = span_corruption(tokens, sentinel_start_id=99, num_sentinels=10, noise_mask=noise, eos_id=1)
    assert out.inputs.tolist() == [99, 11, 12, 13, 14, 15, 16, 17, 98, 1]
    assert out.targets.tolist() == [99, 10, 98, 18, 19, 1]


def test_span_corruption_literal_with_a_fixed_generator():
    # 12 tokens at density 0.5, mean span 2: 6 noise tokens in 3 spans, 6 kept tokens in 3 runs.
    tokens = torch.arange(10, 22)
    out = span_corruption(
        tokens, sentinel_start_id=99, num_sentinels=10, noise_density=0.5, mean_span_length=2.0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    # The spans seed 0 chooses (pinned; torch's random streams are fixed for a torch version):
    # kept 10 11 12 13 | noise 14 | kept 15 | noise 16 17 18 19 | kept 20 | noise 21
    assert runs(out.noise_mask) == [(False, 4), (True, 1), (False, 1), (True, 4), (False, 1), (True, 1)]
    # By hand from those spans: sentinels 99, 98, 97 stand for {14}, {16..19} and {21}.
    assert out.inputs.tolist() == [10, 11, 12, 13, 99, 15, 98, 20, 97]
    assert out.targets.tolist() == [99, 14, 98, 16, 17, 18, 19, 97, 21]


def test_span_lengths_are_a_uniform_random_segmentation():
    # 8 tokens at density 0.5, mean 2: 4 noise tokens in 2 spans, so the first span has 1, 2 or 3 tokens,
    # each with probability 1/3; likewise the first kept run.
    gen = torch.Generator().manual_seed(0)
    draws = [
        runs(random_spans_noise_mask(8, noise_density=0.5, mean_span_length=2, generator=gen)) for _ in range(3000)
    ]
    first_noise = Counter(layout[1][1] for layout in draws)
    first_kept = Counter(layout[0][1] for layout in draws)
    assert set(first_noise) == set(first_kept) == {1, 2, 3}
    assert all(within(c, 3000, 1 / 3) for c in [*first_noise.values(), *first_kept.values()])


def test_sentinels_match_the_t5_tokenizer_convention():
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.T5Tokenizer(extra_ids=10)  # built locally: <pad> </s> <unk> ▁ + 10 sentinels
    top = len(tokenizer) - 1
    tokens = torch.tensor([3, 3, 3, 2, 2, 2, 3, 3])
    out = span_corruption(
        tokens, sentinel_start_id=top, num_sentinels=10, noise_mask=tokens == 2, eos_id=tokenizer.eos_token_id
    )
    assert tokenizer.convert_ids_to_tokens(out.inputs.tolist())[3] == "<extra_id_0>"
    assert tokenizer.convert_ids_to_tokens(out.targets.tolist())[0] == "<extra_id_0>"
    assert tokenizer.convert_ids_to_tokens([top - 1])[0] == "<extra_id_1>"
    assert out.targets.tolist()[-1] == tokenizer.eos_token_id == 1


def test_span_corruption_errors_name_the_argument():
    tokens = torch.arange(20)
    with pytest.raises(ValueError, match="length must be at least 2.*got 1"):
        span_corruption(torch.tensor([5]), sentinel_start_id=199)
    with pytest.raises(ValueError, match="noise_density must be strictly between 0 and 1, got 0.0"):
        span_corruption(tokens, sentinel_start_id=199, noise_density=0.0)
    with pytest.raises(ValueError, match="noise_density must be in"):
        span_corruption(tokens, sentinel_start_id=199, noise_density=1.5)
    with pytest.raises(ValueError, match="mean_span_length must be at least 1, got 0.5"):
        span_corruption(tokens, sentinel_start_id=199, mean_span_length=0.5)
    with pytest.raises(
        ValueError, match=r"tokens must hold ids in \[0, 10\) \(10 to 19 are sentinels\), got min 0, max 19"
    ):
        span_corruption(tokens, sentinel_start_id=19, num_sentinels=10)
    with pytest.raises(ValueError, match="would go below id 0"):
        span_corruption(tokens, sentinel_start_id=50)
    with pytest.raises(ValueError, match="5 noise spans but only num_sentinels=2"):
        span_corruption(tokens, sentinel_start_id=99, num_sentinels=2, noise_mask=tokens % 4 == 1)
    with pytest.raises(ValueError, match="noise_mask must be a bool tensor shaped like tokens"):
        span_corruption(tokens, sentinel_start_id=199, noise_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="tokens must have 1 dimensions"):
        span_corruption(tokens[None], sentinel_start_id=199)
    inputs, targets = torch.tensor([10, 99, 11, 98]), torch.tensor([99, 5, 98, 6])
    assert merge_span_corruption(inputs, targets, sentinel_start_id=99, num_sentinels=10).tolist() == [10, 5, 11, 6]
    with pytest.raises(ValueError, match="targets: expected sentinel 99, got 98"):
        merge_span_corruption(inputs, torch.tensor([98, 5, 99, 6]), sentinel_start_id=99, num_sentinels=10)
    with pytest.raises(ValueError, match="targets must start with sentinel 99"):
        merge_span_corruption(inputs, targets.flip(0), sentinel_start_id=99, num_sentinels=10)
    with pytest.raises(ValueError, match="targets hold 2 spans but inputs have 1 sentinels"):
        merge_span_corruption(inputs[:2], targets, sentinel_start_id=99, num_sentinels=10)
    with pytest.raises(ValueError, match="inputs must end with eos_id=1"):
        merge_span_corruption(inputs, targets, sentinel_start_id=99, num_sentinels=10, eos_id=1)
