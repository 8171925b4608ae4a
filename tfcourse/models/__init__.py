"""Reference models built from :mod:`tfcourse.blocks`: one file per model, each with a frozen config."""

from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig, shift_targets

__all__ = ["GPT", "GPTConfig", "Seq2Seq", "Seq2SeqConfig", "shift_targets"]
