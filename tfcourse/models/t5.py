"""T5, the Text-to-Text Transfer Transformer (Raffel et al. 2020).

T5 casts every task as text in, text out ("translate English to German: …", "summarize: …"), so one
encoder–decoder, one loss (cross-entropy on the output tokens) and one decoding procedure serve them all.
Architecturally it is the original encoder–decoder (§2.1) with Pre-LN RMS norms, no biases, no score
scaling, and a learned relative position bias shared by all layers of a stack (see
:mod:`tfcourse.models._t5_layers`). It is pre-trained with span corruption
(:func:`tfcourse.pretraining.span_corruption`, §3.1.4).

Two details matter for loading Hugging Face checkpoints: the decoder starts from the *pad* token (id 0),
and the original T5, which ties the output layer to the input embeddings, multiplies the decoder output
by ``D^-0.5`` before it (the v1.1 checkpoints do neither).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import generation  # a module import: generation imports the models package, which may import us
from tfcourse._checks import check_nonnegative_int, check_positive_int
from tfcourse.cache import KVCache
from tfcourse.masks import attention_mask
from tfcourse.models._embedding import check_token_ids
from tfcourse.models._t5_hf import copy_hf_weights
from tfcourse.models._t5_layers import FEED_FORWARDS, T5Stack, init_t5_weights_
from tfcourse.pretraining import IGNORE_INDEX

__all__ = ["T5Config", "T5ForConditionalGeneration", "T5Model", "T5Output", "shift_right"]


@dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of :class:`T5Model` (defaults: T5-Small, Raffel et al. 2020, §3.7).

    ``d_kv`` (the head width Dh) is set on its own, so ``num_heads · d_kv`` need not equal ``d_model``.
    ``feed_forward`` is ``"relu"`` (T5 v1.0) or ``"gated-gelu"`` (T5 v1.1). ``scale_decoder_output``
    (multiply the decoder output by ``d_model^-0.5`` before the LM head) defaults to
    ``tie_word_embeddings``, as in the original T5.
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    num_heads: int = 8
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    feed_forward: str = "relu"
    tie_word_embeddings: bool = True
    scale_decoder_output: bool | None = None
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_encoder_layers", "num_decoder_layers"):
            check_positive_int(name, getattr(self, name))
        if self.feed_forward not in FEED_FORWARDS:
            raise ValueError(f"feed_forward must be one of {FEED_FORWARDS}, got {self.feed_forward!r}")
        buckets, distance = self.relative_attention_num_buckets, self.relative_attention_max_distance
        # The decoder's one-directional buckets give exact distances up to buckets // 2; beyond that, log-spaced.
        if check_positive_int("relative_attention_num_buckets", buckets) < 4 or distance <= buckets // 2:
            raise ValueError(
                "need relative_attention_num_buckets >= 4 and relative_attention_max_distance > num_buckets // 2, "
                f"got num_buckets={buckets}, max_distance={distance}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("pad_id", "eos_id", "decoder_start_id"):
            if not 0 <= check_nonnegative_int(name, getattr(self, name)) < self.vocab_size:
                raise ValueError(f"{name}={getattr(self, name)} is outside the vocabulary [0, {self.vocab_size})")
        if self.scale_decoder_output is None:  # frozen dataclass: set the derived default once
            object.__setattr__(self, "scale_decoder_output", self.tie_word_embeddings)

    @classmethod
    def tiny(cls, **overrides) -> T5Config:
        """A model small enough for tests and the book."""
        sizes = dict(
            vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout=0.0,
        )  # fmt: skip
        return cls(**{**sizes, **overrides})

    @classmethod
    def from_hf(cls, hf_config) -> T5Config:
        """The configuration of a Hugging Face ``transformers.T5Config`` (T5 v1.0, v1.1 or mT5).

        Raises:
            ValueError: for a model type or ``feed_forward_proj`` this implementation does not cover.
        """
        model_type = getattr(hf_config, "model_type", None)
        if model_type not in ("t5", "mt5"):  # UMT5, LongT5 etc. differ in their attention
            raise ValueError(f"from_hf supports model_type 't5' and 'mt5', got {model_type!r}")
        if hf_config.feed_forward_proj not in FEED_FORWARDS:
            raise ValueError(
                f"feed_forward_proj={hf_config.feed_forward_proj!r} is not supported; tfcourse's T5 implements "
                f"{FEED_FORWARDS} (T5 v1.0 and v1.1)"
            )
        if not isinstance(hf_config.eos_token_id, int):
            raise ValueError(f"from_hf needs a single integer eos_token_id, got {hf_config.eos_token_id!r}")
        # transformers 5 names the output scaling on its own; in 4.x it followed tie_word_embeddings.
        scale = getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)
        start = getattr(hf_config, "decoder_start_token_id", None)
        return cls(
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.d_model,
            d_kv=hf_config.d_kv,
            num_heads=hf_config.num_heads,
            d_ff=hf_config.d_ff,
            num_encoder_layers=hf_config.num_layers,
            num_decoder_layers=hf_config.num_decoder_layers,
            relative_attention_num_buckets=hf_config.relative_attention_num_buckets,
            relative_attention_max_distance=hf_config.relative_attention_max_distance,
            dropout=float(hf_config.dropout_rate),
            layer_norm_eps=hf_config.layer_norm_epsilon,
            feed_forward=hf_config.feed_forward_proj,
            tie_word_embeddings=bool(hf_config.tie_word_embeddings),
            scale_decoder_output=bool(scale),
            pad_id=hf_config.pad_token_id,
            eos_id=hf_config.eos_token_id,
            decoder_start_id=hf_config.pad_token_id if start is None else start,
        )


class T5Output(NamedTuple):
    """What :meth:`T5Model.forward` returns."""

    decoder_hidden: torch.Tensor
    """``(B, T, D)`` the decoder's final hidden states."""
    encoder_hidden: torch.Tensor
    """``(B, S, D)`` the encoder output (the decoder's memory)."""


