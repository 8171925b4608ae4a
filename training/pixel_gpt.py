"""Train a small GPT to generate 8x8 handwritten digits cell by cell (checkpoint ``ch12-pixels``, chapter 12).

    python training/pixel_gpt.py                        # the committed checkpoint (CPU, about a minute)
    python training/pixel_gpt.py --steps 20 --out DIR   # a short run written elsewhere
    python training/pixel_gpt.py --large --device cuda  # a bigger model for a GPU (ch12-pixels-large)

Each image of :mod:`tfcourse.digits` becomes 65 tokens: a class token (which digit) and the 64 grey levels
(0..16) in raster order, as Image GPT and the Sparse Transformer flatten images. A pre-LN decoder-only
:class:`~tfcourse.models.gpt.GPT` learns to predict every cell from the class and the cells before it; it is
scored in bits per cell on the held-out images (every fifth image of each digit, never trained on), next to
a baseline that knows only how often each grey level occurs at each cell position.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from tfcourse import checkpoints, digits
from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.training import fit

NAME = "ch12-pixels"

SIZES = {
    "default": dict(d_model=64, layers=3, heads=4, d_ff=256, batch=32, steps=600, lr=3e-3, dropout=0.1),
    "large": dict(d_model=256, layers=8, heads=8, d_ff=1024, batch=128, steps=6000, lr=1e-3, dropout=0.2),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="a bigger model and run, for a GPU")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 600; 6000 with --large)")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: the package's checkpoints)")
    parser.add_argument("--name", help=f"checkpoint name (default {NAME}, {NAME}-large with --large)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--d-ff", type=int)
    parser.add_argument("--batch", type=int, help="images per step")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--dropout", type=float, help="dropout in every layer (the training set is small)")
    parser.add_argument("--warmup", type=int, default=60, help="warm-up steps (at most a fifth of the run)")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, value in SIZES["large" if args.large else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.name is None:
        args.name = f"{NAME}-large" if args.large else NAME
    return args


def bits_per_cell(model: GPT, sequences: torch.Tensor) -> float:
    """Mean cross-entropy of the 64 cells of ``(N, 65)`` sequences, in bits (the class token is given)."""
    with torch.no_grad():
        return model.loss(sequences).item() / math.log(2)


def marginal_baseline(train: torch.Tensor, heldout: torch.Tensor) -> float:
    """Bits per cell on ``heldout`` ``(N, 64)`` of a model that knows, for every cell position, only how often
    each grey level occurs there in ``train`` (add-one smoothing): what a model without context achieves."""
    counts = torch.ones(64, digits.LEVELS)
    counts.scatter_add_(1, train.T, torch.ones_like(train.T, dtype=torch.float))  # (64, LEVELS)
    log_p = (counts / counts.sum(-1, keepdim=True)).log2()  # (64, LEVELS)
    return float(-log_p.gather(1, heldout.T).mean())


def main(argv: list[str] | None = None) -> dict:
    """Train, save the checkpoint and return ``{"model", "meta", "path"}``."""
    args = parse_args(argv)
    device = torch.device(args.device)
    train = digits.to_sequences(*digits.load_digits("train")).to(device)  # (N, 65)
    heldout = digits.to_sequences(*digits.load_digits("heldout")).to(device)
    torch.manual_seed(args.seed)
    config = GPTConfig(
        vocab_size=digits.VOCAB_SIZE,
        max_len=train.shape[1],
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        d_ff=args.d_ff,
        dropout=args.dropout,
    )
    model = GPT(config).to(device)
    data = torch.Generator().manual_seed(args.seed)

    def batch_loss(step: int) -> torch.Tensor:
        rows = torch.randint(0, train.shape[0], (args.batch,), generator=data)  # (B,)
        return model.loss(train[rows.to(device)])

    log = fit(
        model,
        batch_loss,
        args.steps,
        lr=args.lr,
        warmup_steps=min(args.warmup, args.steps // 5),
        evaluate=lambda: bits_per_cell(model, heldout),
        eval_every=args.eval_every,
        desc=args.name,
        progress=sys.stderr.isatty(),
    )
    final = log.evals[-1][1]
    baseline = marginal_baseline(train[:, 1:].cpu(), heldout[:, 1:].cpu())
    meta = {
        "script": "training/pixel_gpt.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": len(log.losses),
        "seconds": round(log.seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "images_seen": len(log.losses) * args.batch,
        "data": {
            "images": "tfcourse.digits.load_digits: 8x8 cells, grey levels 0..16",
            "train_images": train.shape[0],
            "heldout_images": heldout.shape[0],
            "sequence": "class token (17 + digit), then the 64 cells in raster order",
            "source": digits.provenance(),
        },
        "curves_unit": "training losses in nats per cell; evals in bits per cell on the held-out images",
        "heldout_bits_per_cell": round(final, 4),
        "train_bits_per_cell": round(bits_per_cell(model, train), 4),
        "marginal_baseline_bits_per_cell": round(baseline, 4),
        "uniform_bits_per_cell": round(math.log2(digits.LEVELS), 4),
        "curves": log.as_dict(),
        "provenance": checkpoints.provenance(device),
    }
    path = checkpoints.save_checkpoint(args.name, model, meta, directory=args.out)
    print(
        f"{args.name}: {meta['steps']} steps in {log.seconds:.0f} s, held-out bits per cell {log.evals[0][1]:.3f} "
        f"-> {final:.3f} (train {meta['train_bits_per_cell']:.3f}, per-cell frequencies {baseline:.3f}); "
        f"wrote {path}"
    )
    return {"model": model, "meta": meta, "path": path}


if __name__ == "__main__":
    main()
