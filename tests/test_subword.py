"""The book's tokenizers: parity with what Hugging Face's own classes do, determinism, and the shipped files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tfcourse import corpus, subword

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = corpus.corpus_text("train", max_chars=200_000)


def test_bpe_round_trips_any_text_and_keeps_frequent_words_whole():
    tok = subword.train_bpe([SAMPLE], 600)
    assert [tok.token_to_id(s) for s in subword.BPE_SPECIALS] == [0, 1, 2]
    text = "KING:\nWhat say'st thou, Ωmega? 😀 zzyzx\n"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text  # byte level: nothing is unknown
    assert subword.pieces(tok, " the lord") == [" the", " lord"]
    assert len(subword.pieces(tok, " zzyzx")) > 2  # a word never seen falls apart into pieces


def test_wordpiece_matches_bert_conventions():
    tok = subword.train_wordpiece([SAMPLE], 600)
    assert [tok.token_to_id(s) for s in subword.WORDPIECE_SPECIALS] == [0, 1, 2, 3, 4]
    enc = tok.encode("The KING", "speaks")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    assert enc.type_ids == [0] * (enc.tokens.index("[SEP]") + 1) + [1] * (
        len(enc.tokens) - enc.tokens.index("[SEP]") - 1
    )
    rare = subword.pieces(tok, "unsubstantial")
    assert len(rare) > 1 and all(p.startswith("##") for p in rare[1:])
    assert "".join(p.removeprefix("##") for p in rare) == "unsubstantial"


def test_wordpiece_splits_like_the_transformers_bert_tokenizer():
    """An independent implementation of WordPiece (transformers' pure-Python BertTokenizer) given our vocab."""
    transformers = pytest.importorskip("transformers")
    tok = subword.train_wordpiece([SAMPLE], 800)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "vocab.txt"
    path.write_text("\n".join(t for t, _ in vocab) + "\n", encoding="utf-8")
    reference = transformers.BertTokenizer(str(path), do_lower_case=True)
    text = corpus.play_text("the-tempest")[:3000]
    assert tok.encode(text, add_special_tokens=False).tokens == reference.tokenize(text)


def test_training_is_deterministic():
    a = subword.train_wordpiece([SAMPLE[:50_000]], 400).to_str()
    b = subword.train_wordpiece([SAMPLE[:50_000]], 400).to_str()
    assert a == b
    assert subword.train_bpe([SAMPLE[:50_000]], 400).to_str() == subword.train_bpe([SAMPLE[:50_000]], 400).to_str()


def test_shipped_tokenizers_load_and_encode_the_corpus():
    bpe, wp = subword.load_tokenizer("bpe"), subword.load_tokenizer("wordpiece")
    assert bpe.get_vocab_size() == wp.get_vocab_size() == subword.VOCAB_SIZE
    held = subword.corpus_ids("bpe", "heldout")
    assert held.dtype == torch.long and 50_000 < held.numel() < 200_000 and int(held.max()) < subword.VOCAB_SIZE
    assert bpe.decode(held[:20].tolist()).startswith("BERNARDO:\nWho's there?")
    with pytest.raises(ValueError, match="kind must be one of"):
        subword.load_tokenizer("sentencepiece")


def test_shipped_tokenizers_are_what_the_script_trains():
    done = subprocess.run(
        [sys.executable, "training/train_tokenizers.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_lm_windows_cut_consecutive_ids():
    ids = torch.arange(100)
    windows = subword.lm_windows(ids, 8, 10, torch.Generator().manual_seed(0))
    assert windows.shape == (8, 10)
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(8, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="length must be in"):
        subword.lm_windows(ids, 8, 101, torch.Generator())
    with pytest.raises(ValueError, match="1-D stream"):
        subword.lm_windows(ids.view(10, 10), 8, 5, torch.Generator())
