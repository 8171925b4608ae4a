"""Subword tokenizers trained on the course's corpus with Hugging Face ``tokenizers``.

Two algorithms, as the models that made them famous use them:

- **Byte-level BPE** (GPT-2, and the course's GPT and T5 models): start from the 256 bytes and repeatedly merge
  the most frequent adjacent pair into a new symbol. Every string can be encoded (no unknown token), and a word
  that is frequent in the corpus ends up as one token while a rare one splits into pieces.
- **WordPiece** (BERT): split on whitespace and punctuation first, then cover each word greedily with the
  longest vocabulary entries; pieces after the first carry a ``##`` prefix. Merges are chosen by how much
  they raise the likelihood of the corpus (pair count over the product of the parts' counts), not by raw count.

Both are deterministic for a given text and vocabulary size, so the book's tokenizers can be rebuilt exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch

__all__ = [
    "BPE_SPECIALS",
    "TOKENIZER_KINDS",
    "VOCAB_SIZE",
    "WORDPIECE_SPECIALS",
    "corpus_ids",
    "encode_text",
    "lm_windows",
    "load_tokenizer",
    "pieces",
    "train_book_tokenizer",
    "train_bpe",
    "train_wordpiece",
]

BPE_SPECIALS = ("<pad>", "<bos>", "<eos>")
"""Ids 0, 1, 2 of every BPE tokenizer made here (padding first, so that ``pad_token_id=0`` everywhere)."""
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""Ids 0–4 of every WordPiece tokenizer made here, in BERT's order of roles."""


def _check_vocab_size(vocab_size: int, minimum: int) -> None:
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ValueError(f"vocab_size must be an integer of at least {minimum}, got {vocab_size!r}")


def train_bpe(texts: Iterable[str], vocab_size: int = 2048, *, min_frequency: int = 2):
    """A byte-level BPE tokenizer (GPT-2's pre-tokenizer and decoder) trained on ``texts``.

    Returns a ``tokenizers.Tokenizer`` whose first ids are :data:`BPE_SPECIALS`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    _check_vocab_size(vocab_size, 256 + len(BPE_SPECIALS))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BPE_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_wordpiece(texts: Iterable[str], vocab_size: int = 2048, *, min_frequency: int = 2):
    """A BERT-style WordPiece tokenizer (lower-cased, ``##`` continuation pieces) trained on ``texts``.

    Returns a ``tokenizers.Tokenizer`` whose first ids are :data:`WORDPIECE_SPECIALS`; encoding a pair adds
    ``[CLS] a [SEP] b [SEP]`` as BERT does.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    _check_vocab_size(vocab_size, len(WORDPIECE_SPECIALS) + 1)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(WORDPIECE_SPECIALS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # The trainer numbers pieces partly in hash order (the alphabet, ties in score), which changes from run to
    # run; WordPiece matches by string, so numbering the pieces in sorted order changes no split but makes the
    # tokenizer file the same on every run.
    pieces_ = sorted(t for t in tokenizer.get_vocab() if t not in WORDPIECE_SPECIALS)
    order = [*WORDPIECE_SPECIALS, *sorted(pieces_, key=lambda t: (t.startswith("##"), t))]
    tokenizer.model = models.WordPiece({t: i for i, t in enumerate(order)}, unk_token="[UNK]")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def pieces(tokenizer, text: str) -> list[str]:
    """How ``tokenizer`` splits ``text``, as readable strings (byte-level BPE's ``Ġ`` shown as a space)."""
    tokens = tokenizer.encode(text, add_special_tokens=False).tokens
    return [t.replace("Ġ", " ").replace("Ċ", "\\n") for t in tokens]


def encode_text(tokenizer, text: str) -> torch.Tensor:
    """The whole ``text`` as one ``(N,)`` int64 tensor of ids, without special tokens."""
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.long)


def lm_windows(ids: torch.Tensor, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``(batch_size, length)`` windows cut at random offsets from a ``(N,)`` stream of ids, for language
    modelling (position ``t`` predicts ``t + 1``)."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D stream of token ids, got shape {tuple(ids.shape)}")
    if not 1 < length <= ids.numel():
        raise ValueError(f"length must be in 2..{ids.numel()} for a stream of {ids.numel()} ids, got {length}")
    starts = torch.randint(0, ids.numel() - length + 1, (batch_size,), generator=generator)  # (B,)
    return ids[starts[:, None] + torch.arange(length)]  # (B, length)


TOKENIZER_KINDS = ("bpe", "wordpiece")
VOCAB_SIZE = 2048
"""Vocabulary size of the book's tokenizers, small enough for tiny models and large enough that common words
are single tokens."""


def _tokenizer_file(kind: str):
    from importlib import resources

    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"kind must be one of {TOKENIZER_KINDS}, got {kind!r}")
    return resources.files("tfcourse").joinpath("data", "tokenizers", f"{kind}-{VOCAB_SIZE}.json")


def train_book_tokenizer(kind: str):
    """Train the book's ``"bpe"`` or ``"wordpiece"`` tokenizer on the corpus's training split (a few seconds)."""
    from tfcourse.corpus import corpus_text

    train = train_bpe if kind == "bpe" else train_wordpiece
    _tokenizer_file(kind)  # checks kind
    return train([corpus_text("train")], VOCAB_SIZE)


def load_tokenizer(kind: str = "bpe"):
    """The book's tokenizer, as shipped (the one every checkpoint was trained with); ``training/train_tokenizers.py``
    rebuilds the files with :func:`train_book_tokenizer`."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_tokenizer_file(kind).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=4)
def corpus_ids(kind: str = "bpe", split: str = "train") -> torch.Tensor:
    """A corpus split (:func:`tfcourse.corpus.corpus_text`) encoded with the book's tokenizer as one ``(N,)``
    stream; plays are encoded in parallel and joined by a blank line (cached: a few seconds the first time)."""
    from tfcourse import corpus

    tokenizer = load_tokenizer(kind)
    names = [n for n in corpus.plays() if n not in corpus.HELD_OUT] if split == "train" else None
    if split == "heldout":
        names = list(corpus.HELD_OUT)
    elif split == "all":
        names = list(corpus.plays())
    elif names is None:
        raise ValueError(f"split must be one of {corpus.SPLITS}, got {split!r}")
    texts = [corpus.play_text(n) + "\n" for n in names]
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return torch.tensor([i for e in encodings for i in e.ids], dtype=torch.long)
