"""The training demos really learn their tasks (or, for tied attention, provably cannot)."""

from __future__ import annotations

import pytest
import torch

from tfcourse.demo import (
    SingleHeadRetriever,
    cyclic_retrieval_batch,
    reversal_batch,
    train_cyclic_retrieval,
    train_reversal,
)


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


def test_cyclic_retrieval_batch_targets_are_the_successors_payloads():
    symbols, payloads, targets = cyclic_retrieval_batch(50, torch.Generator().manual_seed(0), num_groups=5)
    assert symbols.shape == payloads.shape == targets.shape == (50, 6)
    for sym, pay, tgt in zip(symbols.tolist(), payloads.tolist(), targets.tolist(), strict=True):
        assert sorted(sym) == sorted({3 * (s // 3) + i for s in sym for i in range(3)})  # whole groups only
        payload_of = dict(zip(sym, pay, strict=True))
        assert tgt == [payload_of[3 * (s // 3) + (s + 1) % 3] for s in sym]


def test_separate_projections_solve_the_cycle_and_tied_ones_cannot():
    separate = train_cyclic_retrieval("separate", steps=300)
    assert separate.accuracy > 0.99
    assert separate.weight_on_successor > 0.95
    for qk in ("tied", "symmetric"):
        run = train_cyclic_retrieval(qk, steps=300)
        assert run.accuracy < 0.75, (qk, run.accuracy)
        assert run.weight_on_successor < 0.6, (qk, run.weight_on_successor)
        scores = run.model.symbol_scores()
        torch.testing.assert_close(scores, scores.T)  # symmetric by construction
    tied = train_cyclic_retrieval("tied", steps=100)
    assert tied.weight_on_self > 0.2  # K·Kᵀ keeps attending to itself


def test_single_head_retriever_checks_its_arguments():
    with pytest.raises(ValueError, match="qk"):
        SingleHeadRetriever(6, 4, qk="shared")
    model = SingleHeadRetriever(6, 4)
    with pytest.raises(ValueError, match="payloads"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="groups_per_sequence"):
        cyclic_retrieval_batch(2, torch.Generator(), num_groups=1, groups_per_sequence=2)
