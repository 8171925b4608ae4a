"""BERT's fine-tuning heads (Devlin et al. 2019, §4, Figure 4): one small layer on top of the pre-trained encoder.

Sentence (pair) classification reads the pooled ``[CLS]`` vector; token tagging and extractive question
answering read every token's sequence output. Each head loads from the ``transformers`` model of the same
name with ``from_hf``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from tfcourse._checks import check_bool, check_positive_int
from tfcourse.models._hf import check_hf_class, load_hf_weights
from tfcourse.models.bert import BertConfig, BertModel, _init_weights

__all__ = [
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "SpanLogits",
    "best_span",
]


class _BertWithHead(nn.Module):
    """BERT plus one linear layer on the pooled or the sequence output, after classifier dropout."""

    hf_class, hf_head, uses_pooler = "", "classifier", False

    def __init__(self, config: BertConfig, num_labels: int = 2) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, pooler=self.uses_pooler)
        drop = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(drop)
        self.head = nn.Linear(config.d_model, check_positive_int("num_labels", num_labels))
        _init_weights(self.head, config.init_std)

    def forward(self, input_ids: torch.Tensor, **inputs) -> torch.Tensor:
        """Logits ``(B, num_labels)`` or ``(B, T, num_labels)``.

        Keyword arguments as in :meth:`~tfcourse.models.bert.BertModel.forward`.
        """
        out = self.bert(input_ids, **inputs)
        return self.head(self.dropout(out.pooled_output if self.uses_pooler else out.sequence_output))

    @classmethod
    def from_hf(cls, hf_model):
        """Build from the ``transformers`` model of the same name, copying every weight."""
        check_hf_class(hf_model, cls.hf_class)
        ours = cls(BertConfig.from_hf(hf_model.config), hf_model.config.num_labels)
        return load_hf_weights(ours, hf_model, ours.bert.hf_modules("bert.", "bert.") | {"head": cls.hf_head})


class BertForSequenceClassification(_BertWithHead):
    """A classifier on the pooled ``[CLS]`` vector (§4.1): ``(B, T)`` ids → ``(B, num_labels)`` logits."""

    hf_class, uses_pooler = "BertForSequenceClassification", True


class BertForTokenClassification(_BertWithHead):
    """A classifier on every token's output (tagging, NER; Figure 4d): ``(B, T)`` ids → ``(B, T, num_labels)``."""

    hf_class = "BertForTokenClassification"


class SpanLogits(NamedTuple):
    """Start and end scores of :class:`BertForQuestionAnswering` for extractive question answering."""

    start: torch.Tensor
    """``(B, T)``: score of each token being the first of the answer span."""
    end: torch.Tensor
    """``(B, T)``: score of each token being the last."""


class BertForQuestionAnswering(_BertWithHead):
    """Extractive QA (SQuAD, §4.2): a start vector S and an end vector E dotted with every token's output.

    Question and padding positions are not masked here: :func:`best_span` restricts the search to the passage.
    """

    hf_class, hf_head = "BertForQuestionAnswering", "qa_outputs"

    def __init__(self, config: BertConfig, num_labels: int = 2) -> None:
        if num_labels != 2:
            raise ValueError(f"question answering needs num_labels=2 (start and end scores), got {num_labels}")
        super().__init__(config, num_labels)

    def forward(self, input_ids: torch.Tensor, **inputs) -> SpanLogits:
        """Start and end logits; keyword arguments as in :meth:`~tfcourse.models.bert.BertModel.forward`.

        No classifier dropout here, as in BERT.
        """
        logits = self.head(self.bert(input_ids, **inputs).sequence_output)  # (B, T, 2)
        return SpanLogits(logits[..., 0], logits[..., 1])


def best_span(
    start: torch.Tensor, end: torch.Tensor, allowed: torch.Tensor | None = None, max_length: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """The answer span ``(i, j)`` maximising ``start[i] + end[j]`` with ``i <= j < i + max_length`` (§4.2).

    Args:
        start, end: ``(B, T)`` logits from :class:`BertForQuestionAnswering`.
        allowed: ``(B, T)`` bool, True where the answer may lie (the passage's real tokens).
        max_length: longest answer in tokens.

    Returns:
        ``(first, last)``, two ``(B,)`` long tensors of token indices.
    """
    if start.shape != end.shape or start.dim() != 2:
        raise ValueError(f"start and end must both be (B, T), got {tuple(start.shape)} and {tuple(end.shape)}")
    check_positive_int("max_length", max_length)
    t = start.shape[1]
    scores = start.float()[:, :, None] + end.float()[:, None, :]  # (B, T, T): span from row i to column j
    idx = torch.arange(t, device=start.device)
    ok = (idx[None, :] >= idx[:, None]) & (idx[None, :] < idx[:, None] + max_length)  # (T, T)
    if allowed is not None:
        check_bool("allowed", allowed)
        ok = ok & allowed[:, :, None] & allowed[:, None, :]  # (B, T, T)
    flat = scores.masked_fill(~ok, torch.finfo(scores.dtype).min).flatten(1).argmax(-1)  # (B,) over T·T
    return flat // t, flat % t
