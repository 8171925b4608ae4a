"""What the sandbox sets up before any learner code runs, and what learner code cannot undo.

* ``tfcourse`` is replaced by a facade: every ``import tfcourse...`` succeeds (so a notebook's setup cell
  runs), but each name in it is :class:`Unavailable`. The real package is not even in the sandbox's file
  system, so no trick can load the references: they and the checks run in the grader.
* The torch functions an exercise forbids are replaced where they are defined; a pure-Python one also gets
  its code object swapped, so a copy kept in a default argument or a list runs the stub too; and the
  matching ATen operators (``torch.ops.aten.*``, ``torch._C._nn.*``) get a dispatcher kernel that raises.
* An audit hook, which Python offers no way to remove, then refuses ctypes, garbage-collector
  introspection (the way to reach hidden objects) and re-executing the code of a module already loaded
  (a fresh copy of a patched module).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

import torch

__all__ = ["CALLS", "Unavailable", "install_facade", "lock"]

CALLS: list[str] = []
"""Forbidden callables called so far (a learner can clear this; the call itself still fails)."""

_ATEN = {
    "torch.nn.functional.scaled_dot_product_attention": (
        ("scaled_dot_product_attention", "CompositeImplicitAutograd"),
        ("_scaled_dot_product_attention_math", "CompositeImplicitAutograd"),
        ("_scaled_dot_product_flash_attention_for_cpu", "CPU"),
        ("_scaled_dot_product_flash_attention", "CUDA"),
        ("_scaled_dot_product_efficient_attention", "CUDA"),
        ("_scaled_dot_product_cudnn_attention", "CUDA"),
    ),
    "torch.nn.functional.multi_head_attention_forward": (("_native_multi_head_attention", "CPU"),),
    "torch.nn.functional.layer_norm": (
        ("layer_norm", "CompositeImplicitAutograd"),
        ("native_layer_norm", "CPU"),
        ("native_layer_norm", "CUDA"),
    ),
}
_ATEN["torch._C._nn.scaled_dot_product_attention"] = _ATEN["torch.nn.functional.scaled_dot_product_attention"]
_ATEN["torch.nn.MultiheadAttention.forward"] = _ATEN["torch.nn.functional.multi_head_attention_forward"]
_ATEN["torch.nn.LayerNorm.forward"] = _ATEN["torch.nn.functional.layer_norm"]


class ReferenceUsed(RuntimeError):
    """A forbidden callable was called."""


def message(path: str) -> str:
    """What a learner reads when their code calls the forbidden callable at ``path``."""
    public = path.replace("torch._C._nn.", "torch.nn.functional.")
    return (
        f"This exercise asks for your own implementation, so {public} is not available while your code is "
        "checked (it is what your answer is compared with). Write the computation with basic tensor "
        "operations instead."
    )


class Unavailable:
    """Any name from the ``tfcourse`` facade: using it raises, saying why."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _fail(self, *args: object, **kwargs: object):
        raise ReferenceUsed(
            f"{self._name} is not available while your code is graded: the tfcourse library and its checks "
            "run in the grader, outside your notebook; use torch and the standard library in your answers"
        )

    __call__ = _fail
    __iter__ = _fail
    __bool__ = _fail

    def __getattr__(self, attr: str) -> Unavailable:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Unavailable(f"{self._name}.{attr}")

    def __repr__(self) -> str:
        return f"<{self._name}: not available while grading>"


class _FacadeModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Unavailable:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Unavailable(f"{self.__name__}.{attr}")


class _Facade(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "tfcourse" or fullname.startswith("tfcourse."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _FacadeModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def install_facade() -> None:
    """Make every ``tfcourse`` import resolve to the facade (first on ``sys.meta_path``)."""
    for name in [n for n in sys.modules if n == "tfcourse" or n.startswith("tfcourse.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _Facade())


def _resolve(path: str) -> tuple[object, str] | None:
    # The same walk as tfcourse.grading.guard.resolve, repeated on purpose: this package runs where tfcourse
    # is absent, so it cannot import it.
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:-1]:
                owner = getattr(owner, part)
        except AttributeError:
            return None
        return (owner, parts[-1]) if parts[-1] in vars(owner) else None
    return None


def _stub(path: str):
    text = message(path)

    def forbidden(*args, **kwargs):
        CALLS.append(path)
        raise ReferenceUsed(text)

    forbidden.__qualname__ = forbidden.__name__ = f"forbidden_{path.rsplit('.', 1)[-1]}"
    return forbidden


def _swap_code(function: types.FunctionType, path: str) -> None:
    # Code with no free variables that fails through a recorder kept in the function's own globals: any
    # reference to this function object, wherever it is kept, now fails.
    if function.__code__.co_freevars:
        return
    recorder = "__tfcourse_forbidden__"
    function.__globals__.setdefault(recorder, lambda p: CALLS.append(p))
    source = f"def _(*args, **kwargs):\n    {recorder}({path!r})\n    raise RuntimeError({message(path)!r})\n"
    scope: dict = {}
    exec(compile(source, "<forbidden>", "exec"), {}, scope)
    function.__code__ = scope["_"].__code__


def lock(forbidden: list[str]) -> None:
    """Forbid ``forbidden`` (dotted paths of torch callables) and install the audit hook; one way."""
    libraries = []
    for path in forbidden:
        if path.startswith("tfcourse"):
            continue  # the facade has no code at all
        found = _resolve(path)
        if found is not None:
            owner, attr = found
            original = vars(owner)[attr]
            if isinstance(original, types.FunctionType):
                _swap_code(original, path)
            setattr(owner, attr, _stub(path))
        for op, key in _ATEN.get(path, ()):
            if key == "CUDA" and not torch.cuda.is_available():
                continue
            library = torch.library.Library("aten", "IMPL")
            try:
                library.impl(op, _stub(path), key)
            except RuntimeError:
                continue  # an operator this torch does not have
            libraries.append(library)
    loaded = frozenset(getattr(m, "__file__", None) for m in list(sys.modules.values()) if getattr(m, "__file__", None))
    cached = frozenset(importlib.util.cache_from_source(f) for f in loaded if f.endswith(".py"))
    _install_hook(loaded | cached, tuple(libraries))


def _install_hook(loaded: frozenset, keep_alive: tuple) -> None:
    refused = {
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys._current_frames",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.addressof",
        "ctypes.cdata",
        "ctypes.cdata/buffer",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.call_function",
        "ctypes.create_string_buffer",
    }

    def hook(event: str, args: tuple) -> None:
        if keep_alive is None:  # never true: the hook's closure keeps the dispatcher overrides alive
            return
        if event in refused:
            raise PermissionError(f"{event} is not allowed while grading")
        if event in ("exec", "compile") and args:
            code = args[0]
            name = getattr(code, "co_filename", None) if event == "exec" else (args[1] if len(args) > 1 else None)
            if isinstance(name, str) and name in loaded:
                raise PermissionError(f"re-running the code of {name} is not allowed while grading")

    sys.addaudithook(hook)
