"""FLASH's gated attention unit: chunked attention against its dense form, causality, linear memory, and
clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from tests.helpers import assert_close, randn
from tfcourse.models.gau import (
    FLASH,
    GAU,
    FLASHConfig,
    mixed_chunk_attention,
    mixed_chunk_attention_matrix,
    squared_relu_attention,
)
from tfcourse.positions import apply_rotary, rotary_angles


def tiny_flash(device="cpu", **overrides) -> FLASH:
    torch.manual_seed(0)
    model = FLASH(FLASHConfig.tiny(**overrides))
    for gau in model.layers:  # γ ~ N(0, 0.02²) makes attention nearly silent; make it matter in tests
        torch.nn.init.normal_(gau.scale_offset.gamma, std=1.0)
    return model.to(device).eval()


def chunk_inputs(gen, t, lead=(2,), s=6, e=5):
    """q_quad, k_quad, q_lin, k_lin ``(..., T, s)`` and v ``(..., T, e)``."""
    return [randn(*lead, t, s, gen=gen) for _ in range(4)] + [randn(*lead, t, e, gen=gen)]


def dense_mixed_chunk_weights(q_quad, k_quad, q_lin, k_lin, chunk, causal, bias):
    """The mixed chunk attention written as one quadratic matrix, straight from the formula."""
    t, s = q_quad.shape[-2], q_quad.shape[-1]
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]  # query and key positions
    same_chunk = i // chunk == j // chunk
    quad_allowed = same_chunk & (j <= i) if causal else same_chunk
    b = bias[i % chunk, j % chunk]  # (T, T): inside a chunk the offset is i - j either way
    quad = F.relu(q_quad @ k_quad.transpose(-2, -1) / math.sqrt(s) + b) ** 2 / chunk * quad_allowed
    if causal:  # linear attention to whole earlier chunks, averaged over their keys
        lin_allowed, count = j // chunk < i // chunk, (i // chunk * chunk).clamp(min=1)
    else:  # linear attention to every key, averaged over all T
        lin_allowed, count = torch.ones(t, t, dtype=torch.bool), t
    lin = q_lin @ k_lin.transpose(-2, -1) * lin_allowed / count
    return quad + lin  # (..., T, T)


class LargestTensor(TorchFunctionMode):
    """Records the number of elements of the largest tensor any torch function returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


# ---------------------------------------------------------------------------------------------------------
# Squared-ReLU attention


def test_squared_relu_attention_literal():
    q = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    k = torch.tensor([[2.0, -1.0], [-1.0, 1.0], [0.0, 1.0]])
    v = torch.eye(3)
    out, weights = squared_relu_attention(q, k, v, scale=1.0, return_weights=True)
    # q·kᵀ = [[-1, 1, 1], [1, 0, 1]] -> relu² = [[0, 1, 1], [1, 0, 1]], divided by n = Tk = 3
    torch.testing.assert_close(weights, torch.tensor([[0.0, 1, 1], [1, 0, 1]]) / 3)
    torch.testing.assert_close(out, weights)  # v = I
    causal = squared_relu_attention(q, k, v, scale=1.0, causal=True, normalizer=1.0)
    torch.testing.assert_close(causal, torch.tensor([[0.0, 1, 0], [1, 0, 1]]))  # bottom-right: q0 sits at 1


# ---------------------------------------------------------------------------------------------------------
# Chunked attention equals its quadratic form


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("t", [16, 13, 5, 1, 22])
def test_mixed_chunk_attention_equals_its_dense_quadratic_form(gen, causal, t):
    q_quad, k_quad, q_lin, k_lin, v = chunk_inputs(gen, t, lead=(2, 3))
    bias = randn(4, 4, gen=gen)
    out = mixed_chunk_attention(q_quad, k_quad, q_lin, k_lin, v, 4, causal, bias=bias)
    dense = dense_mixed_chunk_weights(q_quad, k_quad, q_lin, k_lin, 4, causal, bias)
    assert out.shape == v.shape
    assert_close(out, dense @ v)
    assert_close(mixed_chunk_attention_matrix(q_quad, k_quad, q_lin, k_lin, 4, causal, bias=bias), dense)


