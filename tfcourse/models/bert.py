"""BERT (Devlin et al. 2019): a bidirectional post-LN encoder, pre-trained with masked LM and next-sentence
prediction. The fine-tuning heads of §4 are in :mod:`tfcourse.models.bert_finetuning`.

Input is ``[CLS] A [SEP] B [SEP]`` (see :func:`tfcourse.pretraining.pack_pair`). Each position's input vector
is the sum of three learned embeddings (§3, Figure 2): its token, its segment (A = 0, B = 1) and its position
(0..511, which is where the 512-token limit comes from). The encoder's outputs are the *sequence output*, one
vector per token, and the *pooled output*, the ``[CLS]`` vector through a dense layer and ``tanh``.

**Padding.** ``forward`` takes Hugging Face's ``attention_mask`` (``1`` = real token, ``0`` = padding) or a
bool ``valid`` (True = real token), never both. As in BERT, only padded *keys* are masked: padded positions
still get (meaningless) outputs, which no real token attends to and every loss ignores with label ``-100``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse._checks import check_bool, check_positive_int
from tfcourse.blocks import Encoder
from tfcourse.models._embedding import check_token_ids
from tfcourse.models._hf import check_hf_class, load_hf_weights
from tfcourse.positions import LearnedPositions
from tfcourse.pretraining._common import IGNORE_INDEX

__all__ = [
    "BertConfig", "BertForPreTraining", "BertModel", "BertOutput", "PreTrainingLoss", "PreTrainingOutput",
    "padding_valid", "pretraining_loss",
]  # fmt: skip


# Our config field -> the attribute of Hugging Face's ``BertConfig``.
_HF_CONFIG = {
    "vocab_size": "vocab_size", "d_model": "hidden_size", "num_heads": "num_attention_heads",
    "num_layers": "num_hidden_layers", "d_ff": "intermediate_size", "max_len": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size", "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob", "classifier_dropout": "classifier_dropout",
    "layer_norm_eps": "layer_norm_eps", "init_std": "initializer_range",
}  # fmt: skip


@dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of BERT (defaults: BERT-base, §3); ``_HF_CONFIG`` lists Hugging Face's names.

    Attributes:
        vocab_size: V.
        d_model, num_heads, num_layers, d_ff: widths and depth of the encoder.
        max_len: rows of the learned position table, hence the longest input (512).
        type_vocab_size: number of segments (A and B).
        dropout: after the embedding LayerNorm and on every sublayer's output.
        attention_dropout: on the attention weights.
        classifier_dropout: before a fine-tuning classifier; None means ``dropout``.
        layer_norm_eps: LayerNorm epsilon, 1e-12 in BERT.
        init_std: standard deviation of the normal initialisation.
    """

    vocab_size: int = 30522
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    d_ff: int = 3072
    max_len: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_heads", "num_layers", "d_ff", "max_len", "type_vocab_size"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide d_model={self.d_model}")

    @classmethod
    def tiny(cls, **overrides) -> BertConfig:
        """A model small enough for tests and the book (about 25 k parameters)."""
        sizes = dict(vocab_size=99, d_model=32, num_heads=4, num_layers=2, d_ff=64, max_len=64, dropout=0.0)
        return cls(**{**sizes, "attention_dropout": 0.0, **overrides})

    @classmethod
    def from_hf(cls, hf_config) -> BertConfig:
        """Translate a ``transformers.BertConfig``; raise ``ValueError`` for a variant this BERT lacks."""
        unsupported = {
            "position_embedding_type": (getattr(hf_config, "position_embedding_type", "absolute"), "absolute"),
            "hidden_act": (hf_config.hidden_act, "gelu"),  # the exact (erf) GELU; "gelu_new" is the tanh one
            "is_decoder": (getattr(hf_config, "is_decoder", False), False),
            "add_cross_attention": (getattr(hf_config, "add_cross_attention", False), False),
        }
        for name, (seen, supported) in unsupported.items():
            if seen != supported:
                raise ValueError(
                    f"Hugging Face config has {name}={seen!r}; tfcourse's BERT supports only {supported!r}"
                )
        return cls(**{ours: getattr(hf_config, theirs) for ours, theirs in _HF_CONFIG.items()})


