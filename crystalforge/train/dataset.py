"""A tokenized dataset folder opened for training: memory-mapped ids and CIF start positions.

Training windows begin at CIF boundaries: a batch picks random entries of ``starts.pkl``
(``starts_val.pkl`` for validation) whose window of ``block_size + 1`` tokens fits in
the file. Without a starts file, windows start anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.tokenize import BIN_DTYPE, load_meta, load_starts
from ..errors import DataError

log = logging.getLogger(__name__)

#: ids are checked against the vocabulary in chunks of this many tokens
_CHECK_CHUNK = 1 << 24


@dataclass
class TokenSplit:
    """One split: its ids (memory-mapped) and the starts that leave room for a full window."""

    name: str
    ids: np.ndarray
    starts: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, batch_size: int, block_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)`` int64 tensors ``[batch_size, block_size]``; ``y`` is ``x`` shifted by one."""
        if self.starts is not None and len(self.starts):
            picks = torch.randint(len(self.starts), (batch_size,), generator=generator).numpy()
            offsets = self.starts[picks]
        else:
            offsets = torch.randint(len(self.ids) - block_size, (batch_size,), generator=generator).numpy()
        return self.windows(offsets, block_size)

    def windows(self, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)`` int64 tensors of the windows starting at ``offsets``."""
        x = np.stack([self.ids[o:o + block_size] for o in offsets]).astype(np.int64)
        y = np.stack([self.ids[o + 1:o + 1 + block_size] for o in offsets]).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class TokenDataset:
    """The opened dataset folder: ``train`` and optional ``val`` splits plus ``vocab_size``."""

    path: Path
    vocab_size: int
    train: TokenSplit
    val: TokenSplit | None


def open_dataset(path: str | Path, block_size: int, *, need_val: bool = False,
                 vocab_size: int | None = None) -> TokenDataset:
    """Open a dataset folder (``train.bin``, ``val.bin``, ``meta.pkl``, ``starts*.pkl``).

    Ids are checked against the vocabulary (``meta.pkl`` or ``vocab_size``) once.

    Raises:
        DataError: the folder or ``train.bin`` is missing, a file is too short for one
            window, a pickle is unsafe, or an id lies beyond the vocabulary.
    """
    folder = Path(path)
    if not str(path):
        raise DataError("no dataset given: set 'dataset' to a folder made by 'crystalforge data prepare'")
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder} (make one with 'crystalforge data prepare')")
    meta_path = folder / "meta.pkl"
    if meta_path.exists():
        meta_vocab = int(load_meta(meta_path)["vocab_size"])
        if vocab_size is not None and meta_vocab != vocab_size:
            raise DataError(f"{meta_path}: vocab_size {meta_vocab} differs from the model's {vocab_size}")
        vocab_size = meta_vocab
    if vocab_size is None:
        from ..cif.tokenizer import default_tokenizer

        vocab_size = default_tokenizer().vocab_size
    train = _open_split(folder, "train", "starts.pkl", block_size, vocab_size, required=True)
    val = _open_split(folder, "val", "starts_val.pkl", block_size, vocab_size, required=need_val)
    return TokenDataset(path=folder, vocab_size=vocab_size, train=train, val=val)


def _open_split(folder: Path, name: str, starts_name: str, block_size: int, vocab_size: int, *,
                required: bool) -> TokenSplit | None:
    bin_path = folder / f"{name}.bin"
    if not bin_path.exists():
        if required:
            hint = " (or set validate=false)" if name == "val" else ""
            raise DataError(f"{bin_path} not found: is {folder} a dataset made by 'crystalforge data prepare'?{hint}")
        return None
    size = bin_path.stat().st_size
    if size % np.dtype(BIN_DTYPE).itemsize:
        raise DataError(f"{bin_path}: size {size} is not a whole number of uint16 ids")
    ids = np.memmap(bin_path, dtype=BIN_DTYPE, mode="r") if size else np.zeros(0, dtype=BIN_DTYPE)
    if len(ids) <= block_size:
        if required:
            hint = " (or set validate=false)" if name == "val" else ""
            raise DataError(f"{bin_path} has {len(ids)} tokens, too few for one window of block_size {block_size}{hint}")
        log.warning("%s is too short for block_size %d; skipping it", bin_path, block_size)
        return None
    _check_ids(bin_path, ids, vocab_size)
    starts = None
    starts_path = folder / starts_name
    if starts_path.exists():
        starts = load_starts(starts_path)
        starts = starts[starts <= len(ids) - block_size - 1]  # the window and its shifted target must fit
        if not len(starts):
            log.warning("%s: no CIF start leaves room for a full window; sampling anywhere", starts_path)
            starts = None
    return TokenSplit(name=name, ids=ids, starts=starts)


def _check_ids(path: Path, ids: np.ndarray, vocab_size: int) -> None:
    for begin in range(0, len(ids), _CHECK_CHUNK):
        chunk = ids[begin:begin + _CHECK_CHUNK]
        top = int(chunk.max())
        if top >= vocab_size:
            where = begin + int(np.argmax(chunk >= vocab_size))
            raise DataError(f"{path}: token id {top} at position {where} is beyond the vocabulary "
                            f"(size {vocab_size}); the file was made with another tokenizer or is corrupt")