def test_one_chunk_covering_the_sequence_is_plain_quadratic_gau_attention(gen):
    q_quad, k_quad, q_lin, k_lin, v = chunk_inputs(gen, 12)
    # Causal: no earlier chunk, so no linear part; the chunk normaliser C = T is the GAU's 1/n.
    causal = mixed_chunk_attention(q_quad, k_quad, q_lin, k_lin, v, 12, causal=True)
    assert_close(causal, squared_relu_attention(q_quad, k_quad, v, causal=True))
    longer_chunk = mixed_chunk_attention(q_quad, k_quad, q_lin, k_lin, v, 16, causal=True)  # padded to 16
    assert_close(longer_chunk, squared_relu_attention(q_quad, k_quad, v, causal=True, normalizer=16))
    # Bidirectional: plus one global linear attention over all T keys.
    full = mixed_chunk_attention(q_quad, k_quad, q_lin, k_lin, v, 12)
    linear = q_lin @ k_lin.transpose(-2, -1) / 12 @ v
    assert_close(full, squared_relu_attention(q_quad, k_quad, v) + linear)


def test_causal_chunked_attention_never_sees_the_future(gen):
    inputs = chunk_inputs(gen, 14)
    out = mixed_chunk_attention(*inputs, 4, causal=True)
    changed = [x.clone() for x in inputs]
    for x in changed:
        x[:, 6:] = randn(*x[:, 6:].shape, gen=gen)  # keys, queries and values from position 6 on
    assert_close(mixed_chunk_attention(*changed, 4, causal=True)[:, :6], out[:, :6])
    # Nor on how many tokens follow: every prefix gives the same outputs (normalisers count past keys).
    for p in (1, 4, 7, 9):
        assert_close(mixed_chunk_attention(*(x[:, :p] for x in inputs), 4, causal=True), out[:, :p])
    assert not torch.allclose(mixed_chunk_attention(*changed, 4)[:, :6], mixed_chunk_attention(*inputs, 4)[:, :6])


# ---------------------------------------------------------------------------------------------------------
# Linear cost


def test_chunked_path_never_materialises_a_t_by_t_tensor(gen):
    def largest(fn, t):
        x = randn(1, t, 32, gen=gen)
        with LargestTensor() as probe:
            fn(x)
        return probe.largest

    torch.manual_seed(0)
    chunked = GAU(32, s=8, expansion=1, chunk_size=16, causal=True).eval()
    quadratic = GAU(32, s=8, expansion=1, causal=True).eval()
    with torch.no_grad():
        small, large = largest(chunked, 512), largest(chunked, 1024)
        assert large <= 2 * small  # grows linearly with T
        assert large < 1024**2 / 8  # far below one T×T matrix
        assert largest(quadratic, 1024) >= 1024**2  # the quadratic path does form one


# ---------------------------------------------------------------------------------------------------------
# The GAU module and the FLASH model


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_gau_follows_the_paper_formulas(gen, chunk_size, causal):
    torch.manual_seed(0)
    gau = GAU(16, s=8, chunk_size=chunk_size, causal=causal, max_distance=3).eval()
    torch.nn.init.normal_(gau.scale_offset.gamma)
    x, t = randn(2, 10, 16, gen=gen), 10
    hidden = F.silu(x @ gau.proj.weight.T + gau.proj.bias)
    u, v, z = hidden[..., :32], hidden[..., 32:64], hidden[..., 64:]  # e = 2D = 32, s = 8
    angles = rotary_angles(torch.arange(t), 8)
    scale_offset = gau.scale_offset
    qk = [apply_rotary(z * g + b, angles) for g, b in zip(scale_offset.gamma, scale_offset.beta, strict=True)]
    offsets = (torch.arange(t)[None, :] - torch.arange(t)[:, None]).clamp(-3, 3) + 3  # (T, T) key - query
    if chunk_size is None:
        bias = gau.rel_bias.embedding.weight[offsets, 0]
        a = F.relu(qk[0] @ qk[1].transpose(-2, -1) / math.sqrt(8) + bias) ** 2 / t
        a = a.tril() if causal else a
    else:
        bias = gau.rel_bias.embedding.weight[offsets[:4, :4], 0]
        a = dense_mixed_chunk_weights(*qk, chunk_size, causal, bias)
    expected = (u * (a @ v)) @ gau.out_proj.weight.T + gau.out_proj.bias
    assert_close(gau(x), expected)


