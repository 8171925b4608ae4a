"""Make the reference unavailable while a learner's code runs under a check.

An exercise that asks for attention "from scratch" is not answered by calling
``torch.nn.functional.scaled_dot_product_attention`` or ``tfcourse.scaled_dot_product_attention``. Inside
:func:`forbid` those callables are temporarily replaced by stubs that raise :class:`ReferenceUsed` with a
message saying so, and every call is recorded (so a learner's ``try``/``except`` cannot hide it). On exit,
normal or by an exception, everything is put back exactly as it was.

A forbidden name is patched where it is defined, wherever :mod:`tfcourse` re-exports it (``tfcourse.<name>``
and any ``tfcourse.*`` module holding the same object), and in the namespaces passed in, usually the
learner's globals, which catches ``from torch.nn.functional import scaled_dot_product_attention``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, MutableMapping
from types import ModuleType, TracebackType

from tfcourse.grading.compare import CheckFailed

__all__ = [
    "ATTENTION",
    "BERT",
    "EFFICIENT",
    "FUNNEL",
    "GENERATION",
    "LAYER",
    "LAYER_NORM",
    "MASKS",
    "MULTI_HEAD",
    "POSITIONS",
    "SPARSE",
    "T5",
    "TRANSFORMER_XL",
    "Forbid",
    "ReferenceUsed",
    "forbid",
    "resolve",
]

# Presets for the exercises: what "write it yourself" rules out.
ATTENTION = (
    "tfcourse.attention.scaled_dot_product_attention",
    "tfcourse.attention.attention_reference",
    "tfcourse.attention.attention_scores",  # the scaled scores q·kᵀ/√d themselves
    "tfcourse.attention.attention_from_scores",
    "tfcourse.attention.MultiHeadAttention.forward",
    "tfcourse.grading.mistakes.attention",  # the named mistakes' attention: right with its defaults
    "torch.nn.functional.scaled_dot_product_attention",
    "torch._C._nn.scaled_dot_product_attention",
    "torch.nn.functional.multi_head_attention_forward",
    "torch.nn.MultiheadAttention.forward",
)
MULTI_HEAD = (*ATTENTION, "tfcourse.attention.split_heads", "tfcourse.attention.merge_heads")
MASKS = (
    "tfcourse.masks.lengths_to_mask",
    "tfcourse.masks.causal_mask",
    "tfcourse.masks.attention_mask",
    "tfcourse.grading.mistakes._causal",  # tril with any diagonal, for the causal mistakes
    # a strided or fixed pattern with stride (block) >= n is the causal mask
    "tfcourse.sparse.strided_pattern",
    "tfcourse.sparse.fixed_pattern",
    "tfcourse.sparse.SparsePattern.allows",
    "tfcourse.sparse.SparsePattern.mask",
    "torch.nn.Transformer.generate_square_subsequent_mask",  # 0 on and below the diagonal
    "torch.nn.modules.transformer._generate_square_subsequent_mask",
)
T5 = (
    "tfcourse.positions.t5_relative_position_bucket",
    "tfcourse.positions.T5RelativeBias.forward",
    "tfcourse.pretraining.span_corruption.span_corruption",
    "tfcourse.pretraining.span_corruption.merge_span_corruption",
)
TRANSFORMER_XL = (
    "tfcourse.positions.rel_shift",
    "tfcourse.models.transformer_xl.relative_attention_scores",
    "tfcourse.models.transformer_xl.update_memory",
)
FUNNEL = (
    "tfcourse.models._funnel_pooling.pool_sequence",
    "tfcourse.models._funnel_pooling.pooled_length",
    "tfcourse.models._funnel_pooling.upsample",
)
SPARSE = (
    "tfcourse.sparse.strided_pattern",
    "tfcourse.sparse.fixed_pattern",
    "tfcourse.sparse.pattern_density",
    "tfcourse.sparse.SparsePattern.allows",
    "tfcourse.sparse.SparsePattern.mask",
)
EFFICIENT = (
    *ATTENTION,
    "tfcourse.models.gau.squared_relu_attention",
    "tfcourse.models.gau._squared_relu_weights",
    "tfcourse.models.gau.mixed_chunk_attention",
    "tfcourse.models.gau.mixed_chunk_attention_matrix",
    "tfcourse.blocks.deepnorm_constants",
    "tfcourse.blocks.TransformerLayer.forward",
    "tfcourse.blocks.TransformerLayer._residual",
)
# Chapters 5-8: positions, the layer and its schedule, generation, BERT's inputs.
POSITIONS = (
    "tfcourse.positions.sinusoidal_positions",
    "tfcourse.positions.SinusoidalPositions.forward",
    "tfcourse.positions.rotary_angles",
    "tfcourse.positions.apply_rotary",
    "tfcourse.positions.RotaryEmbedding.forward",
    "tfcourse.positions.interleaved_to_half",
    "tfcourse.positions.half_to_interleaved",
    "tfcourse.positions.t5_relative_position_bucket",
    "tfcourse.positions.T5RelativeBias.forward",
    "tfcourse.models._funnel_attention.relative_sinusoids",  # the sinusoids, as all sines then all cosines
)
LAYER_NORM = (
    "torch.nn.functional.layer_norm",
    "torch.layer_norm",
    "torch.native_layer_norm",
    "torch.nn.LayerNorm.forward",
    # a group norm with one group, an instance norm of (N, 1, D) or a batch norm of the transpose is LayerNorm
    "torch.nn.functional.group_norm",
    "torch.group_norm",
    "torch.native_group_norm",
    "torch.nn.functional.instance_norm",
    "torch.instance_norm",
    "torch.nn.functional.batch_norm",
    "torch.batch_norm",
    "torch.native_batch_norm",
)
LAYER = (
    *LAYER_NORM,
    "tfcourse.blocks.TransformerLayer.forward",
    "tfcourse.blocks.TransformerLayer._sublayer_input",
    "tfcourse.blocks.TransformerLayer._residual",
    "tfcourse.blocks.deepnorm_constants",
    "tfcourse.schedules.transformer_lr",
    "tfcourse.schedules.warmup_inverse_sqrt",
)
GENERATION = (
    "tfcourse.models.seq2seq.shift_targets",
    "tfcourse.cache.KVCache.update",
    "tfcourse.generation.top_k_filter",
    "tfcourse.generation.top_p_filter",
    "tfcourse.generation.choose_next_token",
)
BERT = (
    "tfcourse.pretraining.bert.mlm_mask",
    "tfcourse.pretraining.bert.pack_pair",
    "tfcourse.models.bert.BertEmbeddings.forward",
    "tfcourse.models.bert.BertModel.forward",
    "tfcourse.positions.LearnedPositions.forward",
)


class ReferenceUsed(CheckFailed):
    """Raised when a learner's code calls a callable the exercise asks them to write themselves."""


