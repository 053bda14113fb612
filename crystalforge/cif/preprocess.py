"""Turn any CIF pymatgen can read into CrystaLLM's canonical training form.

The chain, in order (see FACTS "Canonical training form"):

1. parse, then write with ``CifWriter(structure, symprec=0.1)`` (symmetrized, distinct sites);
2. refuse ``_cell_formula_units_Z 0``;
3. ``data_`` line = the non-reduced ``_chemical_formula_sum`` without quotes and spaces;
4. collapse the symmetry-operator loop to ``1  'x, y, z'``;
5. insert the atom-properties loop right before ``_symmetry_space_group_name_H-M``;
6. round every decimal with more than 4 decimals to 4;
7. the tokenizer's line cleanup: strip lines, drop empty, comment and pymatgen lines,
   end with an empty line.
"""

from __future__ import annotations

import re
import warnings

from ..errors import CIFError
from .extract import extract_formula, extract_z
from .properties import atom_props_block, remove_atom_props_block
from .safety import check_cif_text, check_structure
from .symmetry import collapse_symmetry_loop

SYMPREC = 0.1
_LONG_DECIMAL_RE = re.compile(r"\d+\.\d{5,}")
_DATA_LINE_RE = re.compile(r"^[ \t]*data_.*$", re.M)
_SPACE_GROUP_LINE_RE = re.compile(r"^[ \t]*_symmetry_space_group_name_H-M", re.M)


def parse_structure(cif: str, parser=None, *, checked: bool = False):
    """Return the first pymatgen ``Structure`` of a CIF text.

    ``parser`` is pymatgen's ``CifParser`` of this very text when the caller has one
    already (the validators share theirs); the result is the same as
    ``Structure.from_str(cif, fmt="cif")``, which parses the text again. ``checked``: the
    caller has run :func:`crystalforge.cif.safety.check_cif_text` on this text already.

    Raises:
        CIFError: the text is empty, holds a value that could crash the parser (see
            :func:`crystalforge.cif.safety.check_cif_text`), or pymatgen cannot read a
            structure from it.
    """
    from pymatgen.core import Structure

    if not cif or not cif.strip():
        raise CIFError("empty CIF")
    if not checked:
        check_cif_text(cif)  # values that crash spglib/NumPy are refused before pymatgen runs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if parser is None:
                structure = Structure.from_str(cif, fmt="cif")
            else:  # what Structure.from_str does after its own CifParser.from_str
                first = parser.parse_structures(primitive=False)[0]
                structure = Structure.from_sites(first, properties=first.properties)
    except Exception as exc:  # pymatgen raises many kinds on malformed input
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CIFError(f"pymatgen cannot read the CIF: {detail[:200]}") from None
    if len(structure) == 0:
        raise CIFError("CIF has no atom sites")
    return structure


def round_decimals(text: str, places: int = 4) -> str:
    """Return ``text`` with every decimal number of more than ``places`` decimals rounded."""
    pattern = _LONG_DECIMAL_RE if places == 4 else re.compile(rf"\d+\.\d{{{places + 1},}}")
    return pattern.sub(lambda m: f"{float(m.group()):.{places}f}", text)


def clean_lines(text: str) -> str:
    """Return the tokenizer's view of a CIF: stripped lines without empty, comment or
    pymatgen lines, joined by newlines, ending with an empty line (``"...\\n\\n"``)."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "pymatgen" in line:
            continue
        lines.append(line)
    return "\n".join(lines) + "\n\n"


def _oxidation_states(structure) -> dict[str, float] | None:
    """Return symbol -> mean oxidation state when the structure carries them, else None."""
    species = structure.composition.keys()
    if not species or not all(getattr(s, "oxi_state", None) is not None for s in species):
        return None
    totals: dict[str, list[float]] = {}
    for specie in species:
        totals.setdefault(specie.symbol, []).append(float(specie.oxi_state))
    return {symbol: sum(values) / len(values) for symbol, values in totals.items()}


def unknown_species(species) -> list[str]:
    """Return the sorted symbols in ``species`` that are not a real chemical element.

    Plain elements and oxidation-state-decorated species (``Ca2+``, whose element is Ca)
    are known; dummy species (``X``, ``Xx0+``) and anything else are not.
    """
    from pymatgen.core import DummySpecies, Element

    unknown = set()
    for specie in species:
        element = specie if isinstance(specie, Element) else getattr(specie, "element", None)
        if isinstance(specie, DummySpecies) or not isinstance(element, Element):
            unknown.add(str(getattr(specie, "symbol", specie)))
    return sorted(unknown)


def structure_to_canonical(structure) -> str:
    """Return the canonical training CIF of a pymatgen ``Structure``.

    Raises:
        CIFError: unknown elements, an unsafe structure (non-finite or degenerate cell,
            too many sites), symmetry analysis fails or ``_cell_formula_units_Z`` is 0.
    """
    from pymatgen.io.cif import CifWriter

    unknown = unknown_species(structure.composition.elements)
    if unknown:
        raise CIFError(f"unknown element symbol(s): {', '.join(unknown)}")
    check_structure(structure)
    oxidation_states = _oxidation_states(structure)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            text = str(CifWriter(structure, symprec=SYMPREC))
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CIFError(f"symmetry analysis failed: {detail[:200]}") from None
    if extract_z(text) == 0:
        raise CIFError("_cell_formula_units_Z is 0; such CIFs are skipped")
    formula = extract_formula(text).replace(" ", "").replace("'", "").replace('"', "")
    text = _DATA_LINE_RE.sub(lambda _m: f"data_{formula}", text, count=1)
    text = collapse_symmetry_loop(text)
    if oxidation_states is not None:
        text = remove_atom_props_block(text)  # CifWriter's own oxidation-number loop
    block = atom_props_block(structure.composition.element_composition.elements, oxidation_states)
    match = _SPACE_GROUP_LINE_RE.search(text)
    if match is None:
        raise CIFError("CifWriter output has no _symmetry_space_group_name_H-M line")
    text = text[: match.start()] + block + text[match.start():]
    return clean_lines(round_decimals(text))


def preprocess_cif(raw: str) -> str:
    """Return the canonical training form of any CIF pymatgen can read.

    Returns:
        The CIF text, lines stripped, ending with an empty line (``"...\\n\\n"``).

    Raises:
        CIFError: the CIF cannot be parsed, symmetry analysis fails, or Z is 0.
    """
    structure = parse_structure(raw)
    try:
        return structure_to_canonical(structure)
    except CIFError:
        raise
    except Exception as exc:  # pymatgen fails in many ways on odd structures
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CIFError(f"cannot preprocess the structure: {detail[:200]}") from None
