"""training/t5_text2text.py: a few steps of the three text-to-text tasks into a tmp dir."""

from __future__ import annotations

import torch

from tests.test_training_bert import load_script
from tfcourse import subword
from tfcourse.checkpoints import load_checkpoint
from tfcourse.models.t5 import T5Config, T5ForConditionalGeneration


def test_text_to_text_training_lowers_every_task_loss_and_the_checkpoint_loads(tmp_path):
    script = load_script("t5_text2text")
    argv = ["--tiny", "--steps", "30", "--pool", "300", "--eval-examples", "16", "--eval-every", "15",
            "--out", str(tmp_path), "--quiet"]  # fmt: skip
    meta = script.main(argv)
    first, last = meta["accuracy"][0], meta["accuracy"][-1]
    assert [a["step"] for a in meta["accuracy"]] == [0, 15, 30]
    for task in script.TASKS:
        assert last[f"{task} loss"] < first[f"{task} loss"] - 0.5, task
        assert len(meta["examples"][task]) == 6
    model, loaded = load_checkpoint("ch09-t5", T5ForConditionalGeneration, T5Config, directory=tmp_path)
    assert loaded["results"] == meta["results"]
    assert meta["sentinel_0"] == model.config.vocab_size - 1 == subword.VOCAB_SIZE + script.NUM_SENTINELS - 1
    x = torch.tensor([[100, 200, 300, 2]])
    out = model.generate(x, 4, stop_at_eos=False)
    assert out.tokens.shape == (1, 5) and int(out.tokens.max()) < model.config.vocab_size


def test_fill_examples_are_span_corruption_with_one_word_span():
    script = load_script("t5_text2text")
    tokenizer = subword.load_tokenizer("bpe")
    maker = script.Examples(tokenizer, 48)
    x, y = maker.fill("To be, or not to be, that is the question", torch.Generator().manual_seed(0))
    assert x.count(script.SENTINEL_0) == 1 and y[0] == script.SENTINEL_0 and y[-1] == script.EOS
    text = script.decode(tokenizer, x)
    word = script.decode(tokenizer, y).split()[1]
    assert text.replace("<extra_id_0>", word).split() == "fill: To be, or not to be, that is the question".split()
    x, y = maker.last_word("Now, fair Hippolyta, our nuptial hour")
    assert script.decode(tokenizer, y) == "hour" and x[-len(y) + 1 :] == y[:-1]  # the target copies the input's end
