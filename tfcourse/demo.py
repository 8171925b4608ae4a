"""A complete training run in under a minute on a laptop CPU: teach the encoder–decoder to reverse sequences.

Reversal is a good first task: it is trivial to generate, impossible to solve without attention (every
output position needs a different input position), and the learned cross-attention maps show the
anti-diagonal you would draw by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from tfcourse.generation import generate_seq2seq
from tfcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from tfcourse.schedules import warmup_inverse_sqrt

__all__ = ["ReversalResult", "evaluate_reversal", "reversal_batch", "train_reversal"]

FIRST_SYMBOL = 3  # ids 0, 1, 2 are PAD, BOS and EOS


def reversal_batch(
    batch_size: int, min_len: int, max_len: int, vocab_size: int, generator: torch.Generator, eos_id: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sources and their reversals.

    Returns:
        ``(src, tgt)``: ``src`` ``(B, max_len)`` right-padded with 0; ``tgt`` ``(B, max_len + 1)`` the
        reversed source followed by EOS, right-padded with 0.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    symbols = torch.randint(FIRST_SYMBOL, vocab_size, (batch_size, max_len), generator=generator)
    positions = torch.arange(max_len)
    src = symbols.masked_fill(positions >= lengths[:, None], 0)  # (B, S)
    # Reverse only the real part: position j of the target reads source position length - 1 - j.
    index = (lengths[:, None] - 1 - positions).clamp(min=0)  # (B, S)
    tgt = src.gather(1, index).masked_fill(positions >= lengths[:, None], 0)
    tgt = torch.cat([tgt, torch.zeros(batch_size, 1, dtype=torch.long)], dim=1)  # room for EOS
    tgt[torch.arange(batch_size), lengths] = eos_id
    return src, tgt


@torch.no_grad()
def evaluate_reversal(model: Seq2Seq, src: torch.Tensor, tgt: torch.Tensor) -> tuple[float, float]:
    """Greedy-decode ``src`` and compare with ``tgt``: (token accuracy, whole-sequence accuracy)."""
    model.eval()
    out = generate_seq2seq(model, src, tgt.shape[1]).tokens[:, 1:]  # drop BOS
    out = torch.nn.functional.pad(out, (0, tgt.shape[1] - out.shape[1]))  # rows may stop early
    real = tgt != 0
    correct = (out == tgt) | ~real
    return float((out == tgt)[real].float().mean()), float(correct.all(dim=1).float().mean())


@dataclass
class ReversalResult:
    """What :func:`train_reversal` returns."""

    model: Seq2Seq
    losses: list[float] = field(default_factory=list)
    token_accuracy: float = 0.0
    sequence_accuracy: float = 0.0


def train_reversal(
    steps: int = 600,
    *,
    batch_size: int = 64,
    min_len: int = 3,
    max_len: int = 10,
    config: Seq2SeqConfig | None = None,
    lr: float = 2e-3,
    warmup_steps: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> ReversalResult:
    """Train a tiny :class:`~tfcourse.models.seq2seq.Seq2Seq` to reverse sequences, then evaluate it.

    Uses Adam with the warm-up + inverse-square-root schedule (peak ``lr``) and teacher forcing; the
    evaluation decodes 512 fresh sequences greedily.
    """
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    config = config or Seq2SeqConfig.tiny(src_vocab_size=16, tgt_vocab_size=16, max_len=2 * max_len + 2)
    model = Seq2Seq(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_inverse_sqrt(warmup_steps))
    result = ReversalResult(model)
    bar = tqdm(range(steps), desc="reversal", disable=not progress, mininterval=1.0)
    model.train()
    for _ in bar:
        src, tgt = reversal_batch(batch_size, min_len, max_len, config.src_vocab_size, data, config.eos_id)
        loss = model.loss(src, tgt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # keeps the occasional spike from derailing it
        optimizer.step()
        schedule.step()
        result.losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    src, tgt = reversal_batch(512, min_len, max_len, config.src_vocab_size, data, config.eos_id)
    result.token_accuracy, result.sequence_accuracy = evaluate_reversal(model, src, tgt)
    return result
