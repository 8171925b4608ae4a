"""Unit tests of the checks exercise notebooks call: messages, named mistakes, the reference guard."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tfcourse
import tfcourse.attention
from tfcourse.grading import (
    CheckFailed,
    ReferenceUsed,
    check_function,
    check_proportions,
    check_value,
    compare,
    forbid,
    guard,
    inputs,
    mistakes,
)
from tfcourse.masks import attention_mask, causal_mask, lengths_to_mask
from tfcourse.positions import apply_rotary, rotary_angles


def failure(call, *args, **kwargs) -> str:
    with pytest.raises(CheckFailed) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# --------------------------------------------------------------------------------------------------------------
# compare: type, shape, dtype, device, then the largest error and where


def test_compare_names_type_shape_dtype_device_in_that_order():
    expected = torch.zeros(2, 3)
    assert "should be a torch.Tensor, got list" in failure(compare, [[0.0] * 3] * 2, expected, "output")
    assert "output has shape (3, 2), expected (2, 3)" in failure(
        compare, torch.zeros(3, 2, dtype=torch.int64), expected, "output"
    )
    assert "dtype torch.float64, expected torch.float32" in failure(
        compare, torch.zeros(2, 3, dtype=torch.float64), expected, "output"
    )
    message = failure(compare, torch.zeros(2, 3, device="meta"), expected, "output")
    assert "is on device meta, expected cpu" in message
    assert "is None" in failure(compare, None, expected, "output")


def test_compare_reports_largest_error_and_its_index():
    expected = torch.zeros(2, 3, 4)
    actual = expected.clone()
    actual[1, 2, 3] = 0.5
    actual[0, 0, 0] = 0.1
    message = failure(compare, actual, expected, "attention output")
    assert "attention output differs" in message
    assert "at 2 of 24 entries" in message
    assert "largest error 0.5 at index (1, 2, 3)" in message
    assert "got 0.5, expected 0" in message


def test_compare_flags_nan_where_finite_expected():
    actual = torch.tensor([1.0, float("nan"), 2.0])
    message = failure(compare, actual, torch.tensor([1.0, 0.0, 2.0]), "weights")
    assert "NaN" in message and "index (1,)" in message


def test_compare_exact_for_bool_and_integers():
    mask = causal_mask(4)
    wrong = mask.clone()
    wrong[0, 1] = True
    message = failure(compare, wrong, mask, "causal mask")
    assert "differs at 1 of 16 entries; first at index (0, 1): got True, expected False" in message
    compare(mask.clone(), mask, "causal mask")


def test_tolerances_follow_the_dtype():
    expected = torch.ones(8)
    compare((expected + 1e-3).half(), expected.half())  # within float16's tolerance
    assert "tolerance" in failure(compare, expected + 1e-3, expected)  # not within float32's
    compare(expected.double() + 1e-12, expected.double())
    assert "float64" in failure(compare, expected.double() + 1e-6, expected.double())


def test_compare_numbers_and_tuples():
    compare(0.5, 0.5 + 1e-12)
    compare(torch.tensor(2.0), 2.0)
    assert "should be a number" in failure(compare, "2", 2.0, "scale")
    assert "has 1 values, expected 2" in failure(compare, (torch.ones(1),), (torch.ones(1), torch.ones(1)), "pair")
    assert "pair[1] has shape" in failure(
        compare, (torch.ones(1), torch.ones(2)), (torch.ones(1), torch.ones(1)), "pair"
    )


# --------------------------------------------------------------------------------------------------------------
# Named mistakes: every mistake kind of the first exercises, and those the later ones will use


def _attention_inputs(masked=False, causal=False):
    b, h, t, d = inputs.size(2, 3), 2, inputs.size(3, 6), inputs.size(4, 16)
    lengths = inputs.lengths(b, t)
    lengths[0] = t - 1  # one padded query, hence one fully masked row
    out = {"q": inputs.randn(b, h, t, d), "k": inputs.randn(b, h, t, d), "v": inputs.randn(b, h, t, d)}
    if masked:
        out["mask"] = attention_mask(lengths_to_mask(lengths, t), causal=causal)
    return out


def _reference_attention(q, k, v, mask=None):
    return tfcourse.attention.attention_reference(q, k, v, mask)[0]


def _correct_attention(q, k, v, mask=None):
    # a learner's right answer, written out (mistakes.attention is one of guard.ATTENTION's forbidden routes)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is None:
        return torch.softmax(scores, -1) @ v
    weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), -1).masked_fill(~mask, 0.0)
    return weights @ v


def _rope_inputs():
    t, d = inputs.size(2, 8), 2 * inputs.size(2, 8)
    return {"x": inputs.randn(2, t, d), "positions": torch.arange(t)}


def _rope(x, positions, pairing="interleaved"):
    return apply_rotary(x, rotary_angles(positions, x.shape[-1]), pairing=pairing)


def _p_inputs():
    p = torch.softmax(inputs.randn(3, 7), dim=-1)
    p[:, 0] = 0.0
    return {"p": p / p.sum(-1, keepdim=True)}


MISTAKE_CASES = {
    "missing-scale": (
        lambda q, k, v: torch.softmax(q @ k.mT, -1) @ v,
        _reference_attention,
        _attention_inputs,
        [mistakes.MISSING_SCALE, mistakes.SOFTMAX_OVER_QUERIES],
        "not divided by √d_k",
    ),
    "scaled-by-d": (
        lambda q, k, v: torch.softmax(q @ k.mT / q.shape[-1], -1) @ v,
        _reference_attention,
        _attention_inputs,
        [mistakes.MISSING_SCALE, mistakes.SCALED_BY_D],
        "divided by d_k instead of √d_k",
    ),
    "softmax-over-queries": (
        lambda q, k, v: torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), -2) @ v,
        _reference_attention,
        _attention_inputs,
        [mistakes.MISSING_SCALE, mistakes.SOFTMAX_OVER_QUERIES],
        "normalises over the queries",
    ),
    "inverted-mask": (
        lambda q, k, v, mask: mistakes.attention(q, k, v, ~mask),
        _reference_attention,
        lambda: _attention_inputs(masked=True),
        [mistakes.NAN_MASKED_ROWS, mistakes.INVERTED_MASK],
        "polarity is inverted",
    ),
    "nan-masked-rows": (
        lambda q, k, v, mask: torch.softmax((q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~mask, -math.inf), -1) @ v,
        _reference_attention,
        lambda: _attention_inputs(masked=True, causal=True),
        [mistakes.INVERTED_MASK, mistakes.NAN_MASKED_ROWS],
        "come out as NaN",
    ),
    "causal-no-diagonal": (
        lambda t: torch.ones(t, t, dtype=torch.bool).tril(-1),
        causal_mask,
        lambda: {"t": inputs.size(2, 9)},
        [mistakes.CAUSAL_ONE_AHEAD, mistakes.CAUSAL_NO_DIAGONAL],
        "excludes the diagonal",
    ),
    "causal-one-ahead": (
        lambda t: torch.arange(t)[None, :] <= torch.arange(t)[:, None] + 1,
        causal_mask,
        lambda: {"t": inputs.size(2, 9)},
        [mistakes.CAUSAL_NO_DIAGONAL, mistakes.CAUSAL_ONE_AHEAD],
        "one step into the future",
    ),
    "causal-inverted": (
        lambda t: torch.ones(t, t, dtype=torch.bool).triu(1),
        causal_mask,
        lambda: {"t": inputs.size(2, 9)},
        [mistakes.CAUSAL_NO_DIAGONAL, mistakes.CAUSAL_INVERTED],
        "causal mask is inverted",
    ),
    "no-query-padding (broadcast)": (
        lambda valid: valid[:, None, None, :],  # (B, 1, 1, T): the usual way to forget the queries
        attention_mask,
        lambda: {"valid": lengths_to_mask(inputs.lengths(3, 6, min_len=1), 6)},
        [mistakes.NO_QUERY_PADDING],
        "forgot the padded queries",
    ),
    "no-query-padding (expanded)": (
        lambda valid: valid[:, None, None, :].expand(-1, 1, valid.shape[1], -1),
        attention_mask,
        lambda: {"valid": lengths_to_mask(inputs.lengths(3, 6, min_len=1), 6)},
        [mistakes.NO_QUERY_PADDING],
        "forgot the padded queries",
    ),
    "rope-half-split": (
        lambda x, positions: _rope(x, positions, "half"),
        _rope,
        _rope_inputs,
        [mistakes.ROPE_HALF_SPLIT],
        "half-split",
    ),
    "rope-interleaved": (
        lambda x, positions: _rope(x, positions, "interleaved"),
        lambda x, positions: _rope(x, positions, "half"),
        _rope_inputs,
        [mistakes.ROPE_INTERLEAVED],
        "neighbouring pairs",
    ),
    "entropy-bits": (
        lambda p: -torch.special.xlogy(p, p).sum(-1) / math.log(2),
        tfcourse.entropy,
        _p_inputs,
        [mistakes.ENTROPY_NAN_AT_ZERO, mistakes.ENTROPY_IN_BITS],
        "in bits",
    ),
    "entropy-nan-at-zero": (
        lambda p: -(p * p.log()).sum(-1),
        tfcourse.entropy,
        _p_inputs,
        [mistakes.ENTROPY_IN_BITS, mistakes.ENTROPY_NAN_AT_ZERO],
        "NaN where a probability is 0",
    ),
}


@pytest.mark.parametrize("case", list(MISTAKE_CASES))
def test_named_mistake_is_recognised(case):
    wrong, reference, make_inputs, known, words = MISTAKE_CASES[case]
    message = failure(check_function, wrong, reference, make_inputs, name="result", mistakes=known)
    assert words in message, message
    assert "result is wrong:" in message


def test_correct_answers_pass_with_the_same_mistakes_listed():
    check_function(_correct_attention, _reference_attention, _attention_inputs, mistakes=[mistakes.MISSING_SCALE])
    known = [mistakes.NAN_MASKED_ROWS, mistakes.INVERTED_MASK]
    check_function(_correct_attention, _reference_attention, lambda: _attention_inputs(True, True), mistakes=known)
    check_function(lambda t: torch.ones(t, t, dtype=torch.bool).tril(), causal_mask, lambda: {"t": 5})


def test_unknown_mistake_gets_the_plain_difference_and_the_inputs():
    message = failure(
        check_function,
        lambda q, k, v: _reference_attention(q, k, v) * 2,
        _reference_attention,
        _attention_inputs,
        name="attention output",
        mistakes=[mistakes.MISSING_SCALE],
    )
    assert "attention output differs" in message and "largest error" in message
    assert "(inputs: q: tensor (" in message


def test_mlm_proportions_swapped_is_named_and_right_split_passes():
    check_proportions([8012, 1003, 985], (0.8, 0.1, 0.1), name="MLM split")
    message = failure(check_proportions, [1000, 8000, 1000], (0.8, 0.1, 0.1), name="MLM split")
    assert "80/10/10 split is swapped" in message
    message = failure(
        check_proportions, [5000, 2500, 2500], (0.8, 0.1, 0.1), name="MLM split", labels=["mask", "random", "keep"]
    )
    assert "mask 0.500 (expected 0.800)" in message


def test_check_value_grades_by_value_without_revealing_it():
    check_value(64.0, 64, "answer_variance")
    check_value(torch.tensor(64), 64, "answer_variance")
    assert "not answered yet" in failure(check_value, None, 64, "answer_variance")
    assert "should be a number" in failure(check_value, "64", 64, "answer_variance")
    assert "standard deviation" in failure(check_value, 8, 64, "answer_variance", mistakes={8: "standard deviation"})
    message = failure(check_value, 63, 64, "answer_variance")
    assert "64" not in message.replace("answer_variance", "")


# --------------------------------------------------------------------------------------------------------------
# The guard: the reference and PyTorch's fused kernels are off while the learner's code runs


FORBIDDEN = [
    "tfcourse.attention.scaled_dot_product_attention",
    "torch.nn.functional.scaled_dot_product_attention",
    "torch.nn.MultiheadAttention.forward",
]


def _originals():
    return (
        tfcourse.scaled_dot_product_attention,
        tfcourse.attention.scaled_dot_product_attention,
        F.scaled_dot_product_attention,
        nn.MultiheadAttention.forward,
    )


def test_guard_blocks_reference_reexports_and_fused_kernels_then_restores():
    before = _originals()
    q = torch.randn(1, 2, 3, 4)
    namespace = {"sdpa": F.scaled_dot_product_attention, "other": len}
    with forbid(*FORBIDDEN, namespaces=[namespace]) as active:
        for call in (
            lambda: tfcourse.scaled_dot_product_attention(q, q, q),
            lambda: tfcourse.attention.scaled_dot_product_attention(q, q, q),
            lambda: F.scaled_dot_product_attention(q, q, q),
            lambda: namespace["sdpa"](q, q, q),  # `from torch.nn.functional import ...` in the learner's globals
            lambda: nn.MultiheadAttention(4, 2, batch_first=True)(q[0], q[0], q[0]),
        ):
            with pytest.raises(ReferenceUsed, match="asks for your own implementation"):
                call()
        assert namespace["other"] is len
    assert len(active.calls) == 5
    assert _originals() == before
    assert namespace["sdpa"] is F.scaled_dot_product_attention
    assert torch.allclose(tfcourse.scaled_dot_product_attention(q, q, q), F.scaled_dot_product_attention(q, q, q))


def test_guard_restores_after_an_exception():
    before = _originals()
    with pytest.raises(ZeroDivisionError), forbid(*FORBIDDEN):
        assert tfcourse.scaled_dot_product_attention is not before[0]
        _ = 1 / 0
    assert _originals() == before


def test_check_function_fails_a_learner_who_calls_the_reference_even_if_caught():
    def sneaky(q, k, v):
        try:
            return tfcourse.scaled_dot_product_attention(q, k, v)
        except Exception:
            return torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), -1) @ v

    def fused(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    for learner in (sneaky, fused):
        message = failure(check_function, learner, _reference_attention, _attention_inputs, forbidden=guard.ATTENTION)
        assert "asks you to implement yourself" in message
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention
    # The check's own reference uses the fused kernel, outside the guard: this passes.
    check_function(
        _correct_attention, tfcourse.scaled_dot_product_attention, _attention_inputs, forbidden=guard.ATTENTION
    )


def test_guard_rejects_paths_that_do_not_exist():
    with pytest.raises(ValueError, match="cannot forbid"):
        forbid("tfcourse.attention.no_such_function").__enter__()


# --------------------------------------------------------------------------------------------------------------
# check_function's other duties


def test_inputs_are_fresh_and_ignore_the_learners_seed():
    torch.manual_seed(0)
    a = inputs.randn(4)
    torch.manual_seed(0)
    b = inputs.randn(4)
    assert not torch.equal(a, b)


def test_warnings_never_cost_points(capsys):
    def noisy(q, k, v):
        warnings.warn("just saying", UserWarning, stacklevel=1)
        return _correct_attention(q, k, v)

    check_function(noisy, _reference_attention, _attention_inputs, trials=1)
    assert "no points lost" in capsys.readouterr().out


def test_in_place_changes_to_inputs_are_reported():
    def scribbles(q, k, v):
        result = _correct_attention(q, k, v)
        q.zero_()
        return result

    assert "changed its input 'q' in place" in failure(
        check_function, scribbles, _reference_attention, _attention_inputs
    )


def test_learner_exceptions_propagate_with_the_inputs_noted():
    def broken(q, k, v):
        raise NotImplementedError("later")

    with pytest.raises(NotImplementedError) as caught:
        check_function(broken, _reference_attention, _attention_inputs)
    assert any("raised by broken on inputs q: tensor" in note for note in getattr(caught.value, "__notes__", []))


def test_chapter_guard_presets_resolve_and_block_their_references():
    # The presets of the exercises for chapters 9-13 name callables that exist, and forbid() blocks them.
    import tfcourse.positions

    for preset in (guard.T5, guard.TRANSFORMER_XL, guard.FUNNEL, guard.SPARSE, guard.EFFICIENT):
        for path in preset:
            guard.resolve(path)

    def learner(x):
        return tfcourse.positions.rel_shift(x)

    message = failure(
        check_function,
        learner,
        tfcourse.positions.rel_shift,
        lambda: {"x": inputs.randn(3, 4)},
        forbidden=guard.TRANSFORMER_XL,
    )
    assert "rel_shift" in message


@pytest.mark.parametrize("preset", ["POSITIONS", "LAYER_NORM", "LAYER", "GENERATION", "BERT"])
def test_chapter_5_to_8_guard_presets_resolve_block_and_restore(preset):
    import tfcourse.generation
    import tfcourse.positions

    paths = getattr(guard, preset)
    before = [guard.resolve(path)[2] for path in paths]
    with forbid(*paths):
        pass
    assert [guard.resolve(path)[2] for path in paths] == before
    blocked = {
        "POSITIONS": lambda: tfcourse.positions.rotary_angles(torch.arange(3), 4),
        "LAYER_NORM": lambda: nn.LayerNorm(4)(torch.randn(2, 4)),
        "LAYER": lambda: F.layer_norm(torch.randn(2, 4), (4,)),
        "GENERATION": lambda: tfcourse.generation.top_k_filter(torch.randn(2, 5), 2),
        "BERT": lambda: tfcourse.pretraining.pack_pair([5], [6], cls_token_id=1, sep_token_id=2),
    }[preset]
    with forbid(*paths), pytest.raises(ReferenceUsed, match="asks for your own implementation"):
        blocked()