def resolve(path: str) -> tuple[object, str, object]:
    """Split a dotted path into ``(owner, attribute, current value)``, importing the longest module prefix.

    Raises:
        ValueError: if no prefix of ``path`` is an importable module or an attribute is missing.
    """
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:-1]:
                owner = getattr(owner, part)
            return owner, parts[-1], getattr(owner, parts[-1])
        except AttributeError as error:
            raise ValueError(f"cannot forbid {path!r}: {error}") from None
    raise ValueError(f"cannot forbid {path!r}: no importable module in the path")


def _message(path: str) -> str:
    public = path.replace("torch._C._nn.", "torch.nn.functional.")
    return (
        f"This exercise asks for your own implementation, so {public} is not available while your code is "
        "checked (it is what your answer is compared with). Write the computation with basic tensor "
        "operations instead."
    )


class Forbid:
    """Context manager that forbids ``paths`` while active; see :func:`forbid`.

    Attributes:
        calls: dotted paths of the forbidden callables that were called, in order.
    """

    def __init__(self, paths: Iterable[str], namespaces: Iterable[MutableMapping[str, object]] = ()) -> None:
        self.paths = tuple(dict.fromkeys(paths))  # keep order, drop duplicates
        self.namespaces = list(namespaces)
        self.calls: list[str] = []
        self._undo: list[tuple[object, str, object]] = []

    def _stub(self, path: str, original: object) -> object:
        message = _message(path)

        def forbidden(*args, **kwargs):
            self.calls.append(path)
            raise ReferenceUsed(message)

        forbidden.__name__ = getattr(original, "__name__", path.rsplit(".", 1)[-1])
        forbidden.__qualname__ = f"forbidden {path}"
        forbidden.__doc__ = message
        return forbidden

    def _patch(self, container: object, key: str, stub: object) -> None:
        if isinstance(container, MutableMapping):
            self._undo.append((container, key, container[key]))
            container[key] = stub
        else:
            self._undo.append((container, key, container.__dict__[key]))
            setattr(container, key, stub)

    def __enter__(self) -> Forbid:
        try:
            for path in self.paths:
                owner, attr, original = resolve(path)
                stub = self._stub(path, original)
                if attr not in vars(owner):
                    raise ValueError(f"cannot forbid {path!r}: it is inherited, not defined on {owner!r}")
                self._patch(owner, attr, stub)
                # Re-exports (tfcourse.<name>) and the learner's own imports of the same object.
                modules = [m for n, m in list(sys.modules.items()) if n == "tfcourse" or n.startswith("tfcourse.")]
                places: list[object] = [m for m in modules if isinstance(m, ModuleType)] + self.namespaces
                for place in places:
                    items = place if isinstance(place, MutableMapping) else vars(place)
                    for key, value in list(items.items()):
                        if value is original and not (place is owner and key == attr):
                            self._patch(place, key, stub)
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        while self._undo:
            container, key, original = self._undo.pop()
            if isinstance(container, MutableMapping):
                container[key] = original
            else:
                setattr(container, key, original)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._restore()


def forbid(*paths: str, namespaces: Iterable[MutableMapping[str, object]] = ()) -> Forbid:
    """Forbid the callables at ``paths`` (dotted, e.g. ``"torch.nn.functional.scaled_dot_product_attention"``).

    Use as ``with forbid(*ATTENTION, namespaces=[fn.__globals__]) as guard: fn(...)``, then look at
    ``guard.calls``. The check's own reference computation must happen outside the ``with`` block.

    Args:
        paths: dotted paths of functions, or of methods as ``module.Class.method``.
        namespaces: extra dictionaries (a learner's globals) in which names bound to the same objects are
            replaced too.
    """
    return Forbid(paths, namespaces)
