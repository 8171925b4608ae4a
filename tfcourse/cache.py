"""An explicit key/value cache for incremental (token-by-token) decoding.

During generation each new token's query attends to the keys and values of every earlier token. Those
never change, so recomputing them at every step wastes work that grows with the sequence. A
:class:`KVCache` keeps them in buffers allocated once at full length and written in place, so a step costs
one slice assignment instead of a ``torch.cat`` that copies the whole history (and the buffers keep a fixed
shape, which ``torch.compile`` likes). The cache is an ordinary object passed into attention and returned
from it: nothing is hidden inside a module.
"""

from __future__ import annotations

import torch

from tfcourse._checks import check_floating, check_positive_int, check_rank

__all__ = ["KVCache"]


class KVCache:
    """Preallocated key/value buffers for one attention layer.

    Args:
        batch_size: B.
        num_heads: H.
        max_len: the most positions the cache can hold (prompt + generated tokens).
        head_dim: Dh of the keys (and of the values unless ``value_dim`` is given).
        value_dim: Dh of the values, if different.
        dtype: dtype of the buffers (match the attention's projections).
        device: device of the buffers.

    Attributes:
        keys: ``(B, H, max_len, Dh)`` buffer; only the first :attr:`length` positions are meaningful.
        values: ``(B, H, max_len, Dv)`` buffer.
        length: number of positions written so far.
    """

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        *,
        value_dim: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        for name, value in [
            ("batch_size", batch_size),
            ("num_heads", num_heads),
            ("max_len", max_len),
            ("head_dim", head_dim),
        ]:
            check_positive_int(name, value)
        value_dim = head_dim if value_dim is None else check_positive_int("value_dim", value_dim)
        self.keys = torch.zeros(batch_size, num_heads, max_len, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros(batch_size, num_heads, max_len, value_dim, dtype=dtype, device=device)
        self.length = 0
        self._spare: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def max_len(self) -> int:
        """Capacity in positions."""
        return self.keys.shape[2]

    def update(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys and values in place and return everything cached so far.

        Args:
            keys: ``(B, H, t, Dh)`` keys of the ``t`` new positions.
            values: ``(B, H, t, Dv)`` values of the new positions.

        Returns:
            ``(keys, values)`` views of shape ``(B, H, length, Dh)`` and ``(B, H, length, Dv)``.
        """
        for name, new, buffer in [("keys", keys, self.keys), ("values", values, self.values)]:
            check_floating(name, new)
            check_rank(name, new, 4)
            b, h, _, d = buffer.shape
            if (new.shape[0], new.shape[1], new.shape[3]) != (b, h, d):
                raise ValueError(
                    f"{name} of shape {tuple(new.shape)} do not fit a cache of shape (B={b}, H={h}, "
                    f"max_len={self.max_len}, D={d})"
                )
            if new.dtype != buffer.dtype:
                raise TypeError(f"{name} have dtype {new.dtype} but the cache holds {buffer.dtype}")
            if new.device != buffer.device:
                raise ValueError(f"{name} are on {new.device} but the cache is on {buffer.device}")
        if keys.shape[2] != values.shape[2]:
            raise ValueError(f"keys and values disagree on length: {keys.shape[2]} vs {values.shape[2]}")
        start, stop = self.length, self.length + keys.shape[2]
        if stop > self.max_len:
            raise ValueError(
                f"cache overflow: {self.length} cached + {keys.shape[2]} new positions exceed max_len={self.max_len}"
            )
        self.keys[:, :, start:stop] = keys
        self.values[:, :, start:stop] = values
        self.length = stop
        return self.keys[:, :, :stop], self.values[:, :, :stop]

    def reorder(self, index: torch.Tensor) -> None:
        """Replace row ``i`` of the cache by row ``index[i]``, in place (beam search's hand-over).

        When beam search keeps the continuation of beam ``j`` in slot ``i``, slot ``i`` must attend to beam
        ``j``'s history from then on. The rows are gathered into a second pair of buffers, allocated on the
        first call and reused after it, which then become the cache: no allocation per step.

        Args:
            index: ``(B,)`` integer tensor of source rows, each in ``[0, B)``; rows may repeat.
        """
        b = self.keys.shape[0]
        if not isinstance(index, torch.Tensor) or index.dtype not in (torch.long, torch.int):
            raise TypeError(f"index must be an integer tensor, got {getattr(index, 'dtype', type(index))}")
        if tuple(index.shape) != (b,):
            raise ValueError(f"index must have shape (B,) = ({b},), got {tuple(index.shape)}")
        if self._spare is None:
            self._spare = (torch.empty_like(self.keys), torch.empty_like(self.values))
        spare_keys, spare_values = self._spare
        torch.index_select(self.keys, 0, index, out=spare_keys)  # (B, H, max_len, Dh)
        torch.index_select(self.values, 0, index, out=spare_values)
        self._spare = (self.keys, self.values)
        self.keys, self.values = spare_keys, spare_values

    def reset(self) -> None:
        """Forget everything cached (the buffers are kept for reuse)."""
        self.length = 0

    def __repr__(self) -> str:
        b, h, n, d = self.keys.shape
        return f"KVCache(B={b}, H={h}, length={self.length}/{n}, Dh={d}, dtype={self.keys.dtype})"
