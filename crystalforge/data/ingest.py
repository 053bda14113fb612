"""Read CIFs from one or more sources into one named, ordered collection.

A source is anything :func:`crystalforge.cif.io.iter_cifs` reads: a ``.cif`` file, a
folder, a ``.tar.gz``, a benchmark CSV with a ``cif`` column, or a CrystaLLM ``.pkl.gz``.
Names stay unique across sources (a clash gets a ``-2``, ``-3`` ... suffix), and the
order is the sources' order, then each source's own stable order, so re-runs match.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from ..cif.io import iter_cifs, source_kind
from ..errors import DataError

#: a named CIF text, the unit every data step works on
Item = tuple[str, str]


@dataclass
class Failure:
    """One CIF a step could not handle: its name, the step and the reason."""

    name: str
    step: str
    error: str


@dataclass
class IngestResult:
    """CIFs read from the sources (``items``) and the members that were empty/unreadable."""

    items: list[Item] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def ingest(sources: Sequence[str | os.PathLike] | str | os.PathLike) -> IngestResult:
    """Return every CIF of ``sources`` with unique names, in a stable order.

    Empty or binary members are not returned but listed in ``failures`` (step ``ingest``).

    Raises:
        DataError: a source is missing, of unknown kind, or malformed (e.g. no ``cif`` column).
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise DataError("no CIF source given: pass a folder, .tar.gz, CSV or .pkl.gz")
    for source in sources:
        source_kind(source)  # raises DataError for a missing path before any work
    result = IngestResult()
    seen: set[str] = set()
    for source in sources:
        for name, text in iter_cifs(source):
            name = unique_name(name, seen)
            if not text.strip():
                result.failures.append(Failure(name, "ingest", "empty, binary or unreadable CIF"))
                continue
            result.items.append((name, text))
    return result


def unique_name(name: str, seen: set[str]) -> str:
    """Return ``name`` or ``name-2``, ``name-3`` ... whichever is not in ``seen`` (then add it)."""
    candidate, n = name, 1
    while candidate in seen:
        n += 1
        candidate = f"{name}-{n}"
    seen.add(candidate)
    return candidate


def read_items(source: str | os.PathLike) -> list[Item]:
    """Return the CIFs of one source as a list (empty members dropped).

    Raises:
        DataError: the source is missing or malformed.
    """
    return ingest([source]).items
