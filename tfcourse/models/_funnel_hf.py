"""Loading Hugging Face ``transformers`` Funnel models into :mod:`tfcourse.models.funnel`.

``transformers`` is only needed by the caller who owns such a model; nothing here imports it.
"""

from __future__ import annotations

import torch
from torch import nn

from tfcourse.models._funnel_attention import FunnelLayer

# Hugging Face activation names -> tfcourse.blocks.FeedForward's.
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def config_from_hf(hf_config):
    """The :class:`~tfcourse.models.funnel.FunnelConfig` of a Hugging Face ``FunnelConfig``.

    Raises:
        ValueError: naming each option tfcourse does not implement.
    """
    from tfcourse.models.funnel import FunnelConfig

    unsupported = []
    if hf_config.attention_type != "relative_shift":
        unsupported.append(
            f"attention_type={hf_config.attention_type!r} (only 'relative_shift'; the 'factorized' form uses "
            "absolute-position factors and gives different numbers)"
        )
    if any(repeat != 1 for repeat in hf_config.block_repeats):
        unsupported.append(f"block_repeats={list(hf_config.block_repeats)} (layers shared within a block)")
    if hf_config.hidden_act not in _ACTIVATIONS:
        unsupported.append(f"hidden_act={hf_config.hidden_act!r} (supported: {sorted(_ACTIVATIONS)})")
    if unsupported:
        raise ValueError("this Funnel configuration is not supported by tfcourse: " + "; ".join(unsupported))
    return FunnelConfig(
        vocab_size=hf_config.vocab_size,
        block_sizes=tuple(hf_config.block_sizes),
        num_decoder_layers=hf_config.num_decoder_layers,
        d_model=hf_config.d_model,
        num_heads=hf_config.n_head,
        head_dim=hf_config.d_head,
        d_ff=hf_config.d_inner,
        activation=_ACTIVATIONS[hf_config.hidden_act],
        dropout=hf_config.hidden_dropout,
        attention_dropout=hf_config.attention_dropout,
        activation_dropout=hf_config.activation_dropout,
        layer_norm_eps=hf_config.layer_norm_eps,
        pooling=hf_config.pooling_type,
        separate_cls=hf_config.separate_cls,
        truncate_seq=hf_config.truncate_seq,
        pool_q_only=hf_config.pool_q_only,
    )


def _copy_layer(ours: FunnelLayer, theirs: nn.Module) -> None:
    """Copy one Hugging Face ``FunnelLayer`` (attention + FFN) into ours."""
    attn, hf_attn, ffn = ours.attn, theirs.attention, theirs.ffn
    for mine, other in (
        (attn.q_proj, hf_attn.q_head),
        (attn.k_proj, hf_attn.k_head),
        (attn.v_proj, hf_attn.v_head),
        (attn.out_proj, hf_attn.post_proj),
        (ours.attn_norm, hf_attn.layer_norm),
        (ours.ff.up, ffn.linear_1),
        (ours.ff.down, ffn.linear_2),
        (ours.ff_norm, ffn.layer_norm),
    ):
        mine.load_state_dict(other.state_dict())
    d_model = hf_attn.r_kernel.shape[0]
    # r_kernel is (D, H, Dh); a Linear weight maps D to H·Dh, so it is the transposed flat view.
    attn.position_proj.weight.copy_(hf_attn.r_kernel.reshape(d_model, -1).T)  # (H·Dh, D)
    attn.content_bias.copy_(hf_attn.r_w_bias)  # u
    attn.position_bias.copy_(hf_attn.r_r_bias)  # v
    attn.segment_bias.copy_(hf_attn.r_s_bias)  # w
    attn.segment_embed.copy_(hf_attn.seg_embed)  # (2, H, Dh): [different segment, same segment]


def load_from_hf(cls, hf_model: nn.Module):
    """Build ``cls`` (``FunnelBaseModel`` or ``FunnelModel``) from a Hugging Face Funnel model.

    Accepts ``FunnelModel``, ``FunnelBaseModel``, or a task model whose ``.funnel`` is one of them.
    """
    from tfcourse.models.funnel import FunnelModel

    hf = getattr(hf_model, "funnel", hf_model)
    if not all(hasattr(hf, name) for name in ("config", "embeddings", "encoder")):
        raise TypeError(f"hf_model must be a transformers Funnel model, got {type(hf_model).__name__}")
    wants_decoder = issubclass(cls, FunnelModel)
    if wants_decoder and not hasattr(hf, "decoder"):
        raise ValueError(
            f"{cls.__name__}.from_hf needs a model with a decoder (Hugging Face FunnelModel), got "
            f"{type(hf).__name__}; load it with FunnelBaseModel.from_hf instead"
        )
    weight = hf.embeddings.word_embeddings.weight
    ours = cls(config_from_hf(hf.config)).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        ours.embed.weight.copy_(weight)
        ours.embed_norm.load_state_dict(hf.embeddings.layer_norm.state_dict())
        for block, hf_block in zip(ours.blocks, hf.encoder.blocks, strict=True):
            for layer, hf_layer in zip(block.layers, hf_block, strict=True):
                _copy_layer(layer, hf_layer)
        if wants_decoder:
            for layer, hf_layer in zip(ours.decoder, hf.decoder.layers, strict=True):
                _copy_layer(layer, hf_layer)
    return ours.train(hf_model.training)
