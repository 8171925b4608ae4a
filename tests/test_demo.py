"""The end-to-end training demo really learns its task."""

from __future__ import annotations

import torch

from tfcourse.demo import reversal_batch, train_reversal


def test_reversal_batch_reverses_the_real_tokens():
    src, tgt = reversal_batch(64, 2, 6, 16, torch.Generator().manual_seed(0))
    for s, t in zip(src.tolist(), tgt.tolist(), strict=True):
        real = [x for x in s if x != 0]
        assert t[: len(real)] == real[::-1]
        assert t[len(real)] == 2 and all(x == 0 for x in t[len(real) + 1 :])
        assert all(x >= 3 for x in real)


def test_training_demo_learns_to_reverse():
    result = train_reversal(steps=600, progress=False)
    late = sum(result.losses[-20:]) / 20
    assert late < 0.1 < result.losses[0]
    assert result.sequence_accuracy >= 0.9, result  # greedy decoding of 512 fresh sequences
    assert result.token_accuracy >= 0.97
