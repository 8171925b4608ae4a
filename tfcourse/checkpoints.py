"""The book's trained checkpoints: small models trained on the course's corpus, shipped with the package.

A checkpoint ``NAME`` is two files in ``tfcourse/data/checkpoints/``: ``NAME.safetensors`` (the weights,
stored as float16 to keep the package small, loaded back as float32) and ``NAME.json`` (what made them: the
model's configuration, the script and its arguments, the training curves, the device, library versions and
wall time). The scripts that write them live in the repository's ``training/`` folder; each chapter that loads a
checkpoint says which script reproduces it.

Weights load with ``safetensors`` (no pickle), so opening a checkpoint never runs code.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from importlib import resources
from pathlib import Path

import torch

__all__ = [
    "CHECKPOINT_DIR",
    "checkpoint_names",
    "load_checkpoint",
    "load_curves",
    "load_state",
    "provenance",
    "save_checkpoint",
    "save_curves",
]

CHECKPOINT_DIR = Path(str(resources.files("tfcourse").joinpath("data", "checkpoints")))


def checkpoint_names(directory: Path | None = None) -> list[str]:
    """Names of the checkpoints in ``directory`` (default: the ones shipped with the package)."""
    folder = Path(directory or CHECKPOINT_DIR)
    return sorted(p.stem for p in folder.glob("*.safetensors") if p.with_suffix(".json").is_file())


def provenance(device: torch.device | str | None = None) -> dict[str, str]:
    """Where a run happens: device name, Python, torch and platform (stored in every checkpoint's JSON)."""
    device = torch.device(device or "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": f"{device.type}: {name}",
        "threads": str(torch.get_num_threads()),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
    }


def save_checkpoint(name: str, model: torch.nn.Module, meta: dict, directory: Path | None = None) -> Path:
    """Write ``model``'s weights (float16) and ``meta`` (its ``config`` dataclass added when it has one).

    Tied weights (one tensor under two names, such as GPT's token embedding and output layer) are stored
    once; ``meta["tied"]`` maps each alias to the name stored, and :func:`load_state` restores the alias.
    """
    from safetensors.torch import save_file

    folder = Path(directory or CHECKPOINT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, tied, seen = {}, {}, {}
    for key, value in model.state_dict().items():
        ident = (value.data_ptr(), tuple(value.shape), tuple(value.stride()), value.dtype)
        if value.numel() and ident in seen:
            tied[key] = seen[ident]
            continue
        seen[ident] = key
        if value.is_floating_point():
            value = value.to(torch.float16)
        # a copy of its own: safetensors refuses tensors that share storage
        tensors[key] = value.detach().cpu().contiguous().clone()
    config = getattr(model, "config", None)
    if config is not None and dataclasses.is_dataclass(config) and "config" not in meta:
        meta = {**meta, "config": dataclasses.asdict(config)}
    if tied:
        meta = {**meta, "tied": tied}
    save_file(tensors, folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return folder / f"{name}.safetensors"


def save_curves(name: str, meta: dict, directory: Path | None = None) -> Path:
    """Write a curves-only record ``NAME.json`` (no weights): for experiments whose point is how training went,
    such as comparing runs, where the chapter needs the curves but no model. ``meta`` holds what
    :func:`save_checkpoint`'s does (script, arguments, curves, provenance)."""
    folder = Path(directory or CHECKPOINT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / f"{name}.safetensors").exists():
        raise ValueError(
            f"{name!r} is a checkpoint with weights in {folder}; curves-only records need a name of their own"
        )
    path = folder / f"{name}.json"
    path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_curves(name: str, directory: Path | None = None) -> dict:
    """The record written by :func:`save_curves` (or the metadata of a checkpoint with weights)."""
    folder = Path(directory or CHECKPOINT_DIR)
    path = folder / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.json"))) or "none"
        raise ValueError(f"no curves record named {name!r} in {folder} (known: {known})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_state(name: str, directory: Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The float32 state dict and the metadata of checkpoint ``name``."""
    from safetensors.torch import load_file

    folder = Path(directory or CHECKPOINT_DIR)
    weights, meta_file = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not (weights.is_file() and meta_file.is_file()):
        known = ", ".join(checkpoint_names(folder)) or "none"
        raise ValueError(f"no checkpoint named {name!r} in {folder} (known: {known})")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(weights).items()}
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    for alias, stored in meta.get("tied", {}).items():
        state[alias] = state[stored]
    return state, meta


def load_checkpoint(name: str, model_class: type, config_class: type, directory: Path | None = None):
    """Build ``model_class(config_class(**meta["config"]))``, load checkpoint ``name`` into it (eval mode).

    Returns ``(model, meta)``.
    """
    state, meta = load_state(name, directory)
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items() if k in fields}
    config = config_class(**values)
    model = model_class(config)
    model.load_state_dict(state)
    return model.eval(), meta
