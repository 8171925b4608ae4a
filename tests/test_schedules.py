"""The warm-up + inverse-square-root schedule."""

from __future__ import annotations

import pytest
import torch

from tfcourse.schedules import transformer_lr, warmup_inverse_sqrt


def test_literal_values_of_the_original_schedule():
    # d_model = 512, warm-up 4000: peak 512^-0.5 · 4000^-0.5 at step 4000.
    assert transformer_lr(4000, 512) == pytest.approx(512**-0.5 * 4000**-0.5)
    assert transformer_lr(1, 512) == pytest.approx(512**-0.5 * 4000**-1.5)
    assert transformer_lr(16000, 512) == pytest.approx(transformer_lr(4000, 512) / 2)


def test_shape_rises_linearly_then_decays():
    rates = [transformer_lr(s, 64, warmup_steps=100) for s in range(1, 401)]
    peak = max(range(400), key=rates.__getitem__) + 1
    assert peak == 100
    assert rates[49] == pytest.approx(rates[99] / 2)  # linear during warm-up
    assert rates[399] == pytest.approx(rates[99] / 2)  # 1/√s afterwards


def test_lambda_lr_reproduces_the_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_inverse_sqrt(10, d_model=64))
    seen = []
    for _ in range(30):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([transformer_lr(s, 64, 10) for s in range(1, 31)])
    normalised = warmup_inverse_sqrt(10)
    assert normalised(9) == pytest.approx(1.0) and normalised(0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="step must be positive"):
        transformer_lr(0, 64)
