"""Tokenized datasets in CrystaLLM's layout: ``train.bin``/``val.bin``, ``meta.pkl``, ``starts.pkl``.

Each CIF is brought to its training text (lines stripped; empty, comment and pymatgen
lines dropped; joined by newlines; ending with an empty line, so every CIF ends with two
newline tokens), encoded, and all CIFs are concatenated as ``uint16`` ids. ``starts.pkl``
(``starts_val.pkl`` for validation) is the sorted list of positions where a CIF begins
(its ``data_`` token). ``meta.pkl`` is ``{"vocab_size", "itos", "stoi"}``.

Pickles from elsewhere are read with a restricted unpickler that admits only plain data
(dicts, lists, numbers, strings, numpy arrays/scalars), so a crafted ``meta.pkl`` or
``starts.pkl`` cannot run code.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cif.io import atomic_write_bytes, dump_pickle
from ..cif.tokenizer import CIFTokenizer, default_tokenizer
from ..errors import DataError
from ..parallel import imap_progress
from .ingest import Failure, Item

log = logging.getLogger(__name__)

DATA_TOKEN = "data_"
BIN_DTYPE = np.uint16


def training_text(cif: str) -> str:
    """Return a CIF as it is tokenized for training (see the module docstring)."""
    lines = []
    for line in cif.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "pymatgen" in line:
            continue
        lines.append(line)
    return "\n".join(lines) + "\n\n"


def encode_cif(cif: str) -> np.ndarray:
    """Return the ``uint16`` token ids of one CIF's training text (default tokenizer).

    Raises:
        DataError: the text does not start with ``data_`` or holds unknown tokens.
    """
    return _encode_with(default_tokenizer(), cif)


def _encode_with(tokenizer: CIFTokenizer, cif: str) -> np.ndarray:
    ids = tokenizer.encode_array(training_text(cif))
    if len(ids) == 0 or tokenizer.itos[int(ids[0])] != DATA_TOKEN:
        raise DataError("CIF does not start with a data_ line")
    unknown = int(np.count_nonzero(ids == tokenizer.unk_id))
    if unknown:
        raise DataError(f"CIF has {unknown} unknown token(s); preprocess it first")
    return ids


@dataclass
class TokenizedSplit:
    """One split's concatenated ids, CIF start positions and the CIFs that failed."""

    ids: np.ndarray
    starts: list[int]
    names: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def tokenize_items(items: Sequence[Item], *, workers: int = 1, progress: bool = True,
                   description: str = "tokenize", tokenizer: CIFTokenizer | None = None) -> TokenizedSplit:
    """Return the concatenated ids and start positions of ``items``; never raises per CIF."""
    if tokenizer is None or tokenizer.vocab_hash == default_tokenizer().vocab_hash:
        encoder, run_workers = encode_cif, workers
    else:  # a custom vocabulary: encode in this process (the tokenizer object is not global)
        encoder, run_workers = (lambda text: _encode_with(tokenizer, text)), 1
    chunks: list[np.ndarray] = []
    starts: list[int] = []
    names: list[str] = []
    failures: list[Failure] = []
    position = 0
    texts = (text for _, text in items)
    for (name, _), (ok, value) in zip(items, imap_progress(encoder, texts, workers=run_workers, total=len(items),
                                                           description=description, progress=progress,
                                                           isolate=False)):  # pure Python, safe
        if not ok:
            failures.append(Failure(name, "tokenize", str(value)))
            continue
        starts.append(position)
        names.append(name)
        chunks.append(value)
        position += len(value)
    ids = np.concatenate(chunks).astype(BIN_DTYPE) if chunks else np.zeros(0, dtype=BIN_DTYPE)
    return TokenizedSplit(ids=ids, starts=starts, names=names, failures=failures)


def make_meta(tokenizer: CIFTokenizer | None = None) -> dict[str, Any]:
    """Return the ``meta.pkl`` dict: ``vocab_size``, ``itos`` (id -> token), ``stoi`` (token -> id)."""
    tokenizer = tokenizer or default_tokenizer()
    return {
        "vocab_size": tokenizer.vocab_size,
        "itos": dict(enumerate(tokenizer.itos)),
        "stoi": dict(tokenizer.stoi),
    }


def write_tokenized(out_dir: str | os.PathLike, train: Sequence[Item], val: Sequence[Item] = (), *,
                    workers: int = 1, progress: bool = True) -> dict[str, TokenizedSplit]:
    """Write ``train.bin``, ``val.bin``, ``meta.pkl``, ``starts.pkl``, ``starts_val.pkl`` to ``out_dir``.

    Returns the tokenized splits (``"train"``, ``"val"``). Output is byte-identical for
    identical input.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for label, items, bin_name, starts_name in (("train", train, "train.bin", "starts.pkl"),
                                               ("val", val, "val.bin", "starts_val.pkl")):
        split = tokenize_items(items, workers=workers, progress=progress, description=f"tokenize {label}")
        atomic_write_bytes(out / bin_name, split.ids.tobytes())
        dump_pickle(out / starts_name, [int(s) for s in split.starts])
        splits[label] = split
        log.info("%s: %d CIFs, %d tokens", label, len(split.starts), len(split.ids))
    dump_pickle(out / "meta.pkl", make_meta())
    return splits


# --- safe reading of pickles --------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "int"), ("builtins", "float"), ("builtins", "str"),
    ("builtins", "bytes"), ("builtins", "bool"), ("builtins", "complex"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a class or function outside the plain-data allow-list."""


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"it references {module}.{name}")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Return the plain data pickled in ``path`` (no code runs while loading).

    Raises:
        DataError: the file is missing, corrupt, or references anything but plain data.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        return _PlainDataUnpickler(io.BytesIO(data)).load()
    except _RefusedGlobal as exc:
        raise DataError(f"{p}: not a plain-data pickle ({exc}); refusing to load it") from None
    except Exception as exc:  # truncated or garbage files raise many kinds
        raise DataError(f"{p}: unreadable pickle ({type(exc).__name__}: {exc})") from None


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Return a ``meta.pkl`` dict, checked to hold ``vocab_size``.

    Raises:
        DataError: unreadable, unsafe, or without an integer ``vocab_size``.
    """
    meta = safe_load_pickle(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("vocab_size"), (int, np.integer)):
        raise DataError(f"{path}: meta.pkl must be a dict with an integer 'vocab_size'")
    return meta


def load_starts(path: str | os.PathLike) -> np.ndarray:
    """Return the CIF start positions of a ``starts.pkl`` as a sorted int64 array.

    Raises:
        DataError: unreadable, unsafe, or not a list of non-negative integers.
    """
    raw = safe_load_pickle(path)
    try:
        starts = np.asarray(raw, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: starts file must be a list of integers") from None
    if len(starts) and starts.min() < 0:
        raise DataError(f"{path}: starts file has negative positions")
    return np.sort(starts)
