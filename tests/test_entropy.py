"""Entropy of attention rows and entropy normalization."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcourse.entropy import entropy, entropy_normalize


def test_entropy_literal_values():
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(entropy(p), torch.tensor([0.0, math.log(4), math.log(2)]))


def test_entropy_along_another_axis():
    p = torch.tensor([[0.5, 1.0], [0.5, 0.0]])
    torch.testing.assert_close(entropy(p, dim=0), torch.tensor([math.log(2), 0.0]))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 50),
    temperature=st.floats(0.2, 3.0),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**16),
)
def test_entropy_normalize_hits_the_target_and_keeps_the_order(n, temperature, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(4, n, generator=g, dtype=torch.float64) / temperature, dim=-1)
    low, high = 0.0, math.log(n)  # reachable range for a distribution with a unique maximum
    target = low + fraction * (high - low)
    q, gamma = entropy_normalize(p, target, return_gamma=True)
    torch.testing.assert_close(entropy(q), torch.full((4,), target, dtype=torch.float64), atol=1e-5, rtol=0)
    larger = p[:, :, None] > p[:, None, :]
    assert (q[:, :, None] >= q[:, None, :])[larger].all()  # a power transform never reorders (ties may form)
    assert (gamma > 0).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(4, dtype=torch.float64))


def test_entropy_normalize_sharpens_or_flattens():
    p = torch.softmax(torch.tensor([2.0, 1.0, 0.0, -1.0]), dim=0)
    h = entropy(p).item()
    _, g_sharp = entropy_normalize(p, h / 2, return_gamma=True)
    _, g_flat = entropy_normalize(p, (h + math.log(4)) / 2, return_gamma=True)
    assert g_sharp.item() > 1 > g_flat.item()


def test_entropy_normalize_per_row_targets_and_zeros():
    p = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.4, 0.3, 0.2, 0.1]])
    target = torch.tensor([0.5, 1.0])
    q = entropy_normalize(p, target)
    torch.testing.assert_close(entropy(q), target, atol=1e-5, rtol=0)
    assert q[0, 3] == 0  # an impossible key stays impossible


def test_entropy_normalize_rejects_unreachable_targets():
    p = torch.tensor([0.5, 0.3, 0.2, 0.0])
    with pytest.raises(ValueError, match="unreachable"):
        entropy_normalize(p, math.log(4))  # only 3 keys have weight: at most log 3
    with pytest.raises(ValueError, match="unreachable"):
        entropy_normalize(torch.tensor([0.4, 0.4, 0.2]), 0.1)  # two tied maxima: at least log 2
    with pytest.raises(ValueError, match="probability distributions"):
        entropy_normalize(torch.tensor([0.5, 0.9]), 0.3)


def test_uniform_rows_are_left_alone():
    p = torch.full((2, 5), 0.2)
    torch.testing.assert_close(entropy_normalize(p, math.log(5)), p)
