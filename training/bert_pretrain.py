"""Pre-train a small BERT with masked LM + next-sentence prediction on the corpus's speeches, then fine-tune it.

    python training/bert_pretrain.py              # writes tfcourse/data/checkpoints/ch08-bert.{safetensors,json}
    python training/bert_pretrain.py --large --device cuda   # a wider, deeper, longer run: ch08-bert-large

**Pre-training.** Each play of the training split is a document and each speech a "sentence": an NSP pair is
a speech and either the speech that answers it (IsNext) or a speech from another play (NotNext), packed as
``[CLS] A [SEP] B [SEP]`` in at most ``--length`` WordPiece tokens and corrupted by BERT's 15 % masking
(80/10/10). The loss is MLM + NSP. Every ``--eval-every`` steps the model is scored on fixed pairs from the
held-out plays (Hamlet, The Tempest): MLM loss and top-1 accuracy on the masked tokens, NSP loss and accuracy.

**Fine-tuning.** Which genre is a speech from, comedy or tragedy? Labelled speeches come from the comedies and
tragedies of the training split; the score is accuracy on speeches of two plays no classifier sees (Hamlet
and Twelfth Night, :data:`tfcourse.tasks.GENRE_EVAL_PLAYS`), balanced between the genres. The same classifier
is trained twice for the same steps and learning rate: starting from the pre-trained encoder, and from random
weights. Only the curves and accuracies are stored, not the fine-tuned weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tfcourse import checkpoints, corpus, subword, tasks
from tfcourse.models.bert import BertConfig, BertForPreTraining
from tfcourse.models.bert_finetuning import BertForSequenceClassification
from tfcourse.pretraining import mlm_mask, nsp_pairs
from tfcourse.training import fit

NAME = "ch08-bert"
SIZES = {  # d_model, num_layers, num_heads, d_ff
    "default": dict(d_model=128, num_layers=3, num_heads=4, d_ff=384),
    "large": dict(d_model=256, num_layers=6, num_heads=4, d_ff=1024),
    "tiny": dict(d_model=32, num_layers=1, num_heads=2, d_ff=64),
}
GENRES = ("comedies", "tragedies")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="pre-training steps (default 400, large 4000)")
    parser.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps (default 150)")
    parser.add_argument("--batch", type=int, default=64, help="pairs per pre-training batch")
    parser.add_argument("--length", type=int, default=64, help="tokens per pair, with [CLS] and two [SEP]")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak pre-training learning rate")
    parser.add_argument("--finetune-lr", type=float, default=5e-4, help="peak fine-tuning learning rate")
    parser.add_argument("--labelled", type=int, default=1000, help="labelled training speeches per genre")
    parser.add_argument("--eval-pairs", type=int, default=512, help="held-out pairs scored at each evaluation")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoint (default: the package's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--large", action="store_true", help="a bigger model and a longer run (for a GPU)")
    parser.add_argument("--tiny", action="store_true", help="a toy model (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (one is fastest on a busy machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 4000 if args.large else 400
    if args.finetune_steps is None:
        args.finetune_steps = 600 if args.large else 150
    return args


_ENCODED: dict[str, list[list[int]]] = {}


def encode_speeches(tokenizer, names, max_tokens: int) -> list[list[list[int]]]:
    """One document per play: the WordPiece ids of each speech (line breaks as spaces), cut to ``max_tokens``."""
    for name in names:
        if name not in _ENCODED:
            texts = [s.text.replace("\n", " ") for s in tasks.speeches(name)]
            _ENCODED[name] = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False) if e.ids]
    return [[ids[:max_tokens] for ids in _ENCODED[name]] for name in names]


class Pretraining:
    """The pre-training data and loss: NSP pairs drawn afresh each epoch, masked on the fly."""

    def __init__(self, args, tokenizer, device):
        self.args, self.device = args, device
        self.ids = {t: tokenizer.token_to_id(t) for t in subword.WORDPIECE_SPECIALS}
        train_names = [n for n in corpus.plays() if n not in corpus.HELD_OUT]
        self.train_docs = encode_speeches(tokenizer, train_names, args.length)
        self.heldout_docs = encode_speeches(tokenizer, list(corpus.HELD_OUT), args.length)
        self.data = torch.Generator().manual_seed(args.seed + 1)
        self.pairs: list = []
        # Fixed held-out pairs and masks, so every evaluation scores the same tokens.
        probe = torch.Generator().manual_seed(1234)
        pairs = nsp_pairs(self.heldout_docs, generator=probe)
        order = torch.randperm(len(pairs), generator=probe)[: args.eval_pairs].tolist()
        self.probe = [self.batch([pairs[i] for i in order[s : s + 128]], probe) for s in range(0, len(order), 128)]
        self.curves = {"train_mlm": [], "train_nsp": [], "eval": []}

    def batch(self, pairs, generator):
        packed = tasks.collate_pairs(
            pairs, cls_token_id=self.ids["[CLS]"], sep_token_id=self.ids["[SEP]"],
            pad_token_id=self.ids["[PAD]"], max_length=self.args.length,
        )  # fmt: skip
        masked = mlm_mask(
            packed.input_ids, mask_token_id=self.ids["[MASK]"], vocab_size=subword.VOCAB_SIZE,
            special_token_ids=[self.ids[t] for t in ("[UNK]", "[CLS]", "[SEP]")],
            pad_token_id=self.ids["[PAD]"], generator=generator,
        )  # fmt: skip
        d = self.device
        return (
            masked.input_ids.to(d), packed.token_type_ids.to(d), packed.valid.to(d),
            masked.labels.to(d), packed.labels.to(d),
        )  # fmt: skip

    def draw(self):
        if len(self.pairs) < self.args.batch:  # a new epoch: fresh NotNext partners, shuffled
            fresh = nsp_pairs(self.train_docs, generator=self.data)
            self.pairs = [fresh[i] for i in torch.randperm(len(fresh), generator=self.data).tolist()]
        chosen, self.pairs = self.pairs[: self.args.batch], self.pairs[self.args.batch :]
        return self.batch(chosen, self.data)

    @staticmethod
    def losses(model, batch):
        """MLM and NSP cross-entropy, with MLM logits computed only at the selected positions (and their
        top-1 hits, for the accuracy)."""
        input_ids, types, valid, labels, nsp_labels = batch
        out = model.bert(input_ids, token_type_ids=types, valid=valid)
        selected = labels >= 0  # (B, T)
        mlm_logits = model.mlm_head(out.sequence_output[selected])  # (N, V) for the N selected tokens
        nsp_logits = model.nsp_head(out.pooled_output)  # (B, 2)
        targets = labels[selected]
        mlm = F.cross_entropy(mlm_logits.float(), targets)
        nsp = F.cross_entropy(nsp_logits.float(), nsp_labels)
        hits = (mlm_logits.argmax(-1) == targets).sum(), (nsp_logits.argmax(-1) == nsp_labels).sum()
        return mlm, nsp, hits, (targets.numel(), nsp_labels.numel())

    def step_loss(self, model):
        mlm, nsp, _, _ = self.losses(model, self.draw())
        self.curves["train_mlm"].append(round(mlm.item(), 4))
        self.curves["train_nsp"].append(round(nsp.item(), 4))
        return mlm + nsp

    def evaluate(self, model, step: int) -> float:
        sums = torch.zeros(6, dtype=torch.float64)  # mlm·n, nsp·b, mlm hits, nsp hits, n, b
        for batch in self.probe:
            mlm, nsp, (h_mlm, h_nsp), (n, b) = self.losses(model, batch)
            sums += torch.tensor([mlm.item() * n, nsp.item() * b, h_mlm.item(), h_nsp.item(), n, b])
        record = {
            "step": step,
            "mlm_loss": round(float(sums[0] / sums[4]), 4),
            "nsp_loss": round(float(sums[1] / sums[5]), 4),
            "mlm_accuracy": round(float(sums[2] / sums[4]), 4),
            "nsp_accuracy": round(float(sums[3] / sums[5]), 4),
        }
        self.curves["eval"].append(record)
        return record["mlm_loss"] + record["nsp_loss"]


def genre_data(args, tokenizer, device):
    """Balanced labelled speeches of at least 16 tokens: ``--labelled`` per genre from the training plays, and
    as many per genre from the evaluation plays as the rarer genre has there."""
    cls, sep, pad = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    train_plays, eval_plays = tasks.genre_split(GENRES)

    def examples(plays: dict[str, str], per_genre: int | None, generator):
        rows, labels = [], []
        for label, genre in enumerate(GENRES):
            names = [n for n, g in plays.items() if g == genre]
            found = [ids for doc in encode_speeches(tokenizer, names, args.length - 2) for ids in doc if len(ids) >= 16]
            order = torch.randperm(len(found), generator=generator).tolist()
            rows.append([[cls, *found[i], sep] for i in order])
            labels.append(label)
        count = min(len(r) for r in rows) if per_genre is None else per_genre
        ids = [row for r in rows for row in r[:count]]
        y = torch.tensor([label for label, r in zip(labels, rows, strict=True) for _ in r[:count]])
        x, valid = tasks.pad_rows(ids, pad)
        return x.to(device), valid.to(device), y.to(device)

    g = torch.Generator().manual_seed(args.seed + 2)
    return examples(train_plays, args.labelled, g), examples(eval_plays, None, g), sorted(eval_plays)


def finetune(args, config, pretrained, data, device, label: str) -> dict:
    """Train a genre classifier for ``--finetune-steps``; start from ``pretrained`` (a BertModel) or scratch."""
    (x, valid, y), (x_eval, valid_eval, y_eval), _ = data
    torch.manual_seed(args.seed + 3)  # the head (and, from scratch, the encoder) start the same way each run
    model = BertForSequenceClassification(config, num_labels=2).to(device)
    if pretrained is not None:
        model.bert.load_state_dict(pretrained.state_dict())
    draw = torch.Generator().manual_seed(args.seed + 4)
    accuracy = []

    def batch_loss(step):
        rows = torch.randint(0, len(y), (32,), generator=draw).to(device)
        return F.cross_entropy(model(x[rows], valid=valid[rows]), y[rows])

    def evaluate():
        hits = 0
        for s in range(0, len(y_eval), 256):
            logits = model(x_eval[s : s + 256], valid=valid_eval[s : s + 256])
            hits += (logits.argmax(-1) == y_eval[s : s + 256]).sum().item()
        accuracy.append(round(hits / len(y_eval), 4))
        return accuracy[-1]

    log = fit(
        model, batch_loss, args.finetune_steps, lr=args.finetune_lr, warmup_steps=max(1, args.finetune_steps // 10),
        evaluate=evaluate, eval_every=max(1, args.finetune_steps // 5), desc=f"fine-tune ({label})",
        progress=not args.quiet,
    )  # fmt: skip
    return {"log": log.as_dict(), "accuracy": [[s, a] for (s, _), a in zip(log.evals, accuracy, strict=True)]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    size = "large" if args.large else "tiny" if args.tiny else "default"
    config = BertConfig(vocab_size=subword.VOCAB_SIZE, max_len=args.length, **SIZES[size])
    tokenizer = subword.load_tokenizer("wordpiece")
    start = time.perf_counter()
    data = Pretraining(args, tokenizer, device)
    model = BertForPreTraining(config).to(device)
    log = fit(
        model, lambda step: data.step_loss(model), args.steps, lr=args.lr, warmup_steps=max(1, args.steps // 10),
        evaluate=lambda: data.evaluate(model, len(data.curves["train_mlm"])), eval_every=args.eval_every,
        desc="pre-train", progress=not args.quiet,
    )  # fmt: skip
    genre = genre_data(args, tokenizer, device)
    runs = {
        "pretrained": finetune(args, config, model.bert, genre, device, "pre-trained"),
        "scratch": finetune(args, config, None, genre, device, "from scratch"),
    }
    final = data.curves["eval"][-1]
    meta = {
        "script": "training/bert_pretrain.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": len(log.losses),
        "seconds": round(time.perf_counter() - start, 1),
        "pretrain_seconds": log.seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_pairs_per_epoch": sum(len(d) - 1 for d in data.train_docs),
        "tokens_seen": len(log.losses) * args.batch * args.length,
        "provenance": checkpoints.provenance(device),
        "corpus": corpus.provenance(),
        "pretrain": {"log": log.as_dict(), **data.curves},
        "finetune": {
            "task": "comedy (0) or tragedy (1): which genre is a speech from",
            "train_speeches_per_genre": args.labelled,
            "eval_plays": genre[2],
            "eval_speeches": len(genre[1][2]),
            "runs": runs,
        },
        "results": {
            "heldout_mlm_loss": final["mlm_loss"],
            "heldout_mlm_accuracy": final["mlm_accuracy"],
            "heldout_nsp_loss": final["nsp_loss"],
            "heldout_nsp_accuracy": final["nsp_accuracy"],
            "genre_accuracy_pretrained": runs["pretrained"]["accuracy"][-1][1],
            "genre_accuracy_scratch": runs["scratch"]["accuracy"][-1][1],
        },
    }
    name = f"{NAME}-large" if args.large else NAME
    path = checkpoints.save_checkpoint(name, model, meta, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {meta['seconds']} s")
    for key, value in meta["results"].items():
        print(f"  {key}: {value}")
    return meta


if __name__ == "__main__":
    main(sys.argv[1:])
