"""Loading weights from a Hugging Face ``transformers`` model object by an explicit table of module names.

``transformers`` is needed only by whoever builds the Hugging Face model: nothing here imports it. A model's
``from_hf`` builds the tfcourse model from a translated config, then calls :func:`load_hf_weights` with a
``{our submodule: their submodule}`` table, so the correspondence is written down once and readable.
"""

from __future__ import annotations

import torch
from torch import nn


def check_hf_class(hf_model: object, expected: str) -> None:
    """Raise ``TypeError`` unless ``hf_model`` is an instance of the ``transformers`` class named ``expected``."""
    if type(hf_model).__name__ != expected:
        raise TypeError(f"hf_model must be a transformers {expected}, got {type(hf_model).__name__}")


def load_hf_weights(ours: nn.Module, hf_model: nn.Module, modules: dict[str, str]) -> nn.Module:
    """Copy parameters submodule by submodule: ``ours.<mine>.weight`` ← ``hf_model.<theirs>.weight``, and so on.

    Each of our submodule's own parameters (``weight``, ``bias``) is copied from the Hugging Face
    parameter of the same name. Every problem is reported by parameter name: a missing module or parameter,
    a shape mismatch, or one of our parameters that the table leaves unloaded. ``ours`` is moved to the
    device and dtype of ``hf_model`` and put in the same train/eval mode.

    Args:
        ours: the freshly built tfcourse model.
        hf_model: the ``transformers`` model to copy from.
        modules: ``{our submodule name: Hugging Face submodule name}``.

    Returns:
        ``ours``, loaded.
    """
    reference = next(hf_model.parameters())
    ours = ours.to(device=reference.device, dtype=reference.dtype)
    loaded = set()
    with torch.no_grad():
        for mine, theirs in modules.items():
            try:
                source = dict(hf_model.get_submodule(theirs).named_parameters(recurse=False))
            except AttributeError:
                raise ValueError(f"the Hugging Face model has no module {theirs!r} (needed for {mine!r})") from None
            for name, target in ours.get_submodule(mine).named_parameters(recurse=False):
                their_name, my_name = f"{theirs}.{name}", f"{mine}.{name}"
                if name not in source:
                    raise ValueError(f"the Hugging Face model has no parameter {their_name!r} (needed for {my_name!r})")
                if source[name].shape != target.shape:
                    raise ValueError(
                        f"shape mismatch: Hugging Face {their_name!r} is {tuple(source[name].shape)}, "
                        f"tfcourse {my_name!r} is {tuple(target.shape)}"
                    )
                target.copy_(source[name])
                loaded.add(id(target))  # by identity, so a tied parameter counts under either name
    if missing := [name for name, p in ours.named_parameters() if id(p) not in loaded]:
        raise ValueError(f"no Hugging Face weight was mapped to {missing}")
    return ours.train(hf_model.training)