def _init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std²) weights, zero biases, LayerNorm at identity."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.normal_(sub.weight, std=std)
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)
        if isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def padding_valid(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, valid: torch.Tensor | None = None
) -> torch.Tensor | None:
    """``(B, T)`` bool, True at real tokens, from Hugging Face's 0/1 ``attention_mask`` or a bool ``valid``.

    Returns None when neither is given (no padding). Values other than 0 and 1 are refused: an *additive*
    mask (0 / -10000) passed by mistake would otherwise be read the wrong way round.
    """
    if attention_mask is not None and valid is not None:
        raise ValueError("pass attention_mask (1 = real token) or valid (True = real token), not both")
    if attention_mask is not None:
        if not ((attention_mask == 0) | (attention_mask == 1)).all():
            seen = attention_mask.unique()[:6].tolist()
            raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (real token), got values {seen}")
        valid, name = attention_mask != 0, "attention_mask"
    elif valid is not None:
        check_bool("valid", valid)
        name = "valid"
    if valid is not None and valid.shape != input_ids.shape:
        raise ValueError(f"{name} has shape {tuple(valid.shape)}, input_ids has {tuple(input_ids.shape)}")
    return valid


def _check_ids(config: BertConfig, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
    """Check token and segment ids against ``config``; return the segment ids (default: all 0, segment A)."""
    check_token_ids("input_ids", input_ids, config.vocab_size)
    if input_ids.shape[1] > config.max_len:
        raise ValueError(
            f"input_ids has length {input_ids.shape[1]}, but BERT's learned position table has "
            f"max_len={config.max_len} rows; truncate the text or split it into chunks"
        )
    if token_type_ids is None:
        return torch.zeros_like(input_ids)
    check_token_ids("token_type_ids", token_type_ids)
    if token_type_ids.shape != input_ids.shape:
        raise ValueError(f"token_type_ids {tuple(token_type_ids.shape)} != input_ids {tuple(input_ids.shape)}")
    low, high = (int(token_type_ids.min()), int(token_type_ids.max())) if token_type_ids.numel() else (0, 0)
    if low < 0 or high >= config.type_vocab_size:
        n = config.type_vocab_size
        raise ValueError(f"token_type_ids must be segment ids in [0, type_vocab_size={n}), got {low}..{high}")
    return token_type_ids


class BertEmbeddings(nn.Module):
    """``Dropout(LN(E_tok[t] + E_seg[s] + E_pos[p]))`` (§3, "Input/Output Representations", Figure 2).

    Summing is no loss of generality: it equals one linear layer applied to the concatenated one-hot codes
    of token, segment and position, with the three tables stacked as its weight.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        c = config
        self.tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.segments = nn.Embedding(c.type_vocab_size, c.d_model)
        self.positions = LearnedPositions(c.max_len, c.d_model)
        self.norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` token and segment ids → ``(B, T, D)``."""
        x = self.tokens(input_ids) + self.segments(token_type_ids)  # (B, T, D)
        return self.dropout(self.norm(self.positions(x)))  # positions 0..T-1 added inside


class BertOutput(NamedTuple):
    """What :class:`BertModel` returns."""

    sequence_output: torch.Tensor
    """``(B, T, D)``: the last layer's hidden state for every token."""
    pooled_output: torch.Tensor | None
    """``(B, D)``: ``tanh(W·h_[CLS] + b)``; None for a model built with ``pooler=False``."""


class BertModel(nn.Module):
    """Embeddings, a post-LN GELU encoder and the ``[CLS]`` pooler; see :class:`BertConfig`.

    Args:
        config: the sizes.
        pooler: build the pooler (token classification and QA do without, as in Hugging Face).
    """

    def __init__(self, config: BertConfig, *, pooler: bool = True) -> None:
        super().__init__()
        self.config = c = config
        self.embeddings = BertEmbeddings(c)
        self.encoder = Encoder(
            c.num_layers, c.d_model, c.num_heads, c.d_ff,
            norm="post", activation="gelu", layer_norm_eps=c.layer_norm_eps,
            dropout=c.dropout, attention_dropout=c.attention_dropout, ff_dropout=0.0,  # none inside BERT's FFN
        )  # fmt: skip
        self.pooler = nn.Linear(c.d_model, c.d_model) if pooler else None
        _init_weights(self, c.init_std)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> BertOutput:
        """Encode a padded batch.

        Args:
            input_ids: ``(B, T)`` token ids in ``[0, V)``, ``T <= max_len``.
            token_type_ids: ``(B, T)`` segment ids in ``[0, type_vocab_size)``; default all 0.
            attention_mask: ``(B, T)`` 0/1, Hugging Face's convention: 1 = real token, 0 = padding.
            valid: ``(B, T)`` bool, True = real token (tfcourse's convention). Give at most one of the two.

        Returns:
            :class:`BertOutput` with ``(B, T, D)`` sequence output and ``(B, D)`` pooled output.
        """
        token_type_ids = _check_ids(self.config, input_ids, token_type_ids)
        valid = padding_valid(input_ids, attention_mask, valid)
        mask = None if valid is None else valid[:, None, None, :]  # (B, 1, 1, Tk): hide padded keys only
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), mask=mask)  # (B, T, D)
        pooled = None if self.pooler is None else torch.tanh(self.pooler(hidden[:, 0]))  # (B, D) from [CLS]
        return BertOutput(hidden, pooled)

    def hf_modules(self, our_prefix: str = "", hf_prefix: str = "") -> dict[str, str]:
        """Our submodule names → Hugging Face's (``BertModel``), the map :meth:`from_hf` loads by."""
        names = {
            "embeddings.tokens": "embeddings.word_embeddings", "embeddings.norm": "embeddings.LayerNorm",
            "embeddings.segments": "embeddings.token_type_embeddings",
            "embeddings.positions.embedding": "embeddings.position_embeddings",
        }  # fmt: skip
        per_layer = {
            "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
            "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
            "self_attn_norm": "attention.output.LayerNorm", "ff.up": "intermediate.dense",
            "ff.down": "output.dense", "ff_norm": "output.LayerNorm",
        }  # fmt: skip
        for i in range(self.config.num_layers):
            names.update({f"encoder.layers.{i}.{o}": f"encoder.layer.{i}.{h}" for o, h in per_layer.items()})
        if self.pooler is not None:
            names["pooler"] = "pooler.dense"
        return {our_prefix + mine: hf_prefix + theirs for mine, theirs in names.items()}

    @classmethod
    def from_hf(cls, hf_model) -> BertModel:
        """Build a ``BertModel`` from a ``transformers.BertModel``, copying every weight."""
        check_hf_class(hf_model, "BertModel")
        ours = cls(BertConfig.from_hf(hf_model.config), pooler=hf_model.pooler is not None)
        return load_hf_weights(ours, hf_model, ours.hf_modules())


