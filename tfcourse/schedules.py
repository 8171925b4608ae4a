"""Learning-rate schedules: linear warm-up, then inverse-square-root decay (Vaswani et al. 2017, eq. 3).

.. math:: \\mathrm{lr}(s) = D^{-1/2} \\cdot \\min\\left(s^{-1/2},\\; s \\cdot w^{-3/2}\\right)

The rate rises linearly for ``w`` warm-up steps and then falls like ``1/√s``. Warm-up matters most for
Post-LN Transformers, whose gradients near the output are large at initialisation (Xiong et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tfcourse._checks import check_positive_int

__all__ = ["transformer_lr", "warmup_inverse_sqrt"]


def transformer_lr(step: int, d_model: int, warmup_steps: int = 4000) -> float:
    """The original schedule's learning rate at ``step`` (counted from 1); the peak is at ``warmup_steps``."""
    check_positive_int("step", step)
    check_positive_int("d_model", d_model)
    check_positive_int("warmup_steps", warmup_steps)
    return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def warmup_inverse_sqrt(warmup_steps: int, d_model: int | None = None) -> Callable[[int], float]:
    """A multiplier for ``torch.optim.lr_scheduler.LambdaLR``.

    With ``d_model`` given and the optimiser's base rate 1.0, the scheduled rate is exactly
    :func:`transformer_lr`. Without it the multiplier peaks at 1.0 after ``warmup_steps`` steps, so the
    optimiser's base rate is the peak rate. ``LambdaLR`` counts from 0; step ``i`` uses ``i + 1``.
    """
    check_positive_int("warmup_steps", warmup_steps)
    peak = 1.0 / math.sqrt(warmup_steps)  # min(s^-1/2, s·w^-3/2) at s = w
    if d_model is not None:
        check_positive_int("d_model", d_model)
        return lambda i: transformer_lr(i + 1, d_model, warmup_steps)
    return lambda i: min((i + 1) ** -0.5, (i + 1) * warmup_steps**-1.5) / peak
