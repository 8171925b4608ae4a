"""Train the small GPT whose heads chapter 3 takes apart (checkpoint ``ch03-heads``).

    python training/heads.py                          # the committed checkpoint (CPU, a few minutes)
    python training/heads.py --steps 20 --out DIR     # a short run written elsewhere
    python training/heads.py --large --device cuda    # more heads and layers, for a GPU (ch03-heads-large)

A pre-LN decoder-only :class:`~tfcourse.models.gpt.GPT` with 2 layers of 8 heads (16 heads, as in the title of
Michel et al. 2019) learns to predict the next byte-level BPE token of random windows cut from the corpus's
training split. A fixed set of windows from the two held-out plays (Hamlet, The Tempest) scores it every
``--eval-every`` steps. The JSON records the configuration, the arguments, the curves, the held-out loss, the
wall time and the machine.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from tfcourse import checkpoints, corpus, subword
from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.training import fit

NAME = "ch03-heads"
EVAL_SEED = 1234  # the held-out windows: the same in every run

SIZES = {
    "default": dict(d_model=128, layers=2, heads=8, d_ff=512, context=64, batch=32, steps=400, lr=3e-3),
    "large": dict(d_model=256, layers=4, heads=8, d_ff=1024, context=128, batch=64, steps=3000, lr=1.5e-3),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="a bigger model and run, for a GPU")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 400; 3000 with --large)")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: the package's checkpoints)")
    parser.add_argument("--name", help=f"checkpoint name (default {NAME}, {NAME}-large with --large)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--d-ff", type=int)
    parser.add_argument("--context", type=int, help="tokens per training window")
    parser.add_argument("--batch", type=int, help="windows per step")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up steps (at most a fifth of the run)")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-windows", type=int, default=64, help="held-out windows per evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (one is fastest on a shared machine)")
    args = parser.parse_args(argv)
    for key, value in SIZES["large" if args.large else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.name is None:
        args.name = f"{NAME}-large" if args.large else NAME
    return args


def heldout_windows(count: int, length: int) -> torch.Tensor:
    """``(count, length)`` windows of the held-out plays, drawn with a fixed seed (the same in every run)."""
    ids = subword.corpus_ids("bpe", "heldout")
    return subword.lm_windows(ids, count, length, torch.Generator().manual_seed(EVAL_SEED))


def heldout_loss(model: GPT, windows: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token loss over ``windows`` (every window predicts the same number of tokens)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        losses = [float(model.loss(w.to(device))) for w in windows.split(batch_size)]
        sizes = [len(w) for w in windows.split(batch_size)]
    return sum(x * n for x, n in zip(losses, sizes, strict=True)) / sum(sizes)


def main(argv: list[str] | None = None) -> dict:
    """Train, save the checkpoint and return ``{"model", "meta", "path"}``."""
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_ids = subword.corpus_ids("bpe", "train")
    heldout = heldout_windows(args.eval_windows, args.context)
    config = GPTConfig(
        vocab_size=subword.VOCAB_SIZE,
        max_len=args.context,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        d_ff=args.d_ff,
        dropout=0.0,  # less than one pass over the data: nothing to regularise yet
    )
    model = GPT(config).to(device)
    data = torch.Generator().manual_seed(args.seed)

    def batch_loss(step: int) -> torch.Tensor:
        return model.loss(subword.lm_windows(train_ids, args.batch, args.context, data).to(device))

    start = time.perf_counter()
    log = fit(
        model,
        batch_loss,
        args.steps,
        lr=args.lr,
        warmup_steps=min(args.warmup, args.steps // 5),
        schedule="cosine",
        evaluate=lambda: heldout_loss(model, heldout),
        eval_every=args.eval_every,
        desc=args.name,
        progress=sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    final = log.evals[-1][1]
    meta = {
        "script": "training/heads.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": len(log.losses),
        "seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_seen": len(log.losses) * args.batch * args.context,
        "data": {
            "tokenizer": f"bpe-{subword.VOCAB_SIZE}",
            "train": "corpus_ids('bpe', 'train')",
            "train_tokens": train_ids.numel(),
            "heldout": "corpus_ids('bpe', 'heldout')",
            "heldout_plays": list(corpus.HELD_OUT),
            "heldout_eval": f"lm_windows(heldout, {args.eval_windows}, {args.context}, seed {EVAL_SEED})",
            "corpus": corpus.provenance(),
        },
        "heldout_loss": round(final, 4),
        "heldout_perplexity": round(math.exp(final), 2),
        "curves": log.as_dict(),
        "provenance": checkpoints.provenance(device),
    }
    path = checkpoints.save_checkpoint(args.name, model, meta, directory=args.out)
    print(
        f"{args.name}: {meta['steps']} steps in {seconds:.0f} s, held-out loss {log.evals[0][1]:.3f} -> "
        f"{final:.3f} (perplexity {math.exp(final):.1f}); wrote {path}"
    )
    return {"model": model, "meta": meta, "path": path}


if __name__ == "__main__":
    main()
