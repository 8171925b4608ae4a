"""Probes used by the chapters: attention recording, head ablation, the softmax Jacobian, subspace overlap."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tfcourse.analysis import ablate_heads, head_divergence, record_attention, softmax_jacobian, subspace_overlap
from tfcourse.attention import MultiHeadAttention, merge_heads, scaled_dot_product_attention, split_heads
from tfcourse.cache import KVCache
from tfcourse.masks import lengths_to_mask
from tfcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig

# ------------------------------------------------------------------------------------------------ Jacobian


def test_softmax_jacobian_matches_autograd(gen):
    x = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64)
    ours = softmax_jacobian(torch.softmax(x, dim=-1))  # (3, 5, 7, 7)
    for i in range(3):
        for j in range(5):
            expected = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, dim=-1), x[i, j])
            torch.testing.assert_close(ours[i, j], expected)


def test_softmax_jacobian_properties(gen):
    p = torch.softmax(torch.randn(4, 6, generator=gen, dtype=torch.float64), dim=-1)
    jac = softmax_jacobian(p)
    torch.testing.assert_close(jac, jac.transpose(-1, -2))  # symmetric
    torch.testing.assert_close(jac.sum(-1), torch.zeros(4, 6, dtype=torch.float64))  # shifting x changes nothing
    one_hot = torch.tensor([0.0, 1.0, 0.0])
    assert softmax_jacobian(one_hot).abs().max() == 0  # saturated softmax: no gradient at all


def test_softmax_jacobian_vanishes_for_a_a_2a():
    norms = []
    for a in (1.0, 5.0, 10.0, 20.0):
        p = torch.softmax(torch.tensor([a, a, 2 * a], dtype=torch.float64), dim=0)
        norms.append(float(softmax_jacobian(p).norm()))
    assert all(later < earlier / 10 for earlier, later in itertools.pairwise(norms[1:]))
    assert norms[-1] < 1e-7


def test_softmax_jacobian_rejects_integer_input():
    with pytest.raises(TypeError, match="p"):
        softmax_jacobian(torch.tensor([1, 0]))


# ------------------------------------------------------------------------------------------------ overlap


def test_subspace_overlap_extremes_and_basis_invariance(gen):
    a = torch.randn(4, 16, generator=gen)
    mix = torch.randn(4, 4, generator=gen) + 3 * torch.eye(4)  # an invertible change of basis
    assert float(subspace_overlap(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(subspace_overlap(a, mix @ a)) == pytest.approx(1.0, abs=1e-6)
    eye = torch.eye(16)
    assert float(subspace_overlap(eye[:4], eye[4:8])) == pytest.approx(0.0, abs=1e-7)
    assert float(subspace_overlap(eye[:4], eye[2:6])) == pytest.approx(0.5, abs=1e-6)


def test_subspace_overlap_of_random_subspaces_is_about_k_over_d(gen):
    values = [
        float(subspace_overlap(torch.randn(8, 64, generator=gen), torch.randn(8, 64, generator=gen))) for _ in range(40)
    ]
    assert sum(values) / len(values) == pytest.approx(8 / 64, abs=0.03)


def test_subspace_overlap_checks_shapes():
    with pytest.raises(ValueError, match="width"):
        subspace_overlap(torch.randn(2, 8), torch.randn(2, 9))
    with pytest.raises(ValueError, match="b"):
        subspace_overlap(torch.randn(2, 8), torch.randn(8))


# ------------------------------------------------------------------------------------------------ ablation


def _manual_mha_without(mha: MultiHeadAttention, x: torch.Tensor, heads: list[int]) -> torch.Tensor:
    q = split_heads(mha.q_proj(x), mha.num_heads)
    k = split_heads(mha.k_proj(x), mha.num_heads)
    v = split_heads(mha.v_proj(x), mha.num_heads)
    out = scaled_dot_product_attention(q, k, v).clone()  # (B, H, T, Dh)
    out[:, heads] = 0
    return mha.out_proj(merge_heads(out))


def test_ablate_heads_removes_exactly_those_heads(device, gen):
    mha = MultiHeadAttention(16, 4).to(device).eval()
    x = torch.randn(2, 5, 16, generator=gen).to(device)
    with torch.no_grad():
        full = mha(x)
        with ablate_heads({mha: [1, 3]}):
            ablated = mha(x)
        restored = mha(x)
        torch.testing.assert_close(ablated, _manual_mha_without(mha, x, [1, 3]))
    torch.testing.assert_close(restored, full)  # the hook is gone after the block
    assert not torch.allclose(ablated, full)


def test_ablating_every_head_leaves_only_the_output_bias(gen):
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 3, 8, generator=gen)
    with torch.no_grad(), ablate_heads({mha: range(2)}):
        out = mha(x)
    torch.testing.assert_close(out, mha.out_proj.bias.detach().expand(1, 3, 8))


def test_ablate_heads_works_during_cached_decoding(gen):
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 4, 8, generator=gen)
    with torch.no_grad(), ablate_heads({mha: [0]}):
        full = mha(x, causal=True)
        cache = KVCache(1, 2, 4, 4)
        steps = [mha(x[:, t : t + 1], causal=True, cache=cache).output for t in range(4)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_ablate_heads_checks_its_arguments():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"\[2\]"), ablate_heads({mha: [2]}):
        pass
    with pytest.raises(TypeError, match="MultiHeadAttention"), ablate_heads({torch.nn.Linear(2, 2): [0]}):
        pass


# ------------------------------------------------------------------------------------------------ recording


def test_record_attention_returns_the_modules_own_weights(device, gen):
    mha = MultiHeadAttention(16, 4).to(device).eval()
    x = torch.randn(2, 5, 16, generator=gen).to(device)
    mask = lengths_to_mask([5, 3]).to(device)[:, None, None, :]
    with torch.no_grad():
        expected = mha(x, mask=mask, return_weights=True).weights
        with record_attention({"self": mha}) as recorded:
            out = mha(x, mask=mask)  # an ordinary call: the hook asks for the weights itself
            again = mha(x, mask=mask, return_weights=True)  # a call that already returns them
        plain = mha(x, mask=mask)
    assert len(recorded["self"]) == 2
    torch.testing.assert_close(recorded["self"][0], expected)
    torch.testing.assert_close(recorded["self"][1], again.weights)
    assert torch.equal(out, plain)  # the recorded call's output is untouched
    assert recorded["self"][0][1, :, :, 3:].abs().max() == 0  # padded keys get no weight


def test_record_attention_in_a_seq2seq_model(gen):
    model = Seq2Seq(Seq2SeqConfig.tiny()).eval()
    src = torch.randint(3, 32, (2, 6), generator=gen)
    tgt_in = torch.randint(3, 32, (2, 4), generator=gen)
    modules = {f"cross {i}": layer.cross_attn for i, layer in enumerate(model.decoder.layers)}
    modules["decoder self 0"] = model.decoder.layers[0].self_attn
    with torch.no_grad():
        reference = model(src, tgt_in)
        with record_attention(modules) as recorded:
            logits = model(src, tgt_in)
    torch.testing.assert_close(logits, reference)
    assert recorded["cross 0"][0].shape == (2, 4, 4, 6)
    causal = recorded["decoder self 0"][0]  # (B, H, T, T): nothing above the diagonal
    assert causal.triu(diagonal=1).abs().max() == 0
    torch.testing.assert_close(causal.sum(-1), torch.ones(2, 4, 4))
    # the hooks are removed afterwards
    assert all(not module._forward_hooks for module in modules.values())


def test_record_attention_refuses_cached_calls():
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 1, 8)
    with torch.no_grad(), pytest.raises(ValueError, match="cache"), record_attention({"self": mha}):
        mha(x, cache=KVCache(1, 2, 4, 4))


def test_record_attention_checks_its_arguments():
    with pytest.raises(TypeError, match="modules"), record_attention({}):
        pass
    with pytest.raises(TypeError, match="MultiHeadAttention"), record_attention({"x": torch.nn.Linear(2, 2)}):
        pass


def test_subspace_overlap_is_a_mean_squared_cosine():
    # two lines at angle θ in the plane: overlap = cos²θ
    theta = 0.3
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[math.cos(theta), math.sin(theta)]])
    assert float(subspace_overlap(a, b)) == pytest.approx(math.cos(theta) ** 2, abs=1e-6)


# ------------------------------------------------------------------------------------------------ head divergence


def test_head_divergence_matches_kl_from_torch_distributions(gen):
    from torch.distributions import Categorical, kl_divergence

    weights = torch.randn(2, 3, 4, 5, generator=gen).softmax(-1)  # (B, N, Tq, Tk)
    weights[0, 2, 1] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])  # a one-hot row (zeros in p)
    got = head_divergence(weights)
    expected = torch.zeros(3, 3)
    for i in range(3):
        for j in range(3):
            p, q = weights[:, i].double(), weights[:, j].double()
            m = Categorical(probs=(p + q) / 2)
            js = (kl_divergence(Categorical(probs=p), m) + kl_divergence(Categorical(probs=q), m)) / 2
            expected[i, j] = js.mean() / math.log(2)  # nats to bits, averaged over (B, Tq)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got, got.T)


def test_head_divergence_bounds_and_masked_rows():
    eye = torch.eye(4)  # each query attends to itself
    shifted = torch.roll(eye, 1, dims=-1)  # each query attends to another key
    weights = torch.stack([eye, eye, shifted])[None]  # (1, 3, 4, 4)
    got = head_divergence(weights)
    assert float(got[0, 1]) == pytest.approx(0.0, abs=1e-7)
    assert float(got[0, 2]) == pytest.approx(1.0, abs=1e-6)  # disjoint keys: one bit
    masked = weights.clone()
    masked[0, 2, 0] = 0  # a fully masked query of head 2 is left out of its averages
    assert float(head_divergence(masked)[0, 2]) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        head_divergence(-weights)
    with pytest.raises(ValueError, match="weights"):
        head_divergence(eye)
