"""Key/value cache for incremental decoding with :class:`crystalforge.model.gpt.GPT`.

The cache is preallocated: keys and values of every layer live in two tensors of shape
``[n_layer, batch, n_head, max_len, head_size]``. Columns are filled left to right by
:meth:`GPT.forward_cached`. Rows may hold prompts of different lengths left-padded to a
common width: ``valid[b, t]`` is False for padding columns (never attended) and
``positions[b]`` counts the real tokens of row ``b`` (the next token's position id).

Search strategies copy a cache with :meth:`KVCache.clone` (MCTS branches) and reshape the
batch with :meth:`KVCache.select` (expand one prompt to ``n`` samples, drop finished rows).
"""

from __future__ import annotations

import torch

from ..errors import SequenceTooLongError


class KVCache:
    """Preallocated keys and values of every layer, plus per-row padding bookkeeping.

    Attributes:
        keys, values: ``[n_layer, batch, n_head, max_len, head_size]`` tensors.
        valid: ``[batch, max_len]`` bool, True where a column holds a real token.
        positions: ``[batch]`` long, number of real tokens per row.
        length: number of columns filled (the same for every row).
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_len: int,
        head_size: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"KV cache needs batch_size >= 1 and max_len >= 1, got {batch_size} and {max_len}")
        shape = (n_layer, batch_size, n_head, max_len, head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch_size, max_len, device=device, dtype=torch.bool)
        self.positions = torch.zeros(batch_size, device=device, dtype=torch.long)
        self.length = 0

    @property
    def batch_size(self) -> int:
        """Number of rows (sequences) held."""
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        """Number of columns the cache can hold."""
        return self.keys.shape[3]

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def __repr__(self) -> str:
        return f"KVCache(batch_size={self.batch_size}, length={self.length}, max_len={self.max_len})"

    def _empty_like(self, batch_size: int) -> "KVCache":
        n_layer, _, n_head, max_len, head_size = self.keys.shape
        new = KVCache.__new__(KVCache)
        new.keys = self.keys.new_empty((n_layer, batch_size, n_head, max_len, head_size))
        new.values = self.values.new_empty((n_layer, batch_size, n_head, max_len, head_size))
        new.valid = self.valid.new_empty((batch_size, max_len))
        new.positions = self.positions.new_empty((batch_size,))
        new.length = self.length
        return new

    def clone(self) -> "KVCache":
        """Return an independent deep copy (writing to one never changes the other)."""
        new = KVCache.__new__(KVCache)
        new.keys = self.keys.clone()
        new.values = self.values.clone()
        new.valid = self.valid.clone()
        new.positions = self.positions.clone()
        new.length = self.length
        return new

    def select(self, rows: torch.Tensor | list[int]) -> "KVCache":
        """Return a new cache holding the given batch rows, in that order (rows may repeat).

        Raises:
            IndexError: a row index is out of range.
        """
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.device).reshape(-1)
        if rows.numel() == 0:
            raise IndexError("KVCache.select needs at least one row")
        if int(rows.min()) < -self.batch_size or int(rows.max()) >= self.batch_size:
            raise IndexError(f"KVCache.select: row index out of range for batch size {self.batch_size}")
        new = self._empty_like(rows.numel())
        # only the filled columns carry information; copy just those
        end = self.length
        new.keys[:, :, :, :end] = self.keys[:, rows, :, :end]
        new.values[:, :, :, :end] = self.values[:, rows, :, :end]
        new.valid.zero_()
        new.valid[:, :end] = self.valid[rows, :end]
        new.positions.copy_(self.positions[rows])
        return new

    # -- used by GPT.forward_cached -------------------------------------------------------

    def check_room(self, n_columns: int) -> None:
        """Raise :class:`SequenceTooLongError` if ``n_columns`` more columns do not fit."""
        if self.length + n_columns > self.max_len:
            raise SequenceTooLongError(
                f"KV cache is full: {self.length} + {n_columns} columns exceed its max_len {self.max_len}; "
                "create the cache with a larger max_len"
            )

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``[B, H, T, D]`` keys/values of ``layer`` after the filled columns.

        Returns the keys and values of all columns so far, ``[B, H, length + T, D]``.
        The cache length is advanced separately by :meth:`advance` once every layer wrote.
        """
        end = self.length + keys.shape[2]
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, pad_mask: torch.Tensor) -> None:
        """Mark ``pad_mask.shape[1]`` new columns as filled (``pad_mask`` True = real token)."""
        n = pad_mask.shape[1]
        self.valid[:, self.length : self.length + n] = pad_mask
        self.positions += pad_mask.sum(dim=1)
        self.length += n
