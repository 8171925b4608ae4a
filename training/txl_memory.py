"""Chapter 10's experiment: how much does Transformer-XL's memory lower held-out perplexity?

A small Transformer-XL language model is trained on the corpus's training plays, segment by segment, carrying
a memory of ``--train-mem`` positions from one segment to the next (``--batch`` parallel streams of text). A
second model, identical but trained without memory (a vanilla model that sees one segment at a time), is the
baseline. Both are scored on the held-out plays (Hamlet, The Tempest), read segment by segment, the memory
model with memories of 0, 32, 64, 128 and 256 positions (longer than in training: the relative positions
allow it). The memory model's weights are kept (float16); the baseline's curves and numbers go into the same
JSON.

    python training/txl_memory.py                       # writes tfcourse/data/checkpoints/ch10-txl-memory.*
    python training/txl_memory.py --steps 20 --out runs/    # a quick check
    python training/txl_memory.py --large --device cuda     # a wider model, more steps
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tfcourse import checkpoints, subword
from tfcourse.models.transformer_xl import TransformerXL, TransformerXLConfig, evaluate_long_sequence
from tfcourse.training import fit

NAME = "ch10-txl-memory"
EVAL_MEMORIES = (0, 32, 64, 128, 256)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (one segment per stream each)")
    parser.add_argument("--batch", type=int, default=32, help="parallel streams of text")
    parser.add_argument("--segment", type=int, default=32, help="segment length L, in tokens")
    parser.add_argument("--train-mem", type=int, default=32, help="memory length M during training")
    parser.add_argument("--eval-streams", type=int, default=8, help="held-out streams")
    parser.add_argument("--eval-len", type=int, default=1024, help="tokens per held-out stream")
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoint (default: the package's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--large", action="store_true", help="a wider, deeper model and 10x the steps (GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def model_config(args: argparse.Namespace, mem_len: int) -> TransformerXLConfig:
    width, layers = (256, 6) if args.large else (64, 3)
    return TransformerXLConfig(
        vocab_size=subword.VOCAB_SIZE, d_model=width, num_heads=4, num_layers=layers, d_ff=4 * width,
        mem_len=mem_len, dropout=0.0, norm="pre",
    )  # fmt: skip


def streams(ids: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``(count, length)`` contiguous pieces of ``ids`` starting at evenly spaced offsets."""
    starts = torch.linspace(0, ids.numel() - length - 1, count).long()  # (count,)
    return ids[starts[:, None] + torch.arange(length)]  # (count, length)


def with_memory(model: TransformerXL, mem_len: int) -> TransformerXL:
    """The same weights in a model that keeps ``mem_len`` positions of memory (memory has no parameters)."""
    other = TransformerXL(dataclasses.replace(model.config, mem_len=mem_len))
    other.load_state_dict(model.state_dict())
    return other.to(next(model.parameters()).device).eval()


def heldout_scores(model: TransformerXL, text: torch.Tensor, segment: int, mem_len: int) -> dict:
    """Loss, perplexity, loss by position inside a segment, and evaluation time with ``mem_len`` memory."""
    evaluator = with_memory(model, mem_len)
    start = time.perf_counter()
    log_probs = evaluate_long_sequence(evaluator, text, segment)  # (B, T - 1)
    seconds = time.perf_counter() - start
    losses = -log_probs.float().cpu()
    usable = (losses.shape[1] // segment) * segment  # whole segments only, for the per-position curve
    by_position = losses[:, :usable].reshape(losses.shape[0], -1, segment).mean(dim=(0, 1))  # (segment,)
    loss = float(losses.mean())
    return {
        "loss": round(loss, 4),
        "perplexity": round(math.exp(loss), 2),
        "loss_by_position_in_segment": [round(float(x), 4) for x in by_position],
        "eval_seconds": round(seconds, 3),
    }


def train(args: argparse.Namespace, mem_len: int, train_ids: torch.Tensor, heldout: torch.Tensor, device):
    """Train one model on ``--batch`` streams, segment after segment, carrying ``mem_len`` of memory."""
    torch.manual_seed(args.seed)  # the same initial weights with and without memory
    model = TransformerXL(model_config(args, mem_len)).to(device)
    text = streams(train_ids, args.batch, args.steps * args.segment + 1).to(device)  # (B, steps·L + 1)
    state = {"memory": None}

    def batch_loss(step: int) -> torch.Tensor:
        piece = text[:, step * args.segment : (step + 1) * args.segment + 1]  # (B, L + 1)
        logits, memory = model(piece[:, :-1], state["memory"])  # (B, L, V)
        state["memory"] = memory if mem_len > 0 else None
        return F.cross_entropy(logits.transpose(1, 2), piece[:, 1:])

    def evaluate() -> float:
        return float(-evaluate_long_sequence(model, heldout[:2, :256], args.segment).mean())

    log = fit(
        model, batch_loss, args.steps, lr=3e-3, warmup_steps=min(50, args.steps // 5), evaluate=evaluate,
        eval_every=max(1, args.steps // 8), desc=f"mem {mem_len}", progress=not args.quiet,
    )  # fmt: skip
    return model, log


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.large:
        args.steps *= 10
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train_ids = subword.corpus_ids("bpe", "train")
    heldout = streams(subword.corpus_ids("bpe", "heldout"), args.eval_streams, args.eval_len).to(device)
    start = time.perf_counter()
    model, log = train(args, args.train_mem, train_ids, heldout, device)
    vanilla, vanilla_log = train(args, 0, train_ids, heldout, device)
    evaluation = {str(m): heldout_scores(model, heldout, args.segment, m) for m in EVAL_MEMORIES}
    baseline = heldout_scores(vanilla, heldout, args.segment, 0)
    seconds = time.perf_counter() - start
    if not args.quiet:
        for m, row in evaluation.items():
            print(f"memory {m:>4}: perplexity {row['perplexity']}")
        print(f"vanilla (trained without memory): perplexity {baseline['perplexity']}")
    meta = {
        "script": "training/txl_memory.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": args.steps,
        "seconds": round(seconds, 1),
        "provenance": checkpoints.provenance(device),
        "data": "BPE ids of the corpus's training plays; scored on the held-out plays (Hamlet, The Tempest)",
        "segment": args.segment,
        "train_mem": args.train_mem,
        "tokens_seen": args.steps * args.batch * args.segment,
        "heldout_tokens": heldout.numel(),
        "training": log.as_dict(),
        "evaluation": evaluation,
        "vanilla": {"training": vanilla_log.as_dict(), "evaluation": baseline},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    checkpoints.save_checkpoint(NAME, model, meta, directory=args.out)
    return meta


if __name__ == "__main__":
    main()
