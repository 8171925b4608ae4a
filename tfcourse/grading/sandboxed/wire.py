"""Plain values across the sandbox boundary: a JSON tree plus one safetensors blob, never pickle.

A frame is ``<header length><blob length>`` (two little-endian uint64) followed by a UTF-8 JSON header and
a safetensors blob holding every tensor in the message. Decoding builds only JSON scalars, lists, tuples,
dicts, tensors and :class:`Opaque` markers, so a hostile peer can send wrong values but never code.
"""

from __future__ import annotations

import json
import math
import struct
from typing import BinaryIO

import torch
from safetensors.torch import load as _load_tensors
from safetensors.torch import save as _save_tensors

__all__ = ["MAX_FRAME", "Opaque", "WireError", "decode", "encode", "read_frame", "write_frame"]

MAX_FRAME = 512 * 2**20
"""Largest frame a reader accepts (header and blob together), in bytes."""
_MAX_DEPTH = 32
_HEAD = struct.Struct("<QQ")


class WireError(ValueError):
    """A frame or value that cannot be decoded (truncated, oversized, malformed)."""


class Opaque:
    """Stands for a value the wire cannot carry (a module, a custom object): only its type name and repr."""

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name, self.text = str(type_name)[:100], str(text)[:200]

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and (self.type_name, self.text) == (other.type_name, other.text)

    __hash__ = None  # type: ignore[assignment]


def _float(x: float) -> object:
    return x if math.isfinite(x) else {"float": repr(x)}


def encode(tree: object) -> tuple[object, dict[str, torch.Tensor]]:
    """Split ``tree`` into a JSON-able structure and the tensors it references."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: object, depth: int) -> object:
        if depth > _MAX_DEPTH:
            return {"opaque": "deep", "repr": "nested too deeply"}
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return value if abs(value) < 2**63 else {"opaque": "int", "repr": "an integer too large to carry"}
        if isinstance(value, float):
            return _float(value)
        if isinstance(value, torch.Tensor):
            if value.is_complex() or value.layout != torch.strided:
                return {"opaque": f"tensor ({value.dtype}, {value.layout})", "repr": "a tensor the wire cannot carry"}
            key = f"t{len(tensors)}"
            tensors[key] = value.detach().to("cpu").contiguous().clone()
            return {"tensor": key, "device": str(value.device)}
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if isinstance(value, (list, tuple)):
            return {"list" if isinstance(value, list) else "tuple": [walk(v, depth + 1) for v in value]}
        if isinstance(value, dict):
            return {"dict": [[walk(k, depth + 1), walk(v, depth + 1)] for k, v in value.items()]}
        if hasattr(value, "__float__") and type(value).__module__ == "numpy":
            return _float(float(value)) if "float" in type(value).__name__ else int(value)
        try:
            text = repr(value)
        except Exception:  # a hostile __repr__
            text = "?"
        return {"opaque": type(value).__name__, "repr": text[:200]}

    return walk(tree, 0), tensors


def decode(tree: object, tensors: dict[str, torch.Tensor]) -> object:
    """Rebuild a value from :func:`encode`'s two parts (as received: any shape of JSON is handled)."""

    def walk(node: object, depth: int) -> object:
        if depth > _MAX_DEPTH + 2:
            raise WireError("value nested too deeply")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, dict) and len(node) <= 2:
            if "tensor" in node:
                if not isinstance(node["tensor"], str) or node["tensor"] not in tensors:
                    raise WireError(f"unknown tensor {str(node['tensor'])[:20]!r}")
                return tensors[node["tensor"]]
            if "float" in node:
                return float({"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(node["float"]), "nan"))
            if "dtype" in node:
                dtype = getattr(torch, str(node["dtype"]), None)
                if not isinstance(dtype, torch.dtype):
                    raise WireError(f"unknown dtype {str(node['dtype'])[:20]!r}")
                return dtype
            if isinstance(node.get("list"), list):
                return [walk(v, depth + 1) for v in node["list"]]
            if isinstance(node.get("tuple"), list):
                return tuple(walk(v, depth + 1) for v in node["tuple"])
            if isinstance(node.get("dict"), list):
                out = {}
                for pair in node["dict"]:
                    if not (isinstance(pair, list) and len(pair) == 2):
                        raise WireError("malformed dict entry")
                    key = walk(pair[0], depth + 1)
                    try:
                        hash(key)
                    except TypeError:
                        raise WireError("unhashable dict key") from None
                    out[key] = walk(pair[1], depth + 1)
                return out
            if "opaque" in node:
                return Opaque(node["opaque"], node.get("repr", ""))
        raise WireError(f"malformed value: {str(node)[:60]}")

    return walk(tree, 0)


def write_frame(stream: BinaryIO, header: dict, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write one frame (``header`` must be JSON-able; ``tensors`` go in the blob) and flush."""
    blob = _save_tensors(tensors) if tensors else b""
    text = json.dumps(header, allow_nan=False).encode()
    stream.write(_HEAD.pack(len(text), len(blob)) + text + blob)
    stream.flush()


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the peer closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO, limit: int = MAX_FRAME) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read one frame: ``(header, tensors)``.

    Raises:
        EOFError: the peer closed the pipe.
        WireError: the frame is larger than ``limit`` or malformed.
    """
    n_header, n_blob = _HEAD.unpack(_read_exactly(stream, _HEAD.size))
    if n_header + n_blob > limit:
        raise WireError(f"a message of {n_header + n_blob} bytes is over the limit of {limit}")
    try:
        header = json.loads(_read_exactly(stream, n_header))
        tensors = _load_tensors(_read_exactly(stream, n_blob)) if n_blob else {}
    except (ValueError, UnicodeDecodeError, RuntimeError) as error:
        raise WireError(f"malformed message: {str(error)[:100]}") from None
    if not isinstance(header, dict):
        raise WireError("malformed message: the header is not an object")
    return header, tensors
