"""The atom-properties block CrystaLLM inserts before the space-group line.

For each element of a composition (sorted the way pymatgen sorts elements, by
electronegativity): Pauling electronegativity, atomic radius and average ionic radius,
with 4 decimals. The values are written exactly as CrystaLLM writes them with the same
pymatgen, so the block's tokens match its training data for every element of the
vocabulary (``tests/data/crystallm_atom_props.json`` pins all 89):

- He, Ne and Ar have no Pauling value; their Allen electronegativity is written as a short
  number (``4.16``), not with 4 decimals;
- an element without an atomic radius (He, Ne, Kr, Xe, Rn) gets its van der Waals radius,
  also as a short number (``2.02``);
- the ionic radius is pymatgen's ``average_ionic_radius`` as it is, ``0.0000`` for an
  element without ions (most noble gases).
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

#: Allen electronegativities (2 decimals) for the noble gases that have no Pauling value.
ALLEN_ELECTRONEGATIVITY = {"He": 4.16, "Ne": 4.79, "Ar": 3.24}
#: van der Waals radii (Angstrom) of the noble gases, for those without an atomic radius.
NOBLE_GAS_VDW_RADIUS = {"He": 1.40, "Ne": 1.54, "Ar": 1.88, "Kr": 2.02, "Xe": 2.16, "Rn": 2.20}

# the whole block, as the preprocessor writes it (used to remove it again)
ATOM_PROPS_BLOCK_RE = re.compile(
    r"^[ \t]*loop_[ \t]*\n(?:[ \t]*_atom_type_\w+[ \t]*\n)+(?:[ \t]*(?!loop_|_|data_)\S[^\n]*(?:\n|$))*",
    re.M,
)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@functools.lru_cache(maxsize=None)
def element_property_texts(symbol: str) -> tuple[str, str, str]:
    """Return the block's three values for an element as text: electronegativity, atomic
    radius, average ionic radius (``("0.9500", "2.0000", "1.3200")`` for Sr).

    Raises:
        ValueError: ``symbol`` is not an element.
    """
    from pymatgen.core import Element

    element = Element(symbol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        electronegativity = _number(element.X)
        radius = element.atomic_radius
        ionic = _number(element.average_ionic_radius)
    if math.isnan(electronegativity) and symbol in ALLEN_ELECTRONEGATIVITY:
        x_text = str(ALLEN_ELECTRONEGATIVITY[symbol])
    else:
        x_text = f"{electronegativity:.4f}"
    if radius is None and symbol in NOBLE_GAS_VDW_RADIUS:
        radius_text = str(NOBLE_GAS_VDW_RADIUS[symbol])
    else:
        radius_text = f"{_number(radius):.4f}"
    return x_text, radius_text, f"{ionic:.4f}"


def element_properties(symbol: str) -> tuple[float, float, float]:
    """Return ``(electronegativity, atomic radius, average ionic radius)`` of an element,
    the numbers of its atom-properties row (see :func:`element_property_texts`).

    Raises:
        ValueError: ``symbol`` is not an element.
    """
    x_text, radius_text, ionic_text = element_property_texts(symbol)
    return float(x_text), float(radius_text), float(ionic_text)


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
        ordered = sorted(dict.fromkeys(elements))  # first-seen order, so ties sort as pymatgen sorts
    for element in ordered:
        symbol = element.symbol
        row = f"  {symbol}  " + "  ".join(element_property_texts(symbol))
        if oxidation_states:
            row += f"  {oxidation_states.get(symbol, 0):.4f}"
        lines.append(row)
    return "\n".join(lines) + "\n"


def remove_atom_props_block(cif: str) -> str:
    """Return ``cif`` without its ``_atom_type_*`` loop(s)."""
    return ATOM_PROPS_BLOCK_RE.sub("", cif)
