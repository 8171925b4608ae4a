"""Small training runs that finish in seconds to a minute on a laptop CPU.

- **Reversal** (:func:`train_reversal`): teach the encoder–decoder to reverse sequences. It is trivial to
  generate, impossible to solve without attention (every output position needs a different input
  position), and the learned cross-attention maps show the anti-diagonal you would draw by hand.
- **Cyclic retrieval** (:func:`train_cyclic_retrieval`): a single attention head must follow an
  *asymmetric* relation (rock → scissors → paper → rock). With separate query and key projections it is
  solved exactly; with one shared projection (scores ``K·Kᵀ``) it cannot be, because symmetric scores
  cannot rank a cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tfcourse._checks import check_positive_int, check_rank
from tfcourse.attention import scaled_dot_product_attention
from tfcourse.generation import generate_seq2seq
from tfcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from tfcourse.schedules import warmup_inverse_sqrt

__all__ = [
    "QK_MODES",
    "CyclicRetrievalResult",
    "ReversalResult",
    "SingleHeadRetriever",
    "cyclic_retrieval_batch",
    "evaluate_reversal",
    "reversal_batch",
    "train_cyclic_retrieval",
    "train_reversal",
]

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


# --------------------------------------------------------------------------------------------------------
# Cyclic retrieval: an asymmetric relation that symmetric attention scores cannot represent.

QK_MODES = ("separate", "tied", "symmetric")
"""How :class:`SingleHeadRetriever` makes its keys: its own ``W_K``; ``W_K = W_Q`` (scores ``K·Kᵀ``, a
symmetric positive semi-definite form); or ``k = S·W_Q x`` with a fixed sign vector ``S`` of ±1 (a symmetric
but indefinite form)."""


def cyclic_retrieval_batch(
    batch_size: int,
    generator: torch.Generator,
    *,
    num_groups: int = 4,
    groups_per_sequence: int = 2,
    num_payloads: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequences for the cyclic-retrieval task.

    The ``3·num_groups`` symbols form groups of three, ``3g → 3g+1 → 3g+2 → 3g`` (each one "beats" the
    next, like rock, scissors and paper). A sequence holds ``groups_per_sequence`` whole groups in random
    order, each symbol carrying a random payload. The target at every position is the payload carried by
    the successor of that position's symbol, so a query must find one particular *other* token, and the
    relation is asymmetric: ``a → b`` does not imply ``b → a``.

    Returns:
        ``(symbols, payloads, targets)``, each ``(B, 3·groups_per_sequence)`` long tensors.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_groups", num_groups)
    check_positive_int("num_payloads", num_payloads)
    check_positive_int("groups_per_sequence", groups_per_sequence)
    if groups_per_sequence > num_groups:
        raise ValueError(f"groups_per_sequence={groups_per_sequence} exceeds num_groups={num_groups}")
    groups = torch.rand(batch_size, num_groups, generator=generator).argsort(dim=1)[:, :groups_per_sequence]
    symbols = (3 * groups[:, :, None] + torch.arange(3)).reshape(batch_size, -1)  # (B, T), T = 3·G
    order = torch.rand(symbols.shape, generator=generator).argsort(dim=1)  # shuffle: order carries no signal
    symbols = symbols.gather(1, order)
    payloads = torch.randint(num_payloads, symbols.shape, generator=generator)  # (B, T)
    successor = 3 * (symbols // 3) + (symbols + 1) % 3  # (B, T)
    where = (symbols[:, None, :] == successor[:, :, None]).int().argmax(dim=-1)  # (B, T): successor's position
    return symbols, payloads, payloads.gather(1, where)


class SingleHeadRetriever(nn.Module):
    """One attention head, no positions: ``x = E_sym[s] + E_pay[p]``, attend, then read out a payload.

    Args:
        num_symbols: size of the symbol vocabulary.
        num_payloads: number of payload classes (the output size).
        d_model: width of embeddings, queries, keys and values.
        qk: one of :data:`QK_MODES`.
    """

    def __init__(self, num_symbols: int, num_payloads: int, d_model: int = 32, qk: str = "separate") -> None:
        super().__init__()
        if qk not in QK_MODES:
            raise ValueError(f"qk must be one of {QK_MODES}, got {qk!r}")
        if qk == "symmetric" and d_model < 2:
            raise ValueError(f"qk='symmetric' needs d_model >= 2, got {d_model}")
        self.qk, self.d_model = qk, d_model
        self.symbol_embed = nn.Embedding(num_symbols, d_model)
        self.payload_embed = nn.Embedding(num_payloads, d_model)
        self.w_q = nn.Linear(d_model, d_model, bias=False)
        self.w_k = nn.Linear(d_model, d_model, bias=False) if qk == "separate" else None
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.readout = nn.Linear(d_model, num_payloads)
        signs = torch.ones(d_model)
        signs[d_model // 2 :] = -1.0
        self.register_buffer("signs", signs, persistent=False)

    def queries_keys(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys ``(..., D)`` for inputs ``x`` ``(..., D)``, according to ``qk``."""
        q = self.w_q(x)
        if self.qk == "separate":
            return q, self.w_k(x)
        return q, (q if self.qk == "tied" else q * self.signs)

    def forward(
        self, symbols: torch.Tensor, payloads: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Payload logits ``(B, T, P)`` (and the ``(B, T, T)`` attention weights if asked)."""
        check_rank("symbols", symbols, 2)
        if payloads.shape != symbols.shape:
            raise ValueError(f"payloads {tuple(payloads.shape)} must match symbols {tuple(symbols.shape)}")
        x = self.symbol_embed(symbols) + self.payload_embed(payloads)  # (B, T, D)
        q, k = self.queries_keys(x)  # (B, T, D) each
        out, weights = scaled_dot_product_attention(q, k, self.w_v(x), return_weights=True)  # (B, T, D)
        logits = self.readout(out)  # (B, T, P)
        return (logits, weights) if return_weights else logits

    @torch.no_grad()
    def symbol_scores(self) -> torch.Tensor:
        """Scaled scores ``q(a)·k(b)/√D`` between bare symbol embeddings: a ``(V, V)`` table, query rows."""
        q, k = self.queries_keys(self.symbol_embed.weight)  # (V, D) each
        return q @ k.T / math.sqrt(self.d_model)  # (V, V)


@dataclass
class CyclicRetrievalResult:
    """What :func:`train_cyclic_retrieval` returns."""

    model: SingleHeadRetriever
    losses: list[float] = field(default_factory=list)
    accuracy: float = 0.0
    """Fraction of positions whose payload is predicted correctly, on 2,000 fresh sequences."""
    weight_on_successor: float = 0.0
    """Mean attention weight a query puts on its successor (1 is perfect)."""
    weight_on_self: float = 0.0
    """Mean attention weight a query puts on itself."""


def train_cyclic_retrieval(
    qk: str = "separate",
    steps: int = 400,
    *,
    num_groups: int = 4,
    groups_per_sequence: int = 2,
    num_payloads: int = 8,
    d_model: int = 32,
    batch_size: int = 128,
    lr: float = 1e-2,
    seed: int = 0,
) -> CyclicRetrievalResult:
    """Train a :class:`SingleHeadRetriever` on :func:`cyclic_retrieval_batch` with Adam and evaluate it.

    With ``qk="separate"`` the task is solved exactly within a few hundred steps (under a second on a
    CPU). With ``"tied"`` or ``"symmetric"`` it cannot be: in each group the three relations
    ``a → b → c → a`` would need ``s(a, b) > s(a, c) = s(c, a) > s(c, b) = s(b, c) > s(b, a) = s(a, b)``.
    """
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    sizes = dict(num_groups=num_groups, groups_per_sequence=groups_per_sequence, num_payloads=num_payloads)
    model = SingleHeadRetriever(3 * num_groups, num_payloads, d_model, qk)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    result = CyclicRetrievalResult(model)
    model.train()
    for _ in range(steps):
        symbols, payloads, targets = cyclic_retrieval_batch(batch_size, data, **sizes)
        loss = F.cross_entropy(model(symbols, payloads).transpose(1, 2), targets)  # (B, P, T) vs (B, T)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        result.losses.append(loss.item())
    model.eval()
    symbols, payloads, targets = cyclic_retrieval_batch(2000, data, **sizes)
    with torch.no_grad():
        logits, weights = model(symbols, payloads, return_weights=True)  # (B, T, P), (B, T, T)
    successor = 3 * (symbols // 3) + (symbols + 1) % 3
    result.accuracy = float((logits.argmax(-1) == targets).float().mean())
    result.weight_on_successor = float((weights * (symbols[:, None, :] == successor[:, :, None])).sum(-1).mean())
    result.weight_on_self = float(weights.diagonal(dim1=1, dim2=2).mean())
    return result
