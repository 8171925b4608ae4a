"""Chapter 2's experiment: does the entropy-invariant log-n attention scale help a language model run on
sequences longer than those it was trained on?

Four small GPT language models, trained on the corpus's training plays with windows of ``--train-len`` tokens,
differ in two things only: the score scale (``1/√Dh``, or ``log(n) / (log(train_len)·√Dh)`` with ``n`` the
number of tokens a position attends to) and the position scheme (rotary or sinusoidal; both can run past the
training length, unlike learned positions). Every model is then scored on held-out plays (Hamlet, The Tempest)
in windows 8x the training length: the loss at every position, and the mean loss of windows 1x, 2x, 4x and 8x
the training length. No weights are kept: the curves and the numbers go to one JSON file.

    python training/logn_extrapolation.py                          # tfcourse/data/checkpoints/ch02-logn-*.json
    python training/logn_extrapolation.py --steps 20 --out runs/   # a quick check
    python training/logn_extrapolation.py --large --device cuda    # wider models, more steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tfcourse import checkpoints, subword
from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.training import fit

NAME = "ch02-logn-extrapolation"
SCALES = ("standard", "logn")
POSITIONS = ("rotary", "sinusoidal")
FACTORS = (1, 2, 4, 8)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-len", type=int, default=32, help="training window, in tokens")
    parser.add_argument("--eval-windows", type=int, default=48, help="held-out windows of 8x train-len tokens")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default: the package's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--large", action="store_true", help="wider, deeper models and 10x the steps (GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def model_config(args: argparse.Namespace, scale: str, positions: str) -> GPTConfig:
    width, layers = (256, 6) if args.large else (64, 2)
    return GPTConfig(
        vocab_size=subword.VOCAB_SIZE, max_len=max(FACTORS) * args.train_len, d_model=width, num_heads=4,
        num_layers=layers, d_ff=4 * width, dropout=0.0, positions=positions, attention_scale=scale,
        logn_train_len=args.train_len,
    )  # fmt: skip


def eval_windows(ids: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``(count, length)`` held-out windows at evenly spaced offsets (the same for every model)."""
    starts = torch.linspace(0, ids.numel() - length - 1, count).long()  # (count,)
    return ids[starts[:, None] + torch.arange(length)]  # (count, length)


@torch.no_grad()
def loss_per_position(model: GPT, windows: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """``(length - 1,)`` mean next-token loss at each position over ``windows`` ``(N, length)``.

    Position ``p`` predicts token ``p + 1`` from tokens ``0..p``; the model is causal and its log-n scale
    depends only on how many tokens a position sees, so one pass over long windows gives the loss that
    every shorter window would give at the same positions.
    """
    model.eval()
    total = torch.zeros(windows.shape[1] - 1)
    for part in windows.split(chunk):
        logits = model(part)[:, :-1].float()  # (n, length - 1, V)
        losses = F.cross_entropy(logits.transpose(1, 2), part[:, 1:], reduction="none")  # (n, length - 1)
        total += losses.sum(0).cpu()
    return total / windows.shape[0]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.large:
        args.steps *= 10
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train_ids = subword.corpus_ids("bpe", "train")
    heldout = eval_windows(subword.corpus_ids("bpe", "heldout"), args.eval_windows, max(FACTORS) * args.train_len)
    heldout = heldout.to(device)
    short_heldout = heldout[:, : args.train_len]
    start = time.perf_counter()
    runs = {}
    for positions in POSITIONS:
        for scale in SCALES:
            key = f"{positions}/{scale}"
            torch.manual_seed(args.seed)  # the same initial weights for both scales
            model = GPT(model_config(args, scale, positions)).to(device)
            batches = torch.Generator().manual_seed(args.seed)  # the same batches for every model

            def batch_loss(step: int, model=model, batches=batches) -> torch.Tensor:
                return model.loss(subword.lm_windows(train_ids, args.batch, args.train_len, batches).to(device))

            def evaluate(model=model) -> float:
                return float(model.loss(short_heldout))

            log = fit(
                model, batch_loss, args.steps, lr=3e-3, warmup_steps=min(50, args.steps // 5),
                evaluate=evaluate, eval_every=max(1, args.steps // 6), desc=key, progress=not args.quiet,
            )  # fmt: skip
            per_position = loss_per_position(model, heldout)
            at_length = {str(f * args.train_len): float(per_position[: f * args.train_len - 1].mean()) for f in FACTORS}
            runs[key] = {
                "training": log.as_dict(),
                "loss_per_position": [round(float(x), 4) for x in per_position],
                "heldout_loss_at_length": {k: round(v, 4) for k, v in at_length.items()},
                "parameters": sum(p.numel() for p in model.parameters()),
            }
            if not args.quiet:
                print(key, {k: round(v, 3) for k, v in at_length.items()})
    seconds = time.perf_counter() - start
    meta = {
        "script": "training/logn_extrapolation.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": args.steps,
        "seconds": round(seconds, 1),
        "provenance": checkpoints.provenance(device),
        "data": "BPE ids of the corpus's training plays; scored on the held-out plays (Hamlet, The Tempest)",
        "train_len": args.train_len,
        "test_lengths": [f * args.train_len for f in FACTORS],
        "tokens_seen": args.steps * args.batch * args.train_len,
        "configs": {key: dataclasses.asdict(model_config(args, *reversed(key.split("/")))) for key in runs},
        "runs": runs,
    }
    folder = Path(args.out or checkpoints.CHECKPOINT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{NAME}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return meta


if __name__ == "__main__":
    main()
    sys.exit(0)
