"""Train a small GPT on Shakespeare and measure how sparse its attention is (checkpoint ``ch12-sparsity``).

    python training/sparsity.py                        # the committed checkpoint (CPU, about a minute)
    python training/sparsity.py --steps 20 --out DIR   # a short run written elsewhere
    python training/sparsity.py --large --device cuda  # a bigger model for a GPU (ch12-sparsity-large)

A pre-LN decoder-only :class:`~tfcourse.models.gpt.GPT` learns to predict the next byte-level BPE token (the
book's 2,048-token vocabulary) of random windows of the corpus's training split. Afterwards every head of the
trained model, and of the same model at its initialisation (same seed), is recorded on fixed windows of the
held-out plays, and :func:`tfcourse.analysis.keys_for_mass` counts how many keys each query needs to collect 90 %
of its attention. The JSON records the curves, the held-out loss and those counts per layer and head.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from tfcourse import checkpoints, corpus, subword
from tfcourse.analysis import keys_for_mass, record_attention
from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.training import fit

NAME = "ch12-sparsity"
MASS = 0.9

SIZES = {
    "default": dict(d_model=64, layers=4, heads=4, d_ff=256, context=128, batch=16, steps=200, lr=3e-3),
    "large": dict(d_model=256, layers=6, heads=8, d_ff=1024, context=256, batch=64, steps=3000, lr=1e-3),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="a bigger model and run, for a GPU")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 200; 3000 with --large)")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: the package's checkpoints)")
    parser.add_argument("--name", help=f"checkpoint name (default {NAME}, {NAME}-large with --large)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--d-ff", type=int)
    parser.add_argument("--context", type=int, help="tokens per window")
    parser.add_argument("--batch", type=int, help="windows per step")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up steps (at most a fifth of the run)")
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--eval-windows", type=int, default=32, help="held-out windows for loss and sparsity")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, value in SIZES["large" if args.large else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.name is None:
        args.name = f"{NAME}-large" if args.large else NAME
    return args


def heldout_windows(count: int, length: int) -> torch.Tensor:
    """``(count, length)`` windows at evenly spaced offsets of the held-out plays (the same in every run)."""
    ids = subword.corpus_ids("bpe", "heldout")
    starts = torch.linspace(0, ids.numel() - length, count).round().long()  # (count,)
    return ids[starts[:, None] + torch.arange(length)]  # (count, length)


def build_model(args: argparse.Namespace) -> GPT:
    """The model at its initialisation: the same weights for the same seed and sizes."""
    torch.manual_seed(args.seed)
    config = GPTConfig(
        vocab_size=subword.VOCAB_SIZE,
        max_len=args.context,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        d_ff=args.d_ff,
        dropout=0.0,
    )
    return GPT(config)


@torch.no_grad()
def attention_maps(model: GPT, windows: torch.Tensor) -> torch.Tensor:
    """Every layer's self-attention weights on ``windows``: ``(L, B, H, T, T)`` float32."""
    modules = {str(i): layer.self_attn for i, layer in enumerate(model.decoder.layers)}
    with record_attention(modules) as recorded:
        model(windows)
    return torch.stack([recorded[str(i)][0] for i in range(len(modules))])  # (L, B, H, T, T)


def sparsity_summary(weights: torch.Tensor, mass: float = MASS) -> dict:
    """Mean number of keys holding ``mass`` of each query's attention, per layer and head, over the queries of
    the second half of the window (each may see at least half the window): ``(L, H)`` lists, and the mean
    number of keys those queries may attend to."""
    t = weights.shape[-1]
    counts = keys_for_mass(weights, mass)[..., t // 2 :].float()  # (L, B, H, T/2)
    return {
        "mass": mass,
        "queries": f"positions {t // 2}..{t - 1}",
        "available_keys": round(float(torch.arange(t // 2, t).float().mean() + 1), 2),
        "keys_per_head": [[round(v, 2) for v in row] for row in counts.mean(dim=(1, 3)).tolist()],  # (L, H)
        "keys_mean": round(float(counts.mean()), 2),
    }


def main(argv: list[str] | None = None) -> dict:
    """Train, measure, save the checkpoint and return ``{"model", "meta", "path"}``."""
    args = parse_args(argv)
    device = torch.device(args.device)
    model = build_model(args).to(device)
    windows = heldout_windows(args.eval_windows, args.context).to(device)
    before = sparsity_summary(attention_maps(model.eval(), windows))
    train_ids = subword.corpus_ids("bpe", "train")
    data = torch.Generator().manual_seed(args.seed)

    def batch_loss(step: int) -> torch.Tensor:
        return model.loss(subword.lm_windows(train_ids, args.batch, args.context, data).to(device))

    log = fit(
        model,
        batch_loss,
        args.steps,
        lr=args.lr,
        warmup_steps=min(args.warmup, args.steps // 5),
        evaluate=lambda: model.loss(windows).item(),
        eval_every=args.eval_every,
        desc=args.name,
        progress=sys.stderr.isatty(),
    )
    start = time.perf_counter()
    after = sparsity_summary(attention_maps(model, windows))
    final = log.evals[-1][1]
    meta = {
        "script": "training/sparsity.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": len(log.losses),
        "seconds": round(log.seconds + time.perf_counter() - start, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_seen": len(log.losses) * args.batch * args.context,
        "data": {
            "tokenizer": f"bpe-{subword.VOCAB_SIZE}",
            "train": "corpus_ids('bpe', 'train')",
            "train_tokens": train_ids.numel(),
            "heldout_plays": list(corpus.HELD_OUT),
            "heldout_eval": f"{args.eval_windows} evenly spaced windows of {args.context} tokens",
            "corpus": corpus.provenance(),
        },
        "heldout_loss": round(final, 4),
        "heldout_perplexity": round(math.exp(final), 2),
        "sparsity": {"untrained": before, "trained": after},
        "curves": log.as_dict(),
        "provenance": checkpoints.provenance(device),
    }
    path = checkpoints.save_checkpoint(args.name, model, meta, directory=args.out)
    print(
        f"{args.name}: {meta['steps']} steps in {meta['seconds']:.0f} s, held-out loss {log.evals[0][1]:.3f} -> "
        f"{final:.3f}; keys for {MASS:.0%} of the attention: {before['keys_mean']} untrained, "
        f"{after['keys_mean']} trained (of {after['available_keys']}); wrote {path}"
    )
    return {"model": model, "meta": meta, "path": path}


if __name__ == "__main__":
    main()
