"""Chapter 11's experiment: what does pooling cost a Funnel-Transformer in quality, and what does it save?

Three Funnel models with the same four encoder layers, the same decoder layer, the same widths, initial
seeds, batches and steps differ only in how the encoder layers are grouped into blocks: ``(4,)`` (one block,
never pooled: a plain encoder), ``(2, 2)`` (pooled once) and ``(2, 1, 1)`` (pooled twice). Each is trained as
a masked language model (BERT's 15 % corruption) on WordPiece windows of the corpus's training plays, with a
tied output layer over the decoder's full-length states, and scored on the held-out plays (Hamlet, The
Tempest) with a fixed masking. Compute is measured in the same run: forward FLOPs (of the whole model and
of the encoder alone) counted by PyTorch's ``FlopCounterMode``, and seconds per training step. No weights
are kept: the curves and numbers go to one JSON.

    python training/funnel_pooling.py                          # tfcourse/data/checkpoints/ch11-funnel-pooling.json
    python training/funnel_pooling.py --steps 20 --out runs/   # a quick check
    python training/funnel_pooling.py --large --device cuda    # wider models, longer windows, more steps
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tfcourse import checkpoints, subword
from tfcourse.models.funnel import FunnelConfig, FunnelModel
from tfcourse.pretraining import mlm_mask
from tfcourse.training import fit

NAME = "ch11-funnel-pooling"
BLOCKS = {"no pooling": (4,), "pooled once": (2, 2), "pooled twice": (2, 1, 1)}
PAD, UNK, CLS, SEP, MASK = range(5)  # the book's WordPiece special ids


class FunnelMaskedLM(nn.Module):
    """A :class:`FunnelModel` with a tied output layer: logits over the vocabulary for every input token."""

    def __init__(self, config: FunnelConfig) -> None:
        super().__init__()
        self.config = config
        self.funnel = FunnelModel(config)
        # Token vectors are layer-normalised after the lookup, so their scale only matters for the tied output
        # layer: entries of variance 1/D give logits of about unit size at the start.
        nn.init.normal_(self.funnel.embed.weight, std=config.d_model**-0.5)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.funnel(input_ids)  # (B, T, D)
        return hidden @ self.funnel.embed.weight.T + self.bias  # (B, T, V)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64, help="tokens per window, [CLS] included")
    parser.add_argument("--eval-windows", type=int, default=96, help="held-out windows")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default: the package's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--large", action="store_true", help="wider models, 4x longer windows, 10x the steps (GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def model_config(args: argparse.Namespace, block_sizes: tuple[int, ...]) -> FunnelConfig:
    width = 256 if args.large else 64
    return FunnelConfig(
        vocab_size=subword.VOCAB_SIZE, block_sizes=block_sizes, num_decoder_layers=1, d_model=width,
        num_heads=4, head_dim=width // 4, d_ff=4 * width, dropout=0.0, attention_dropout=0.0,
        layer_norm_eps=1e-6,
    )  # fmt: skip


def with_cls(windows: torch.Tensor) -> torch.Tensor:
    """Put [CLS] in front of every ``(B, T - 1)`` window: ``(B, T)``."""
    return torch.cat([torch.full_like(windows[:, :1], CLS), windows], dim=1)


def corrupt(windows: torch.Tensor, generator: torch.Generator):
    return mlm_mask(windows, mask_token_id=MASK, vocab_size=subword.VOCAB_SIZE, special_token_ids=(PAD, UNK, CLS, SEP),
                    generator=generator)  # fmt: skip


def mlm_loss(model: FunnelMaskedLM, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)  # (B, T, V)
    return F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)


def forward_flops(forward, length: int, device) -> int:
    """FLOPs (2 per multiply-add) of ``forward(ids)`` on one window of ``length`` tokens, counted by PyTorch."""
    ids = torch.full((1, length), CLS, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        forward(ids)
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.large:
        args.steps *= 10
        args.length *= 4
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train_ids = subword.corpus_ids("wordpiece", "train")
    heldout_ids = subword.corpus_ids("wordpiece", "heldout")
    starts = torch.linspace(0, heldout_ids.numel() - args.length, args.eval_windows).long()
    heldout = with_cls(heldout_ids[starts[:, None] + torch.arange(args.length - 1)])  # (N, T)
    fixed = corrupt(heldout, torch.Generator().manual_seed(1234))  # the same masking for every model
    heldout_inputs, heldout_labels = fixed.input_ids.to(device), fixed.labels.to(device)
    start = time.perf_counter()
    runs = {}
    for name, block_sizes in BLOCKS.items():
        torch.manual_seed(args.seed)
        model = FunnelMaskedLM(model_config(args, block_sizes)).to(device)
        batches = torch.Generator().manual_seed(args.seed)  # the same windows and masks for every model
        step_seconds = []

        def batch_loss(step: int, model=model, batches=batches, step_seconds=step_seconds) -> torch.Tensor:
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_seconds.append(time.perf_counter())  # the start of each step; differences give step times
            windows = with_cls(subword.lm_windows(train_ids, args.batch, args.length - 1, batches))
            corrupted = corrupt(windows, batches)
            return mlm_loss(model, corrupted.input_ids.to(device), corrupted.labels.to(device))

        def evaluate(model=model) -> float:
            return float(mlm_loss(model, heldout_inputs, heldout_labels))

        log = fit(
            model, batch_loss, args.steps, lr=2e-3, warmup_steps=min(50, args.steps // 5), evaluate=evaluate,
            eval_every=max(1, args.steps // 6), desc=name, progress=not args.quiet,
        )  # fmt: skip
        with torch.no_grad():
            logits = model(heldout_inputs)  # (N, T, V)
            chosen = heldout_labels != -100
            accuracy = float((logits.argmax(-1)[chosen] == heldout_labels[chosen]).float().mean())
            final = float(F.cross_entropy(logits.transpose(1, 2), heldout_labels, ignore_index=-100))
        gaps = [b - a for a, b in itertools.pairwise(step_seconds)]
        gaps = [g for i, g in enumerate(gaps, start=1) if (i % max(1, args.steps // 6))]  # skip eval steps
        runs[name] = {
            "block_sizes": list(block_sizes),
            "block_lengths": list(model.config.block_lengths(args.length)),
            "training": log.as_dict(),
            "heldout_loss": round(final, 4),
            "heldout_accuracy": round(accuracy, 4),
            "forward_flops": forward_flops(model, args.length, device),
            "encoder_flops": forward_flops(model.funnel.encode, args.length, device),
            "seconds_per_step": round(statistics.median(gaps[5:] or gaps or [0.0]), 4),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if not args.quiet:
            row = runs[name]
            print(f"{name}: loss {final:.3f}, accuracy {accuracy:.3f}, {row['forward_flops'] / 1e6:.1f} MFLOPs, "
                  f"{row['seconds_per_step']:.3f} s/step")  # fmt: skip
    seconds = time.perf_counter() - start
    meta = {
        "script": "training/funnel_pooling.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": args.steps,
        "seconds": round(seconds, 1),
        "provenance": checkpoints.provenance(device),
        "data": "WordPiece ids of the corpus's training plays; scored on the held-out plays (Hamlet, The Tempest)",
        "length": args.length,
        "tokens_seen": args.steps * args.batch * args.length,
        "heldout_masked_tokens": int((heldout_labels != -100).sum()),
        "configs": {name: dataclasses.asdict(model_config(args, b)) for name, b in BLOCKS.items()},
        "runs": runs,
    }
    folder = Path(args.out or checkpoints.CHECKPOINT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{NAME}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return meta


if __name__ == "__main__":
    main()
