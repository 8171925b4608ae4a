"""Copying a Hugging Face T5 checkpoint into :mod:`tfcourse.models.t5`, parameter by parameter.

Hugging Face nests each layer's parts as ``block.{i}.layer.{j}`` (``j``: self-attention, then
cross-attention in the decoder, then the feed-forward network); tfcourse names them. :func:`our_name`
translates one name, and :func:`copy_hf_weights` insists that both sides hold exactly the same parameters
with the same shapes, so an unsupported variant fails loudly instead of loading half its weights.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["copy_hf_weights", "our_name"]

_SUBLAYERS = {  # the index of a sublayer inside a Hugging Face T5Block -> our attribute prefix
    "encoder": {"0": "self_attn", "1": "ff"},
    "decoder": {"0": "self_attn", "1": "cross_attn", "2": "ff"},
}
_LINEARS = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "out_proj",
    "wi": "up",
    "wi_0": "gate",
    "wi_1": "up",
    "wo": "down",
}


def our_name(hf_name: str) -> str:
    """Translate a Hugging Face T5 parameter name into ours, e.g.
    ``decoder.block.1.layer.1.EncDecAttention.o.weight`` → ``decoder.layers.1.cross_attn.out_proj.weight``."""
    if hf_name in ("shared.weight", "lm_head.weight"):
        return hf_name
    if (match := re.fullmatch(r"(encoder|decoder)\.final_layer_norm\.weight", hf_name)) is not None:
        return f"{match[1]}.final_norm.weight"
    match = re.fullmatch(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)\.weight", hf_name)
    if match is None or match[3] not in _SUBLAYERS[match[1]]:
        raise ValueError(f"unexpected parameter {hf_name!r} in the Hugging Face model")
    side, block, sublayer, rest = match[1], match[2], _SUBLAYERS[match[1]][match[3]], match[4]
    if rest == "layer_norm":
        leaf = f"{sublayer}_norm"
    elif rest == "SelfAttention.relative_attention_bias":
        leaf = "position_bias.embedding"
    elif (linear := rest.rsplit(".", 1)[-1]) in _LINEARS:  # SelfAttention.q, DenseReluDense.wi_0, ...
        leaf = f"{sublayer}.{_LINEARS[linear]}"
    else:
        raise ValueError(f"unexpected parameter {hf_name!r} in the Hugging Face model")
    return f"{side}.layers.{block}.{leaf}.weight"


@torch.no_grad()
def copy_hf_weights(ours: nn.Module, hf_model: nn.Module) -> None:
    """Copy every parameter of ``hf_model`` into ``ours``, checking that names and shapes correspond."""
    mine = dict(ours.named_parameters())  # tied weights appear once, under their first name
    theirs = {our_name(name): p for name, p in hf_model.named_parameters()}
    if not hasattr(ours, "lm_head"):
        theirs.pop("lm_head.weight", None)  # a T5Model built from a T5ForConditionalGeneration drops the head
    if mine.keys() != theirs.keys():
        raise ValueError(
            f"the Hugging Face model does not match: missing {sorted(mine.keys() - theirs.keys())}, "
            f"unexpected {sorted(theirs.keys() - mine.keys())}"
        )
    for name, param in mine.items():
        if param.shape != theirs[name].shape:
            raise ValueError(
                f"{name}: the Hugging Face weight has shape {tuple(theirs[name].shape)}, ours {tuple(param.shape)}"
            )
        param.copy_(theirs[name])
