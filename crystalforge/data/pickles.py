"""Read CrystaLLM's ``.pkl.gz`` CIF collections without trusting the pickle.

CrystaLLM ships CIF sets as a gzipped pickle of a list of ``(id, cif)`` pairs. Pickles
can run code on load, so this reader uses an unpickler that admits only the built-in
list, tuple and str values such a file needs: any class lookup is refused.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from pathlib import Path
from typing import Iterator

from ..errors import DataError


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler for plain lists, tuples and strings: every global lookup is refused."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        raise DataError(
            f"refusing to unpickle {module}.{name}: a CIF pickle may hold only lists, tuples "
            "and strings (the file may be malicious or not a CrystaLLM CIF pickle)"
        )


def load_plain_pickle(data: bytes, source: str = "pickle") -> object:
    """Return the object of a pickle holding only plain data (no classes or functions).

    Raises:
        DataError: the pickle refers to a class/function, or is truncated or corrupt.
    """
    try:
        return _PlainDataUnpickler(io.BytesIO(data)).load()
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    except Exception as exc:  # truncated or corrupt pickles raise many kinds
        raise DataError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def read_cif_pickle(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Yield ``(id, cif)`` pairs from a CrystaLLM ``.pkl.gz`` (or plain ``.pkl``) file.

    Entries may be ``(id, cif)`` pairs or bare CIF strings (named by position).

    Raises:
        DataError: the file is missing, not gzip/pickle, holds anything but a list of
            ``(str, str)`` pairs or strings, or refers to a class.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read file ({exc.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{p}: corrupt gzip data ({exc})") from None
    items = load_plain_pickle(raw, str(p))
    if not isinstance(items, (list, tuple)):
        raise DataError(f"{p}: expected a list of (id, cif) pairs, found {type(items).__name__}")
    width = max(6, len(str(len(items))))
    for index, item in enumerate(items):
        if isinstance(item, str):
            yield f"row{index:0{width}d}", item
        elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(v, str) for v in item):
            yield item[0], item[1]
        else:
            raise DataError(f"{p}: entry {index} is not an (id, cif) pair of strings")
