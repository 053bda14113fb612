"""Remove duplicate structures: one CIF per (reduced formula, space group).

Of several CIFs with the same reduced formula and space group, the one with the lowest
volume per formula unit is kept (the first in input order on a tie), as CrystaLLM does.
The space group is read from the CIF; a CIF stating ``P1`` (raw structures usually do)
has its symmetry detected with pymatgen's ``SpacegroupAnalyzer(symprec=0.1)`` first, so
deduplicating raw and preprocessed CIFs gives the same groups.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Sequence

from ..parallel import imap_progress
from .ingest import Failure, Item

log = logging.getLogger(__name__)

SYMPREC = 0.1


@dataclass(frozen=True)
class DedupeKey:
    """What makes two CIFs duplicates, and the value that decides which one stays."""

    formula: str
    space_group: str
    volume_per_formula_unit: float


@dataclass
class DedupeResult:
    """``items`` kept (input order), ``duplicates`` (name dropped -> name kept), ``failures``."""

    items: list[Item] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def dedupe_key(cif: str, detect: str = "auto") -> DedupeKey:
    """Return the deduplication key of one CIF.

    ``detect``: ``"auto"`` detects the space group when the CIF states ``P1``, ``"always"``
    detects it for every CIF, ``"never"`` trusts the stated one.

    Raises:
        CIFError: the CIF lacks a formula, space group, volume or Z, or does not parse.
    """
    from ..cif.extract import extract_formula, extract_space_group, extract_volume, extract_z, parse_composition
    from ..errors import CIFError

    stated = None
    if detect != "always":
        try:
            stated = str(extract_space_group(cif)).replace(" ", "")
        except CIFError:
            if detect == "never":
                raise
    if detect == "always" or (detect == "auto" and stated in (None, "P1")):
        return _detected_key(cif)
    composition = parse_composition(str(extract_formula(cif)))
    reduced, _ = composition.get_reduced_formula_and_factor()
    z = int(extract_z(cif))
    if z <= 0:
        raise CIFError("_cell_formula_units_Z is 0")
    return DedupeKey(reduced, stated, float(extract_volume(cif)) / z)


def _detected_key(cif: str) -> DedupeKey:
    """Key from the parsed structure, with the space group found by SpacegroupAnalyzer."""
    import warnings

    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from ..cif.safety import check_cif_text, check_structure
    from ..errors import CIFError

    check_cif_text(cif)  # refuse values that crash spglib before pymatgen runs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(cif, fmt="cif")
            check_structure(structure)
            symbol = SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_symbol()
    except CIFError:
        raise
    except Exception as exc:  # pymatgen raises many kinds on bad input
        raise CIFError(f"cannot parse structure ({type(exc).__name__}: {exc})") from None
    reduced, factor = structure.composition.get_reduced_formula_and_factor()
    return DedupeKey(reduced, symbol, structure.volume / factor)


def dedupe(items: Sequence[Item], *, detect: str = "auto", workers: int = 1, progress: bool = True) -> DedupeResult:
    """Return ``items`` without duplicates (see the module docstring); never raises per CIF.

    A CIF whose key cannot be read is dropped and listed in ``failures`` (step ``dedupe``).
    """
    key_of = functools.partial(dedupe_key, detect=detect)
    keys: list[DedupeKey | None] = []
    result = DedupeResult()
    texts = (text for _, text in items)
    for (name, _), (ok, value) in zip(items, imap_progress(key_of, texts, workers=workers, total=len(items),
                                                           description="dedupe", progress=progress,
                                                           crash_label="the CIF parser")):
        if ok:
            keys.append(value)
        else:
            keys.append(None)
            result.failures.append(Failure(name, "dedupe", str(value)))
    best: dict[tuple[str, str], int] = {}
    for index, key in enumerate(keys):
        if key is None:
            continue
        group = (key.formula, key.space_group)
        current = best.get(group)
        if current is None or key.volume_per_formula_unit < keys[current].volume_per_formula_unit:
            best[group] = index
    kept = set(best.values())
    for index, key in enumerate(keys):
        if key is None:
            continue
        if index in kept:
            result.items.append(items[index])
        else:
            result.duplicates[items[index][0]] = items[best[(key.formula, key.space_group)]][0]
    log.info("dedupe: kept %d of %d CIFs (%d duplicates, %d failed)", len(result.items), len(items),
             len(result.duplicates), len(result.failures))
    return result
