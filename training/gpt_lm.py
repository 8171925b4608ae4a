"""Train the book's small GPT language model on Shakespeare (checkpoint ``ch07-gpt``, chapter 7).

    python training/gpt_lm.py                        # the committed checkpoint (CPU, a few minutes)
    python training/gpt_lm.py --steps 50 --out DIR   # a short run written elsewhere
    python training/gpt_lm.py --large --device cuda  # a bigger model for a GPU (checkpoint ch07-gpt-large)

A pre-LN decoder-only :class:`~tfcourse.models.gpt.GPT` with learned positions learns to predict the next
byte-level BPE token (the book's 2,048-token vocabulary) of random windows cut from the corpus's training
split (36 plays). Every ``--eval-every`` steps it is scored on a fixed set of windows of the two held-out plays
(Hamlet, The Tempest), which it never trains on. The checkpoint's JSON records the configuration, the
arguments, the curves, the held-out loss and perplexity, the wall time and the machine.
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
from tfcourse.training import evaluation_windows, fit, lm_loss

NAME = "ch07-gpt"

# d_model, layers, heads, d_ff, context, batch, steps, lr
SIZES = {
    "default": dict(d_model=128, layers=4, heads=4, d_ff=512, context=128, batch=32, steps=400, lr=3e-3),
    "large": dict(d_model=384, layers=6, heads=6, d_ff=1536, context=256, batch=64, steps=4000, lr=1e-3),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="a bigger model and run, for a GPU")
    parser.add_argument(
        "--steps", type=int, help="optimizer steps (default 400, one pass over the training tokens; 4000 with --large)"
    )
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
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--eval-windows", type=int, default=64, help="held-out windows per evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1: the same sums in the same order on any machine)"
    )
    args = parser.parse_args(argv)
    for key, value in SIZES["large" if args.large else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.name is None:
        args.name = f"{NAME}-large" if args.large else NAME
    return args


def main(argv: list[str] | None = None) -> dict:
    """Train, save the checkpoint and return ``{"model", "meta", "path"}``."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_ids = subword.corpus_ids("bpe", "train")
    heldout = evaluation_windows(subword.corpus_ids("bpe", "heldout"), args.eval_windows, args.context)
    config = GPTConfig(
        vocab_size=subword.VOCAB_SIZE,
        max_len=args.context,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        d_ff=args.d_ff,
        dropout=0.0,  # fewer than two passes over the data: nothing to regularise yet
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
        evaluate=lambda: lm_loss(model, heldout),
        eval_every=args.eval_every,
        desc=args.name,
        progress=sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    final = log.evals[-1][1]
    meta = {
        "script": "training/gpt_lm.py",
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
            "heldout_eval": f"evaluation_windows(heldout, {args.eval_windows}, {args.context})",
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
