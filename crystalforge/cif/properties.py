"""The atom-properties block CrystaLLM inserts before the space-group line.

For each element of a composition (sorted the way pymatgen sorts elements, by
electronegativity): Pauling electronegativity, atomic radius and average ionic radius,
with 4 decimals. Noble gases lacking a value fall back to the Allen electronegativity
and the van der Waals radius.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from typing import Iterable

ATOM_PROPS_KEYS = (
    "_atom_type_symbol",
    "_atom_type_electronegativity",
    "_atom_type_radius",
    "_atom_type_ionic_radius",
)
OXIDATION_KEY = "_atom_type_oxidation_number"

#: Allen electronegativities for the noble gases that have no Pauling value.
ALLEN_ELECTRONEGATIVITY = {"He": 4.16, "Ne": 4.787, "Ar": 3.242, "Kr": 2.966, "Xe": 2.582, "Rn": 2.60}
#: van der Waals radii (Angstrom) of the noble gases.
NOBLE_GAS_VDW_RADIUS = {"He": 1.40, "Ne": 1.54, "Ar": 1.88, "Kr": 2.02, "Xe": 2.16, "Rn": 2.20}

# the whole block, as the preprocessor writes it (used to remove it again)
ATOM_PROPS_BLOCK_RE = re.compile(
    r"^[ \t]*loop_[ \t]*\n(?:[ \t]*_atom_type_\w+[ \t]*\n)+(?:[ \t]*(?!loop_|_|data_)\S[^\n]*(?:\n|$))*",
    re.M,
)


def _value(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@functools.lru_cache(maxsize=None)
def element_properties(symbol: str) -> tuple[float, float, float]:
    """Return ``(electronegativity, atomic radius, average ionic radius)`` of an element.

    Missing values fall back to the Allen electronegativity / van der Waals radius for the
    noble gases and to 0 otherwise.

    Raises:
        ValueError: ``symbol`` is not an element.
    """
    from pymatgen.core import Element

    element = Element(symbol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        electronegativity = _value(element.X)
        radius = _value(element.atomic_radius)
        ionic = _value(element.average_ionic_radius)
    if electronegativity is None:
        electronegativity = ALLEN_ELECTRONEGATIVITY.get(symbol, 0.0)
    if radius is None:
        radius = NOBLE_GAS_VDW_RADIUS.get(symbol, 0.0)
    if not ionic:
        ionic = NOBLE_GAS_VDW_RADIUS.get(symbol, 0.0)
    return electronegativity, radius, ionic


def atom_props_block(elements: Iterable, oxidation_states: dict[str, float] | None = None) -> str:
    """Return the atom-properties loop (ending with a newline) for ``elements``.

    Args:
        elements: pymatgen ``Element`` objects (sorted here as pymatgen sorts them).
        oxidation_states: symbol -> oxidation number; adds an
            ``_atom_type_oxidation_number`` column when given.
    """
    keys = list(ATOM_PROPS_KEYS)
    if oxidation_states:
        keys.append(OXIDATION_KEY)
    lines = ["loop_", *(f" {key}" for key in keys)]
    with warnings.catch_warnings():  # sorting reads Element.X, which warns for noble gases
        warnings.simplefilter("ignore")
        ordered = sorted(set(elements))
    for element in ordered:
        symbol = element.symbol
        values = element_properties(symbol)
        row = f"  {symbol}  " + "  ".join(f"{v:.4f}" for v in values)
        if oxidation_states:
            row += f"  {oxidation_states.get(symbol, 0):.4f}"
        lines.append(row)
    return "\n".join(lines) + "\n"


def remove_atom_props_block(cif: str) -> str:
    """Return ``cif`` without its ``_atom_type_*`` loop(s)."""
    return ATOM_PROPS_BLOCK_RE.sub("", cif)
