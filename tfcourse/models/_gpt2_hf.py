"""Loading a Hugging Face GPT-2 (``GPT2LMHeadModel`` or ``GPT2Model``) into :class:`~tfcourse.models.gpt.GPT`.

GPT-2 needs three translations beyond renaming modules:

* its linear layers are ``Conv1D`` modules computing ``x @ W + b`` with ``W`` of shape ``(in, out)``, the
  transpose of ``nn.Linear``'s ``(out, in)`` weight;
* one ``c_attn`` layer computes queries, keys and values together: its ``3D`` outputs are ``[q | k | v]``;
* its ``gelu_new`` is the tanh approximation of GELU (``activation="gelu_tanh"`` here), and its token
  embeddings are not scaled by √D (``scale_embeddings=False``).

``transformers`` is needed only to build the Hugging Face model; nothing here imports it.
"""

from __future__ import annotations

import torch
from torch import nn

from tfcourse.models._hf import check_hf_class

_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def gpt_config_from_hf(hf_config, config_class):
    """The :class:`~tfcourse.models.gpt.GPTConfig` of a Hugging Face ``GPT2Config``; unsupported options raise."""
    unsupported = {
        "scale_attn_weights": (hf_config.scale_attn_weights, True),
        "scale_attn_by_inverse_layer_idx": (hf_config.scale_attn_by_inverse_layer_idx, False),
        "reorder_and_upcast_attn": (hf_config.reorder_and_upcast_attn, False),
        "add_cross_attention": (getattr(hf_config, "add_cross_attention", False), False),
    }
    for name, (value, needed) in unsupported.items():
        if value != needed:
            raise ValueError(f"GPT.from_hf supports GPT2Config.{name}={needed} only, got {value!r}")
    if hf_config.activation_function not in _ACTIVATIONS:
        raise ValueError(
            f"GPT.from_hf supports activation_function in {sorted(_ACTIVATIONS)}, got {hf_config.activation_function!r}"
        )
    dropouts = {hf_config.resid_pdrop, hf_config.embd_pdrop, hf_config.attn_pdrop}
    return config_class(
        vocab_size=hf_config.vocab_size,
        max_len=hf_config.n_positions,
        d_model=hf_config.n_embd,
        num_heads=hf_config.n_head,
        num_layers=hf_config.n_layer,
        d_ff=hf_config.n_inner or 4 * hf_config.n_embd,
        dropout=max(dropouts),  # one rate for all three; identical in every released GPT-2
        norm="pre",
        positions="learned",
        tie_weights=hf_config.tie_word_embeddings,
        scale_embeddings=False,
        activation=_ACTIVATIONS[hf_config.activation_function],
        layer_norm_eps=hf_config.layer_norm_epsilon,
    )


def _copy_conv1d(linear: nn.Linear, conv: nn.Module) -> None:
    """``nn.Linear`` ← ``Conv1D``: the weight is stored transposed, ``(in, out)``."""
    linear.weight.copy_(conv.weight.t())
    linear.bias.copy_(conv.bias)


def load_gpt2(cls, hf_model: nn.Module):
    """Build ``cls`` (:class:`~tfcourse.models.gpt.GPT`) from a ``GPT2LMHeadModel`` or ``GPT2Model``, weights copied."""
    from tfcourse.models.gpt import GPTConfig

    name = type(hf_model).__name__
    if name == "GPT2LMHeadModel":
        body, head = hf_model.transformer, hf_model.lm_head
    else:
        check_hf_class(hf_model, "GPT2Model")
        body, head = hf_model, None
    config = gpt_config_from_hf(hf_model.config, GPTConfig)
    if head is not None and not config.tie_weights:
        raise ValueError("GPT.from_hf needs tied input and output embeddings (tie_word_embeddings=True)")
    reference = body.wte.weight
    ours = cls(config).to(device=reference.device, dtype=reference.dtype)
    d = config.d_model
    with torch.no_grad():
        ours.embed.tokens.weight.copy_(body.wte.weight)
        ours.embed.positions.embedding.weight.copy_(body.wpe.weight)
        for mine, theirs in zip(ours.decoder.layers, body.h, strict=True):
            attention = mine.self_attn
            fused_w, fused_b = theirs.attn.c_attn.weight, theirs.attn.c_attn.bias  # (D, 3D), (3D,)
            for i, proj in enumerate((attention.q_proj, attention.k_proj, attention.v_proj)):
                proj.weight.copy_(fused_w[:, i * d : (i + 1) * d].t())
                proj.bias.copy_(fused_b[i * d : (i + 1) * d])
            _copy_conv1d(attention.out_proj, theirs.attn.c_proj)
            _copy_conv1d(mine.ff.up, theirs.mlp.c_fc)
            _copy_conv1d(mine.ff.down, theirs.mlp.c_proj)
            for norm, hf_norm in ((mine.self_attn_norm, theirs.ln_1), (mine.ff_norm, theirs.ln_2)):
                norm.load_state_dict(hf_norm.state_dict())
        ours.decoder.final_norm.load_state_dict(body.ln_f.state_dict())
        if head is not None and head.weight.data_ptr() != body.wte.weight.data_ptr():
            raise ValueError("GPT.from_hf needs the model's lm_head tied to its token embedding")
    return ours.train(hf_model.training)