# ---------------------------------------------------------------------------------------------------------
# Pre-training: masked LM + next-sentence prediction (§3.1)


class BertMLMHead(nn.Module):
    """Masked-LM head: ``LN(GELU(W·h + b)) · E_tokᵀ + bias`` (the transform is from BERT's released code).

    The decoder shares the token embedding, so an output logit is a similarity with the token's input vector.
    """

    def __init__(self, config: BertConfig, token_embedding: nn.Embedding) -> None:
        super().__init__()
        self.transform = nn.Linear(config.d_model, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.d_model, config.vocab_size)  # (V, D) weight, own (V,) bias
        self.decoder.weight = token_embedding.weight  # tied: one tensor, updated by both uses

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, T, V)`` logits."""
        return self.decoder(self.norm(F.gelu(self.transform(hidden))))


class PreTrainingOutput(NamedTuple):
    """What :class:`BertForPreTraining` returns: the two pre-training heads' logits."""

    mlm_logits: torch.Tensor
    """``(B, T, V)``."""
    nsp_logits: torch.Tensor
    """``(B, 2)``: index 0 = IsNext, 1 = NotNext (:mod:`tfcourse.pretraining`)."""


class PreTrainingLoss(NamedTuple):
    """The pre-training loss and its two parts, from :func:`pretraining_loss`."""

    total: torch.Tensor
    """``mlm + nsp``, the quantity BERT minimises (§A.2)."""
    mlm: torch.Tensor
    nsp: torch.Tensor


