"""Post-LN against Pre-LN, each with and without learning-rate warm-up (curves only: ``ch06-warmup.json``, chapter 6).

    python training/warmup.py                        # the committed curves (CPU, a few minutes)
    python training/warmup.py --steps 20 --out DIR   # a short run written elsewhere
    python training/warmup.py --large --device cuda  # a deeper, wider stack, for a GPU (ch06-warmup-large)

Four small GPT language models that differ only in where the LayerNorm sits (``norm="post"`` or ``"pre"``) and
in whether the learning rate warms up linearly over ``--warmup`` steps or starts at its peak; all four start
from the same initial weights (same seed) and see the same batches in the same order, with the same peak rate
and cosine decay. With several ``--lr`` values every rate gets its four runs. Each run is scored on a fixed set
of windows from the held-out plays (Hamlet, The Tempest). Xiong et al. (2020) predict that Post-LN without
warm-up trains badly or diverges while Pre-LN does not need the warm-up. No weights are kept: the JSON holds
the arguments, every run's curves and final held-out loss, the wall time and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from tfcourse import checkpoints, corpus, subword
from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.training import fit

NAME = "ch06-warmup"
EVAL_SEED = 1234  # the held-out windows: the same in every run

SIZES = {
    "default": dict(d_model=64, layers=6, heads=4, d_ff=256, context=32, batch=16, steps=200, warmup=50),
    "large": dict(d_model=256, layers=12, heads=8, d_ff=1024, context=128, batch=32, steps=2000, warmup=400),
}
DEFAULT_LRS = {"default": [3e-3, 1e-2], "large": [1e-3, 3e-3]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="a bigger model and run, for a GPU")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 200; 2000 with --large)")
    parser.add_argument("--out", type=Path, help="output folder (default: the package's checkpoints)")
    parser.add_argument("--name", help=f"record name (default {NAME}, {NAME}-large with --large)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--lr", type=float, nargs="+", help="peak learning rate(s); four runs for each")
    parser.add_argument("--warmup", type=int, help="warm-up steps of the runs with warm-up")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--d-ff", type=int)
    parser.add_argument("--context", type=int, help="tokens per training window")
    parser.add_argument("--batch", type=int, help="windows per step")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--eval-windows", type=int, default=32, help="held-out windows per evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (one is fastest on a shared machine)")
    args = parser.parse_args(argv)
    size = "large" if args.large else "default"
    for key, value in SIZES[size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.lr is None:
        args.lr = DEFAULT_LRS[size]
    args.warmup = min(args.warmup, args.steps // 2)
    if args.name is None:
        args.name = f"{NAME}-large" if args.large else NAME
    return args


def run_name(norm: str, warmup: int, lr: float) -> str:
    """The key of one run in the record, e.g. ``"post-LN, no warm-up, lr 0.003"``."""
    schedule = f"warm-up {warmup}" if warmup else "no warm-up"
    return f"{norm}-LN, {schedule}, lr {lr:g}"


def heldout_loss(model: GPT, windows: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token loss over ``windows`` (every window predicts the same number of tokens)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        parts = [(float(model.loss(w.to(device))), len(w)) for w in windows.split(batch_size)]
    return sum(x * n for x, n in parts) / sum(n for _, n in parts)


def train_one(args, norm: str, warmup: int, lr: float, train_ids, heldout, device) -> dict:
    """One run; returns its curves and final held-out loss (NaN-free: a diverged run stops there)."""
    torch.manual_seed(args.seed)  # the same initial weights for every run
    config = GPTConfig(
        vocab_size=subword.VOCAB_SIZE,
        max_len=args.context,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        d_ff=args.d_ff,
        dropout=0.0,
        norm=norm,
    )
    model = GPT(config).to(device)
    data = torch.Generator().manual_seed(args.seed)  # the same batches in the same order

    def batch_loss(step: int) -> torch.Tensor:
        return model.loss(subword.lm_windows(train_ids, args.batch, args.context, data).to(device))

    log = fit(
        model,
        batch_loss,
        args.steps,
        lr=lr,
        warmup_steps=warmup,
        schedule="cosine",
        evaluate=lambda: heldout_loss(model, heldout),
        eval_every=args.eval_every,
        desc=run_name(norm, warmup, lr),
        progress=sys.stderr.isatty(),
    )
    final = log.evals[-1][1] if log.evals else float("nan")
    return {
        "norm": norm,
        "warmup_steps": warmup,
        "lr": lr,
        "final_heldout_loss": round(final, 4),
        "diverged": log.diverged,
        "curves": log.as_dict(),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run every (norm, warm-up, rate) combination, save the record and return ``{"meta", "path"}``."""
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    train_ids = subword.corpus_ids("bpe", "train")
    heldout_ids = subword.corpus_ids("bpe", "heldout")
    heldout = subword.lm_windows(heldout_ids, args.eval_windows, args.context, torch.Generator().manual_seed(EVAL_SEED))
    start = time.perf_counter()
    runs = {}
    for lr in args.lr:
        for norm in ("post", "pre"):
            for warmup in (0, args.warmup):
                name = run_name(norm, warmup, lr)
                runs[name] = train_one(args, norm, warmup, lr, train_ids, heldout, device)
                print(f"{name}: held-out loss {runs[name]['final_heldout_loss']:.3f}", flush=True)
    seconds = time.perf_counter() - start
    meta = {
        "script": "training/warmup.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": args.steps,
        "seconds": round(seconds, 1),
        "tokens_per_run": args.steps * args.batch * args.context,
        "data": {
            "tokenizer": f"bpe-{subword.VOCAB_SIZE}",
            "train": "corpus_ids('bpe', 'train')",
            "train_tokens": train_ids.numel(),
            "heldout": "corpus_ids('bpe', 'heldout')",
            "heldout_plays": list(corpus.HELD_OUT),
            "heldout_eval": f"lm_windows(heldout, {args.eval_windows}, {args.context}, seed {EVAL_SEED})",
            "corpus": corpus.provenance(),
        },
        "runs": runs,
        "provenance": checkpoints.provenance(device),
    }
    path = checkpoints.save_curves(args.name, meta, directory=args.out)
    print(f"{args.name}: {len(runs)} runs of {args.steps} steps in {seconds:.0f} s; wrote {path}")
    return {"meta": meta, "path": path}


if __name__ == "__main__":
    main()
