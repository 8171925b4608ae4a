"""Train a small T5 on three text-to-text tasks cut from the corpus: one model, one loss, a prefix per task.

    python training/t5_text2text.py              # writes tfcourse/data/checkpoints/ch09-t5.{safetensors,json}
    python training/t5_text2text.py --large --device cuda   # a wider model and a longer run: ch09-t5-large

The tasks, every input and target being byte-level BPE text (the book's tokenizer, ids 0, 1, 2 = ``<pad>``,
``<bos>``, ``<eos>``):

- ``last word: <a line of verse>`` → the line's last word (a copying task: find the end, copy one word);
- ``fill: <a line with one word replaced by <extra_id_0>>`` → ``<extra_id_0> word`` (T5's span corruption with
  one one-word span, made by :func:`tfcourse.pretraining.span_corruption`: guessing a word from its context);
- ``genre: <the start of a speech>`` → ``comedy`` or ``tragedy`` (classification written as text).

**Sentinels.** The BPE vocabulary has no ``<extra_id_k>`` tokens, so the model's vocabulary is the tokenizer's
2048 ids plus :data:`NUM_SENTINELS` ids on top; as in T5, ``<extra_id_0>`` is the very last id
(:data:`SENTINEL_0`) and the others count down. The tokenizer never produces them.

Each batch mixes the three tasks equally. Held-out accuracy is exact match of the greedy output, on lines of
the held-out plays (Hamlet, The Tempest) and, for the genre, on speeches of Hamlet and Twelfth Night
(:data:`tfcourse.tasks.GENRE_EVAL_PLAYS`, never labelled in training).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

from tfcourse import checkpoints, corpus, subword, tasks
from tfcourse.models.t5 import T5Config, T5ForConditionalGeneration
from tfcourse.pretraining import IGNORE_INDEX, span_corruption
from tfcourse.training import fit

NAME = "ch09-t5"
NUM_SENTINELS = 8
VOCAB_SIZE = subword.VOCAB_SIZE + NUM_SENTINELS
SENTINEL_0 = VOCAB_SIZE - 1
"""Id of ``<extra_id_0>``: the last id of the model's vocabulary, as in T5."""
PAD, EOS = 0, 2
TASKS = ("last word", "fill", "genre")
GENRES = {"comedies": "comedy", "tragedies": "tragedy"}
SIZES = {
    "default": dict(d_model=128, d_kv=32, num_heads=4, d_ff=256, num_encoder_layers=2, num_decoder_layers=2),
    "large": dict(d_model=256, d_kv=64, num_heads=4, d_ff=1024, num_encoder_layers=4, num_decoder_layers=4),
    "tiny": dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=1, num_decoder_layers=1),
}
WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 500, large 5000)")
    parser.add_argument("--batch", type=int, default=64, help="examples per batch, the tasks mixed equally")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--length", type=int, default=48, help="longest encoder input, in tokens")
    parser.add_argument("--pool", type=int, default=20000, help="training examples prepared per task")
    parser.add_argument("--eval-examples", type=int, default=200, help="held-out examples per task")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoint (default: the package's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--large", action="store_true", help="a bigger model and a longer run (for a GPU)")
    parser.add_argument("--tiny", action="store_true", help="a toy model (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (one is fastest on a busy machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 5000 if args.large else 500
    return args


def verse_lines(names) -> list[str]:
    """Lines of 4 to 10 words from the speeches of ``names`` whose last word is a plain word."""
    out = []
    for name in names:
        for speech in tasks.speeches(name):
            for line in speech.text.split("\n"):
                words = line.split()
                if 4 <= len(words) <= 10 and WORD.fullmatch(words[-1].strip(".,;:!?'\"-")):
                    out.append(line.strip())
    return out


class Examples:
    """Builds ``(input ids, target ids)`` for each task; target ids end with EOS."""

    def __init__(self, tokenizer, length: int):
        self.tokenizer, self.length = tokenizer, length
        self.prefix = {task: tokenizer.encode(f"{task}:").ids for task in TASKS}

    def words(self, line: str) -> list[list[int]]:
        """The line's BPE ids word by word, each word with a leading space (as the tokenizer sees a word
        inside a line), so that a word's tokens are the same wherever it stands."""
        return [e.ids for e in self.tokenizer.encode_batch([" " + w for w in line.split()])]

    def last_word(self, line: str) -> tuple[list[int], list[int]]:
        ids = [i for w in self.words(line) for i in w]
        word = WORD.search(line.split()[-1]).group()
        return self.prefix["last word"] + ids, [*self.tokenizer.encode(" " + word).ids, EOS]

    def fill(self, line: str, generator: torch.Generator) -> tuple[list[int], list[int]]:
        words = self.words(line)
        choices = [k for k, w in enumerate(line.split()) if WORD.fullmatch(w)] or [len(words) - 1]
        k = choices[int(torch.randint(len(choices), (), generator=generator))]
        tokens = torch.tensor([i for w in words for i in w])
        noise = torch.tensor([j == k for j, w in enumerate(words) for _ in w])  # the k-th word's tokens
        sc = span_corruption(
            tokens, sentinel_start_id=SENTINEL_0, num_sentinels=NUM_SENTINELS, eos_id=EOS, noise_mask=noise
        )
        return self.prefix["fill"] + sc.inputs[:-1].tolist(), sc.targets.tolist()

    def genre(self, text: str, genre: str) -> tuple[list[int], list[int]]:
        ids = self.tokenizer.encode(" " + " ".join(text.split())).ids
        budget = self.length - len(self.prefix["genre"])
        return self.prefix["genre"] + ids[:budget], [*self.tokenizer.encode(" " + genre).ids, EOS]

    def build(self, task: str, items, generator: torch.Generator) -> list[tuple[list[int], list[int]]]:
        if task == "last word":
            made = [self.last_word(line) for line in items]
        elif task == "fill":
            made = [self.fill(line, generator) for line in items]
        else:
            made = [self.genre(text, genre) for text, genre in items]
        return [(x[: self.length], y) for x, y in made]


def draw(items: list, count: int, generator: torch.Generator) -> list:
    order = torch.randperm(len(items), generator=generator)[:count].tolist()
    return [items[i] for i in order]


def genre_speeches(plays: dict[str, str], per_genre: int | None, generator) -> list[tuple[str, str]]:
    """Balanced ``(speech text, genre word)`` pairs of speeches of at least 12 words."""
    found = {genre: [] for genre in GENRES}
    for name, genre in plays.items():
        found[genre] += [s.text for s in tasks.speeches(name) if len(s.text.split()) >= 12]
    count = min(len(v) for v in found.values()) if per_genre is None else per_genre
    return [(text, GENRES[g]) for g, texts in found.items() for text in draw(texts, count, generator)]


def batch_tensors(examples, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ``(B, S)`` inputs, their validity mask and ``(B, T)`` labels (``-100`` on padding)."""
    x, valid = tasks.pad_rows([e[0] for e in examples], PAD)
    y, y_valid = tasks.pad_rows([e[1] for e in examples], PAD)
    return x.to(device), valid.to(device), y.masked_fill(~y_valid, IGNORE_INDEX).to(device)


def decode(tokenizer, ids: list[int]) -> str:
    """Text of generated ids: sentinels shown as ``<extra_id_k>``, stopping at EOS, padding dropped."""
    pieces, run = [], []
    for i in ids:
        if i == EOS:
            break
        if i >= subword.VOCAB_SIZE:
            pieces += [tokenizer.decode(run), f" <extra_id_{SENTINEL_0 - i}>"]
            run = []
        elif i != PAD:
            run.append(i)
    return "".join([*pieces, tokenizer.decode(run)]).strip()


def generate_text(model, tokenizer, inputs: list[list[int]], device, max_new_tokens: int = 8) -> list[str]:
    """Greedy outputs of ``model`` for id lists ``inputs`` (batched, with KV caches)."""
    outputs = []
    for s in range(0, len(inputs), 128):
        x, valid = tasks.pad_rows(inputs[s : s + 128], PAD)
        tokens = model.generate(x.to(device), max_new_tokens, input_valid=valid.to(device)).tokens  # (B, 1 + N)
        outputs += [decode(tokenizer, row[1:]) for row in tokens.tolist()]
    return outputs


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    tokenizer = subword.load_tokenizer("bpe")
    maker = Examples(tokenizer, args.length)
    g = torch.Generator().manual_seed(args.seed + 1)
    train_names = [n for n in corpus.plays() if n not in corpus.HELD_OUT]
    train_lines, heldout_lines = verse_lines(train_names), verse_lines(corpus.HELD_OUT)
    genre_train, genre_eval = tasks.genre_split(tuple(GENRES))
    sources = {
        "last word": (draw(train_lines, args.pool, g), draw(heldout_lines, args.eval_examples, g)),
        "fill": (draw(train_lines, args.pool, g), draw(heldout_lines, args.eval_examples, g)),
        "genre": (
            genre_speeches(genre_train, args.pool // 2, g),
            draw(genre_speeches(genre_eval, None, g), args.eval_examples, g),
        ),
    }
    pools = {t: maker.build(t, train, g) for t, (train, _) in sources.items()}
    evals = {t: maker.build(t, held, g) for t, (_, held) in sources.items()}
    size = "large" if args.large else "tiny" if args.tiny else "default"
    config = T5Config(vocab_size=VOCAB_SIZE, pad_id=PAD, eos_id=EOS, decoder_start_id=PAD, dropout=0.0, **SIZES[size])
    model = T5ForConditionalGeneration(config).to(device)
    data = torch.Generator().manual_seed(args.seed + 2)
    accuracy: list[dict] = []
    log_steps: list[int] = []  # one entry per step taken, so an evaluation knows its step

    def batch_loss(step: int) -> torch.Tensor:
        picks = torch.randint(0, len(TASKS), (args.batch,), generator=data).tolist()
        chosen = [pools[TASKS[t]][int(torch.randint(len(pools[TASKS[t]]), (), generator=data))] for t in picks]
        x, valid, y = batch_tensors(chosen, device)
        return model.loss(x, y, valid)

    def evaluate() -> float:
        losses, record = [], {"step": len(log_steps)}
        for task, examples in evals.items():
            x, valid, y = batch_tensors(examples, device)
            losses.append(model.loss(x, y, valid).item())
            outputs = generate_text(model, tokenizer, [e[0] for e in examples], device)
            truth = [decode(tokenizer, e[1]) for e in examples]
            record[task] = round(sum(o == t for o, t in zip(outputs, truth, strict=True)) / len(truth), 4)
            record[f"{task} loss"] = round(losses[-1], 4)
        accuracy.append(record)
        return sum(losses) / len(losses)

    def counted(step: int) -> torch.Tensor:
        log_steps.append(step)
        return batch_loss(step)

    log = fit(
        model, counted, args.steps, lr=args.lr, warmup_steps=max(1, args.steps // 10), evaluate=evaluate,
        eval_every=args.eval_every, desc="text-to-text", progress=not args.quiet,
    )  # fmt: skip
    shown = {}
    for task, examples in evals.items():
        few = examples[:6]
        outputs = generate_text(model, tokenizer, [e[0] for e in few], device)
        shown[task] = [
            {"input": decode(tokenizer, x), "target": decode(tokenizer, y), "output": o}
            for (x, y), o in zip(few, outputs, strict=True)
        ]
    meta = {
        "script": "training/t5_text2text.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": len(log.losses),
        "seconds": round(time.perf_counter() - start, 1),
        "train_seconds": log.seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tasks": list(TASKS),
        "num_sentinels": NUM_SENTINELS,
        "sentinel_0": SENTINEL_0,
        "train_examples_per_task": {t: len(p) for t, p in pools.items()},
        "eval_examples_per_task": {t: len(e) for t, e in evals.items()},
        "genre_eval_plays": sorted(genre_eval),
        "provenance": checkpoints.provenance(device),
        "corpus": corpus.provenance(),
        "log": log.as_dict(),
        "accuracy": accuracy,
        "examples": shown,
        "results": {f"heldout_accuracy_{t.replace(' ', '_')}": accuracy[-1][t] for t in TASKS},
    }
    meta["results"]["final_train_loss"] = round(sum(log.losses[-20:]) / len(log.losses[-20:]), 4)
    name = f"{NAME}-large" if args.large else NAME
    path = checkpoints.save_checkpoint(name, model, meta, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {meta['seconds']} s")
    for key, value in meta["results"].items():
        print(f"  {key}: {value}")
    return meta


if __name__ == "__main__":
    main(sys.argv[1:])
