"""The CDVAE validity test: SMACT composition validity and structure validity.

Composition validity follows the CDVAE benchmark convention (Xie et al., ICLR 2022), written
against the current SMACT API: a composition is valid when some combination of the
elements' default SMACT oxidation states is charge-neutral at the composition's reduced
stoichiometry and passes the Pauling electronegativity test (cations less electronegative
than anions). Single elements and all-metal compositions (alloys) are accepted.

Structure validity: no two atoms closer than 0.5 Angstrom and a cell volume above 0.1 A^3.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: CDVAE's structure-validity thresholds.
MIN_DISTANCE = 0.5
MIN_VOLUME = 0.1


def _stoichiometry(composition: Any) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Return element symbols and integer counts divided by their gcd."""
    symbols = []
    counts = []
    for element, amount in composition.get_el_amt_dict().items():
        symbols.append(str(element))
        counts.append(int(round(amount)))
    divisor = functools.reduce(math.gcd, counts) or 1
    return tuple(symbols), tuple(c // divisor for c in counts)


@functools.lru_cache(maxsize=4096)
def _smact_valid_cached(symbols: tuple[str, ...], counts: tuple[int, ...], use_pauling_test: bool,
                        include_alloys: bool) -> bool:
    import smact
    from smact.screening import pauling_test

    if len(set(symbols)) == 1:
        return True
    if include_alloys and all(symbol in smact.metals for symbol in symbols):
        return True
    elements = smact.element_dictionary(symbols)
    ordered = [elements[s] for s in symbols]
    electronegativities = [e.pauling_eneg for e in ordered]
    oxidation_choices = [tuple(e.oxidation_states or ()) for e in ordered]
    if any(len(choices) == 0 for choices in oxidation_choices):
        return False
    stoichs = [(c,) for c in counts]
    threshold = max(counts)
    for oxidation_states in itertools.product(*oxidation_choices):
        # current SMACT: neutral_ratios returns a (possibly empty) list of ratios
        if not smact.neutral_ratios(oxidation_states, stoichs=stoichs, threshold=threshold):
            continue
        if not use_pauling_test:
            return True
        try:
            if pauling_test(oxidation_states, electronegativities):
                return True
        except TypeError:  # an element without a Pauling electronegativity: accept
            return True
    return False


def smact_valid(composition: Any, *, use_pauling_test: bool = True, include_alloys: bool = True) -> bool:
    """Return whether a composition passes the CDVAE/SMACT charge-neutrality test.

    Args:
        composition: a pymatgen ``Composition`` or a formula string.

    Raises:
        CompositionError: the formula cannot be read.
    """
    from pymatgen.core import Composition

    if isinstance(composition, str):
        from ..cif.extract import parse_composition

        composition = parse_composition(composition)
    elif not isinstance(composition, Composition):
        composition = Composition(composition)
    symbols, counts = _stoichiometry(composition)
    if not symbols:
        return False
    return _smact_valid_cached(symbols, counts, use_pauling_test, include_alloys)


def min_interatomic_distance(structure: Any) -> float:
    """Return the smallest distance between two distinct sites (minimum image), in Angstrom.

    As in CDVAE, a site's distance to its own periodic image is not counted; a structure
    with one site returns ``inf``.
    """
    if len(structure) < 2:
        return math.inf
    matrix = np.array(structure.distance_matrix, dtype=float)
    np.fill_diagonal(matrix, np.inf)
    return float(matrix.min())


def structure_valid(structure: Any, *, cutoff: float = MIN_DISTANCE, min_volume: float = MIN_VOLUME) -> bool:
    """Return whether no two atoms are closer than ``cutoff`` and the volume exceeds ``min_volume``."""
    try:
        if not structure.volume > min_volume:
            return False
        return min_interatomic_distance(structure) >= cutoff
    except Exception as exc:  # a degenerate lattice makes pymatgen raise
        logger.debug("structure validity failed: %s", exc)
        return False


def cdvae_valid(structure: Any) -> tuple[bool, bool]:
    """Return ``(composition_valid, structure_valid)`` for a pymatgen ``Structure``."""
    try:
        composition_ok = smact_valid(structure.composition)
    except Exception as exc:
        logger.debug("SMACT test failed: %s", exc)
        composition_ok = False
    return composition_ok, structure_valid(structure)
