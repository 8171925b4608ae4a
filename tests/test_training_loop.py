"""The shared training loop: schedules, evaluation points, divergence and that it actually learns."""

from __future__ import annotations

import math

import pytest
import torch

from tfcourse import subword
from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.training import fit, lr_multiplier


def test_schedules_warm_up_linearly_then_decay():
    assert [lr_multiplier(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(99, 100, 4) == pytest.approx(0.1)  # cosine ends at 10 % of the peak
    assert lr_multiplier(15, 100, 4, "inverse_sqrt") == pytest.approx(math.sqrt(4 / 16))
    assert lr_multiplier(0, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_multiplier(0, 10, 1, "linear")


def test_fit_learns_the_corpus_and_logs_what_the_chapters_plot():
    torch.manual_seed(0)
    ids = subword.corpus_ids("bpe", "heldout")[:20_000]
    model = GPT(GPTConfig.tiny(vocab_size=subword.VOCAB_SIZE, max_len=32))
    data = torch.Generator().manual_seed(0)
    probe = subword.lm_windows(ids, 16, 32, torch.Generator().manual_seed(1))
    log = fit(
        model,
        lambda step: model.loss(subword.lm_windows(ids, 16, 32, data)),
        40,
        lr=3e-3,
        warmup_steps=5,
        evaluate=lambda: model.loss(probe).item(),
        eval_every=20,
        progress=False,
    )
    assert [s for s, _ in log.evals] == [0, 20, 40]
    assert log.evals[-1][1] < log.evals[0][1] - 1.0
    assert len(log.losses) == len(log.lrs) == 40 and not log.diverged
    assert not model.training
    assert set(log.as_dict()) == {"losses", "evals", "lrs", "seconds", "diverged"}


def test_a_diverging_run_stops_and_says_so():
    model = torch.nn.Linear(2, 1)
    log = fit(model, lambda step: model(torch.ones(1, 2)).sum() * float("inf"), 10, progress=False)
    assert log.diverged and len(log.losses) == 1
