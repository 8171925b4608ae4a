"""A small, explicit training loop shared by the book's experiments and the ``training/`` scripts.

AdamW with linear warm-up then cosine or inverse-square-root decay, gradient clipping, and a held-out
evaluation every few steps. It records what the chapters plot (train loss per step, held-out loss at each
evaluation, the learning rate) and nothing is hidden in globals: the caller passes the model, a function that
draws a batch and returns its loss, and optionally an evaluation function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from tfcourse._checks import check_nonnegative_int, check_positive_int

__all__ = ["TrainingLog", "evaluation_windows", "fit", "lm_loss", "lr_multiplier"]

SCHEDULES = ("cosine", "inverse_sqrt", "constant")


@dataclass
class TrainingLog:
    """What a run did: ``losses[i]`` is step ``i``'s training loss; ``evals`` holds ``(step, value)``
    pairs of the held-out metric; ``lrs[i]`` the learning rate step ``i`` used."""

    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diverged: bool = False

    def as_dict(self) -> dict:
        return {
            "losses": [round(x, 5) for x in self.losses],
            "evals": [[s, round(v, 5)] for s, v in self.evals],
            "lrs": [float(f"{x:.4g}") for x in self.lrs],
            "seconds": round(self.seconds, 1),
            "diverged": self.diverged,
        }


def lr_multiplier(step: int, steps: int, warmup_steps: int, schedule: str = "cosine") -> float:
    """The factor on the peak rate at ``step`` (from 0): linear warm-up over ``warmup_steps`` (none when 0),
    then ``schedule``: cosine to 10 % of the peak at ``steps``, ``1/√step``, or constant."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    s = step + 1
    if warmup_steps and s <= warmup_steps:
        return s / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup_steps, 1) / s)
    done = (s - warmup_steps) / max(steps - warmup_steps, 1)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(done, 1.0)))


def fit(
    model: torch.nn.Module,
    batch_loss: Callable[[int], torch.Tensor],
    steps: int,
    *,
    lr: float = 3e-3,
    warmup_steps: int = 50,
    schedule: str = "cosine",
    weight_decay: float = 0.01,
    clip: float | None = 1.0,
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 50,
    desc: str = "training",
    progress: bool = True,
    stop_on_divergence: bool = True,
) -> TrainingLog:
    """Train ``model`` for ``steps`` steps; ``batch_loss(step)`` draws a batch and returns its loss.

    ``evaluate()`` (run in eval mode under ``no_grad``) is called at step 0, every ``eval_every`` steps and at
    the end. A loss that becomes NaN or infinite marks the run ``diverged`` and, unless
    ``stop_on_divergence`` is False, ends it (a Post-LN model without warm-up can do that).
    """
    check_positive_int("steps", steps)
    check_nonnegative_int("warmup_steps", warmup_steps)
    check_positive_int("eval_every", eval_every)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]  # norms and biases: no decay
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-8)
    log = TrainingLog()
    start = time.perf_counter()

    def run_eval(step: int) -> None:
        if evaluate is None:
            return
        model.eval()
        with torch.no_grad():
            log.evals.append((step, float(evaluate())))
        model.train()

    model.train()
    run_eval(0)
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=2.0)
    for step in bar:
        rate = lr * lr_multiplier(step, steps, warmup_steps, schedule)
        for group in optimizer.param_groups:
            group["lr"] = rate
        loss = batch_loss(step)
        value = loss.item()
        log.losses.append(value)
        log.lrs.append(rate)
        if not math.isfinite(value):
            log.diverged = True
            if stop_on_divergence:
                break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if (step + 1) % eval_every == 0 and step + 1 < steps:
            run_eval(step + 1)
        bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    if not log.diverged or not stop_on_divergence:
        run_eval(len(log.losses))
    model.eval()
    log.seconds = time.perf_counter() - start
    return log


def evaluation_windows(ids: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``(count, length)`` windows at evenly spaced offsets of a ``(N,)`` stream of ids, first and last
    included: a fixed evaluation set, the same at every evaluation and in every run (no random draw)."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D stream of token ids, got shape {tuple(ids.shape)}")
    check_positive_int("count", count)
    if not 1 < length <= ids.numel():
        raise ValueError(f"length must be in 2..{ids.numel()} for a stream of {ids.numel()} ids, got {length}")
    starts = torch.linspace(0, ids.numel() - length, count).round().long()  # (count,)
    return ids[starts[:, None] + torch.arange(length)]  # (count, length)


def lm_loss(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats per predicted token) of a language model over ``(B, T)`` windows.

    ``model.loss(ids)`` must return the mean loss of a batch (as :meth:`tfcourse.models.gpt.GPT.loss` does);
    the windows are scored ``batch_size`` at a time, in eval mode and without gradients, on the model's
    device, and the model's training mode is restored. ``math.exp`` of the result is the perplexity.
    """
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (B, T) with T >= 2, got shape {tuple(windows.shape)}")
    check_positive_int("batch_size", batch_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start : start + batch_size].to(device)  # (b, T)
            total += float(model.loss(batch)) * batch.shape[0]  # every window predicts T - 1 tokens
    model.train(was_training)
    return total / windows.shape[0]