def pretraining_loss(
    mlm_logits: torch.Tensor, nsp_logits: torch.Tensor, labels: torch.Tensor, next_sentence_label: torch.Tensor
) -> PreTrainingLoss:
    """Mean MLM cross-entropy over the selected tokens plus mean NSP cross-entropy, in float32.

    Args:
        mlm_logits: ``(B, T, V)``.
        nsp_logits: ``(B, 2)``.
        labels: ``(B, T)`` original ids at selected positions, ``-100`` elsewhere (from
            :func:`tfcourse.pretraining.mlm_mask`); with no selected position the MLM mean is NaN.
        next_sentence_label: ``(B,)`` 0 = IsNext, 1 = NotNext.
    """
    if labels.shape != mlm_logits.shape[:2]:
        raise ValueError(f"labels {tuple(labels.shape)} must match mlm_logits' (B, T) {tuple(mlm_logits.shape[:2])}")
    if next_sentence_label.shape != nsp_logits.shape[:1]:
        raise ValueError(
            f"next_sentence_label {tuple(next_sentence_label.shape)} must be (B,) = {tuple(nsp_logits.shape[:1])}"
        )
    mlm = F.cross_entropy(mlm_logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)  # (B·T, V)
    nsp = F.cross_entropy(nsp_logits.float(), next_sentence_label)
    return PreTrainingLoss(mlm + nsp, mlm, nsp)


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM and next-sentence heads, used only in pre-training (§3.1)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm_head = BertMLMHead(config, self.bert.embeddings.tokens)
        self.nsp_head = nn.Linear(config.d_model, 2)
        _init_weights(self.mlm_head.transform, config.init_std)
        _init_weights(self.nsp_head, config.init_std)
        nn.init.zeros_(self.mlm_head.decoder.bias)

    def forward(self, input_ids: torch.Tensor, **inputs) -> PreTrainingOutput:
        """MLM and NSP logits; keyword arguments as in :meth:`BertModel.forward`."""
        out = self.bert(input_ids, **inputs)
        return PreTrainingOutput(self.mlm_head(out.sequence_output), self.nsp_head(out.pooled_output))

    def loss(
        self, input_ids: torch.Tensor, labels: torch.Tensor, next_sentence_label: torch.Tensor, **inputs
    ) -> torch.Tensor:
        """Total pre-training loss MLM + NSP (see :func:`pretraining_loss` for the two parts)."""
        return pretraining_loss(*self(input_ids, **inputs), labels, next_sentence_label).total

    @classmethod
    def from_hf(cls, hf_model) -> BertForPreTraining:
        """Build from a ``transformers.BertForPreTraining``; its MLM decoder must be tied to the embedding."""
        check_hf_class(hf_model, "BertForPreTraining")
        ours = cls(BertConfig.from_hf(hf_model.config))
        decoder, embedding = hf_model.cls.predictions.decoder.weight, hf_model.bert.embeddings.word_embeddings.weight
        if decoder.shape != embedding.shape or not torch.equal(decoder, embedding):
            raise ValueError("the Hugging Face MLM decoder is not tied to the word embeddings; tfcourse ties them")
        heads = {
            "mlm_head.transform": "cls.predictions.transform.dense",
            "mlm_head.norm": "cls.predictions.transform.LayerNorm",
            "mlm_head.decoder": "cls.predictions.decoder",  # its weight is the (tied) token embedding again
            "nsp_head": "cls.seq_relationship",
        }
        return load_hf_weights(ours, hf_model, ours.bert.hf_modules("bert.", "bert.") | heads)
