"""Reference models built from :mod:`tfcourse.blocks`: one file per model, each with a frozen config.

Every model with a Hugging Face counterpart loads its weights with ``from_hf`` and is tested for parity
with it on randomly initialised models.
"""

from tfcourse.models.bert import BertConfig, BertForPreTraining, BertModel
from tfcourse.models.bert_finetuning import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from tfcourse.models.funnel import FunnelBaseModel, FunnelConfig, FunnelModel
from tfcourse.models.gau import FLASH, GAU, FLASHConfig
from tfcourse.models.gpt import GPT, GPTConfig
from tfcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig, shift_targets
from tfcourse.models.t5 import T5Config, T5ForConditionalGeneration, T5Model
from tfcourse.models.transformer_xl import TransformerXL, TransformerXLConfig

__all__ = [
    "FLASH",
    "GAU",
    "GPT",
    "BertConfig",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "FLASHConfig",
    "FunnelBaseModel",
    "FunnelConfig",
    "FunnelModel",
    "GPTConfig",
    "Seq2Seq",
    "Seq2SeqConfig",
    "T5Config",
    "T5ForConditionalGeneration",
    "T5Model",
    "TransformerXL",
    "TransformerXLConfig",
    "shift_targets",
]