def test_flash_with_one_chunk_equals_flash_quad(gen):
    chunked, quad = tiny_flash(chunk_size=12), tiny_flash(chunk_size=None)
    state = chunked.state_dict()
    for name in state:
        if ".scale_offset." in name:
            state[name] = state[name][:2]  # FLASH-Quad keeps only the quadratic Q, K
    quad.load_state_dict(state)
    ids = torch.randint(0, 64, (2, 12), generator=gen)
    assert_close(chunked(ids), quad(ids))  # one chunk: no linear part, and the normaliser C = T


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_flash_future_tokens_never_change_earlier_logits(gen, chunk_size):
    model = tiny_flash(chunk_size=chunk_size)
    ids = torch.randint(0, 64, (2, 14), generator=gen)
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % 64
    assert_close(model(changed)[:, :9], model(ids)[:, :9])
    assert not torch.allclose(model(changed)[:, 9:], model(ids)[:, 9:])
    if chunk_size is not None:  # chunked FLASH is prefix-invariant too; FLASH-Quad's 1/T is not
        assert_close(model(ids[:, :9]), model(ids)[:, :9])


def test_flash_runs_in_the_inputs_device_and_dtype(gen, device, dtype):
    model = tiny_flash(device).to(dtype)
    logits = model(torch.randint(0, 64, (2, 11), generator=gen).to(device))
    assert logits.shape == (2, 11, 64) and logits.dtype == dtype and logits.device.type == device
    assert torch.isfinite(logits).all()
    assert model.lm_head.weight is model.embed.weight


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_errors_are_named(gen):
    q, k, v = randn(2, 5, 4, gen=gen), randn(2, 6, 4, gen=gen), randn(2, 6, 3, gen=gen)
    with pytest.raises(ValueError, match=r"got \(2, 5, 4\), \(2, 6, 4\), \(2, 5, 3\)"):
        squared_relu_attention(q, k, v[:, :5])
    with pytest.raises(TypeError, match="mask must be a torch.bool tensor"):
        squared_relu_attention(q, k, v, mask=torch.ones(5, 6))
    with pytest.raises(ValueError, match=r"bias of shape \(5, 5\) does not broadcast"):
        squared_relu_attention(q, k, v, bias=torch.zeros(5, 5))
    with pytest.raises(ValueError, match="chunk_size must be positive, got 0"):
        mixed_chunk_attention(q, q, q, q, v[:, :5], 0)
    with pytest.raises(ValueError, match=r"q_lin has shape \(2, 5, 3\), expected k_quad's \(2, 5, 4\)"):
        mixed_chunk_attention(q, q, q[..., :3], q[..., :3], v[:, :5], 2)
    with pytest.raises(ValueError, match=r"bias of shape \(3, 3\) does not broadcast to the scores \(2, 3, 2, 2\)"):
        mixed_chunk_attention(q, q, q, q, v[:, :5], 2, bias=torch.zeros(3, 3))
    gau = GAU(8, s=4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, D=8\), got \(1, 3, 6\)"):
        gau(randn(1, 3, 6, gen=gen))
    with pytest.raises(ValueError, match=r"positions must have shape \(T,\) = \(3,\)"):
        gau(randn(1, 3, 8, gen=gen), positions=torch.arange(4))
    with pytest.raises(ValueError, match="s must be even for rotary pairs, got s=5"):
        FLASHConfig.tiny(s=5)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 64\)"):
        tiny_flash()(torch.full((1, 3), 64))
