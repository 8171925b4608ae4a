"""tfcourse.tasks: speeches, the genre split, padding and NSP batches."""

from __future__ import annotations

import pytest
import torch

from tfcourse import corpus, tasks
from tfcourse.pretraining import IS_NEXT, NOT_NEXT, SentencePair, pack_pair


def test_speeches_rebuild_the_play_text():
    found = tasks.speeches("hamlet")
    assert found[0] == tasks.Speech("BERNARDO", "Who's there?", "hamlet")
    rebuilt = "\n\n".join(f"{s.speaker}:\n{s.text}" for s in found)
    assert " ".join(rebuilt.split()) == " ".join(corpus.play_text("hamlet").split())


def test_genre_split_keeps_evaluation_plays_apart():
    train, held = tasks.genre_split()
    assert held == {"hamlet": "tragedies", "twelfth-night": "comedies"}
    assert not set(train) & set(held) and set(train.values()) == {"comedies", "tragedies"}
    assert len(train) == 8 + 6 - 2
    with pytest.raises(ValueError, match="unknown genre"):
        tasks.genre_split(("comedy",))
    with pytest.raises(ValueError, match="is a romance"):
        tasks.genre_split(eval_plays=("the-tempest",))


def test_pad_rows_and_collate_pairs_match_pack_pair():
    ids, valid = tasks.pad_rows([[5, 6, 7], [8]], pad_value=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and valid.tolist() == [[True] * 3, [True, False, False]]
    with pytest.raises(ValueError, match="non-empty"):
        tasks.pad_rows([])
    pairs = [SentencePair([10, 11, 12], [13], IS_NEXT, (0, 0), (0, 1)),
             SentencePair(list(range(20, 40)), [41, 42], NOT_NEXT, (0, 1), (1, 0))]  # fmt: skip
    batch = tasks.collate_pairs(pairs, cls_token_id=2, sep_token_id=3, pad_token_id=0, max_length=12)
    assert batch.labels.tolist() == [IS_NEXT, NOT_NEXT]
    for row, pair in enumerate(pairs):
        packed = pack_pair(pair.a, pair.b, cls_token_id=2, sep_token_id=3, max_length=12)
        n = packed.input_ids.numel()
        assert torch.equal(batch.input_ids[row, :n], packed.input_ids)
        assert torch.equal(batch.token_type_ids[row, :n], packed.token_type_ids)
        assert batch.valid[row].sum() == n and (batch.input_ids[row, n:] == 0).all()
    assert batch.input_ids.shape == (2, 12)