def _check_labels(labels: torch.Tensor, vocab_size: int) -> None:
    """Raise unless ``labels`` are ``(B, T)`` ids in ``[0, vocab_size)`` or ``IGNORE_INDEX`` (-100)."""
    check_token_ids("labels", labels.masked_fill(labels == IGNORE_INDEX, 0), vocab_size)


def shift_right(labels: torch.Tensor, decoder_start_id: int = 0, pad_id: int = 0) -> torch.Tensor:
    """Teacher forcing's decoder input: ``[start, y_1, …, y_{T-1}]``, as T5 builds it from the labels.

    Args:
        labels: ``(B, T)`` target ids; ``-100`` (ignored by the loss) is allowed.
        decoder_start_id: first decoder input; T5 uses the pad id, 0.
        pad_id: replaces ``-100`` labels that move into the input.

    Returns:
        ``(B, T)`` decoder input ids.
    """
    check_token_ids("labels", labels)
    start = torch.full_like(labels[:, :1], decoder_start_id)  # (B, 1)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)  # (B, T)
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)


class T5Model(nn.Module):
    """T5's encoder and decoder over one shared token embedding (Raffel et al. 2020, §2.1).

    Args:
        config: a :class:`T5Config`.
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = c = config
        self.shared = nn.Embedding(c.vocab_size, c.d_model)  # input embedding of both stacks, N(0, 1)
        self.encoder = T5Stack(c, is_decoder=False)
        self.decoder = T5Stack(c, is_decoder=True)
        init_t5_weights_(self, c.d_model)

    def source_valid(self, input_ids: torch.Tensor, input_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Check the encoder ids and return their ``(B, S)`` validity mask (default: ``input_ids != pad_id``)."""
        check_token_ids("input_ids", input_ids, self.config.vocab_size)
        if input_valid is None:
            return input_ids != self.config.pad_id
        if input_valid.shape != input_ids.shape or input_valid.dtype != torch.bool:
            raise ValueError(
                f"input_valid must be a bool tensor shaped like input_ids {tuple(input_ids.shape)}, "
                f"got {input_valid.dtype} {tuple(input_valid.shape)}"
            )
        return input_valid

    def encode(self, input_ids: torch.Tensor, input_valid: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, S)`` ids → ``(B, S, D)`` encoder output. Padded positions neither attend nor are attended to."""
        valid = self.source_valid(input_ids, input_valid)
        return self.encoder(self.shared(input_ids), mask=attention_mask(valid))  # mask (B, 1, S, S)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        input_valid: torch.Tensor,
        *,
        caches: list[KVCache] | None = None,
        cross_caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """Decoder hidden states ``(B, T, D)`` for ``(B, T)`` inputs (only the new ones when caches are given).

        Decoder inputs are padded only on the right, so the causal mask already hides every pad from every
        real position; the source side needs ``input_valid`` ``(B, S)``.
        """
        check_token_ids("decoder_input_ids", decoder_input_ids, self.config.vocab_size)
        memory_mask = input_valid[:, None, None, :]  # (B, 1, 1, S): every query sees the real source tokens
        x = self.shared(decoder_input_ids)  # (B, T, D)
        return self.decoder(x, memory=memory, memory_mask=memory_mask, caches=caches, cross_caches=cross_caches)

    def forward(
        self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor, input_valid: torch.Tensor | None = None
    ) -> T5Output:
        """Encode ``input_ids`` ``(B, S)`` and decode ``decoder_input_ids`` ``(B, T)`` against it."""
        valid = self.source_valid(input_ids, input_valid)
        memory = self.encode(input_ids, valid)
        return T5Output(self.decode(decoder_input_ids, memory, valid), memory)

    def new_caches(self, batch_size: int, source_len: int, max_len: int) -> tuple[list[KVCache], list[KVCache]]:
        """Empty self-attention caches (``max_len`` positions) and cross-attention caches (``source_len``),
        one of each per decoder layer."""
        c, weight = self.config, self.shared.weight

        def make(length: int) -> KVCache:
            return KVCache(batch_size, c.num_heads, length, c.d_kv, dtype=weight.dtype, device=weight.device)

        layers = range(c.num_decoder_layers)
        return [make(max_len) for _ in layers], [make(source_len) for _ in layers]

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> T5Model:
        """Build the model from a Hugging Face ``T5Model`` or ``T5ForConditionalGeneration``, copying weights.

        Every parameter is matched by name (see :func:`tfcourse.models._t5_hf.our_name`) and shape; anything
        missing, extra or of the wrong shape raises ``ValueError``.
        """
        for part in ("shared", "encoder", "decoder", "config"):
            if not hasattr(hf_model, part):
                raise TypeError(
                    f"hf_model must be a Hugging Face T5 encoder-decoder; {type(hf_model).__name__} has no {part}"
                )
        head = getattr(hf_model, "lm_head", None)
        config = T5Config.from_hf(hf_model.config)
        if head is not None:  # a separate head is the truth, whatever the config says
            config = replace(config, tie_word_embeddings=head.weight is hf_model.shared.weight)
        weight = hf_model.shared.weight
        ours = cls(config).to(device=weight.device, dtype=weight.dtype)
        copy_hf_weights(ours, hf_model)
        return ours.train(hf_model.training)


class T5ForConditionalGeneration(T5Model):
    """:class:`T5Model` with a language-modelling head: logits, the training loss, and generation.

    Unlike :meth:`T5Model.forward`, :meth:`forward` returns logits ``(B, T, V)``.
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight
        else:  # an untied head sees unscaled hidden states, so its initial weights carry the D^-0.5
            nn.init.normal_(self.lm_head.weight, std=config.d_model**-0.5)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` decoder hidden states → ``(..., V)`` logits."""
        if self.config.scale_decoder_output:
            # Tied embeddings are N(0, 1), far larger than an output layer needs; rescale the input instead.
            hidden = hidden * self.config.d_model**-0.5
        return self.lm_head(hidden)

    def forward(
        self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor, input_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V)``."""
        return self.logits(super().forward(input_ids, decoder_input_ids, input_valid).decoder_hidden)

    def loss(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        input_valid: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Cross-entropy of the teacher-forced predictions of ``labels`` ``(B, T)``; ``-100`` is ignored.

        The decoder input is ``shift_right(labels)``, starting from ``decoder_start_id``.
        """
        _check_labels(labels, self.config.vocab_size)
        c = self.config
        logits = self(input_ids, shift_right(labels, c.decoder_start_id, c.pad_id), input_valid)  # (B, T, V)
        # cross_entropy wants the classes on axis 1: (B, V, T); float32 for an accurate log-softmax.
        return F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=IGNORE_INDEX, reduction=reduction)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        input_valid: torch.Tensor | None = None,
        use_cache: bool = True,
        stop_at_eos: bool = True,
        return_logits: bool = False,
        **sampling,
    ) -> generation.GenerationOutput:
        """Produce output text for each input, starting the decoder from ``decoder_start_id``.

        The encoder runs once. With ``use_cache`` every decoder layer keeps a self-attention cache and a
        cross-attention cache of the projected encoder output, so a step costs one token's work; the
        position bias of the new query is then computed at its true offset.

        Args:
            input_ids: ``(B, S)`` encoder inputs, padded anywhere (T5 has no absolute positions).
            max_new_tokens: N, tokens to produce (fewer if every row reaches EOS).
            input_valid: ``(B, S)`` bool, True at real tokens; default ``input_ids != pad_id``.
            use_cache: decode with KV caches (same result, much faster).
            stop_at_eos: finish a row at ``eos_id`` and pad it afterwards.
            return_logits: also return each step's logits.
            **sampling: ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``generator`` for
                :func:`~tfcourse.generation.choose_next_token` (greedy by default).

        Returns:
            :class:`~tfcourse.generation.GenerationOutput`; ``tokens`` ``(B, 1 + N)`` start with the start id.
        """
        c = self.config
        check_nonnegative_int("max_new_tokens", max_new_tokens)
        valid = self.source_valid(input_ids, input_valid)
        memory = self.encode(input_ids, valid)
        batch = input_ids.shape[0]
        caches = self.new_caches(batch, input_ids.shape[1], max(max_new_tokens, 1)) if use_cache else None

        def next_logits(tokens: torch.Tensor, _valid: torch.Tensor) -> torch.Tensor:
            if caches is None:  # re-run the decoder over the whole prefix
                return self.logits(self.decode(tokens, memory, valid)[:, -1])
            hidden = self.decode(tokens[:, -1:], memory, valid, caches=caches[0], cross_caches=caches[1])
            return self.logits(hidden[:, -1])  # (B, V)

        start = torch.full((batch, 1), c.decoder_start_id, dtype=torch.long, device=input_ids.device)
        return generation._decode_loop(
            next_logits, start, torch.ones_like(start, dtype=torch.bool), max_new_tokens,
            c.eos_id if stop_at_eos else None, c.pad_id, return_logits,
            lambda logits: generation.choose_next_token(logits, **sampling),
        )  # fmt: skip
