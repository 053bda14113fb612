"""What :func:`crystalforge.generate` accepts as compositions, turned into formula strings.

A composition may be a formula string, a pymatgen ``Composition``, a pymatgen ``Structure``
(its composition, and its space group when asked with :data:`FROM_STRUCTURE`), a mapping
of element counts (``{"Ca": 1, "Ti": 1, "O": 3}``), or a list mixing these. The space group
is one value for every composition or a list with one per composition.

Everything ends as the ``(formula, spacegroup)`` pairs the CLI would have been given, so
a bad input raises the CLI's own one-line message.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import CompositionError, SpaceGroupError

#: ``spacegroup=FROM_STRUCTURE``: generate in each Structure's own space group
FROM_STRUCTURE = "from-structure"
#: symmetry tolerance (Å) when a Structure's space group is read (pymatgen's CifWriter default)
STRUCTURE_SYMPREC = 0.1


def composition_targets(compositions: Any, spacegroup: Any = None) -> list[tuple[str, str | int | None]]:
    """Return ``(formula, spacegroup)`` pairs, one per composition, in the order given.

    ``compositions``: a formula string, ``Composition``, ``Structure``, element-count
    mapping, or a list/tuple mixing them. ``spacegroup``: None, one symbol or number for
    all, :data:`FROM_STRUCTURE` (each Structure's own group, found with spglib at
    ``symprec=0.1``; the formula is then that of its conventional cell, as a CIF of it
    would hold), or a list/tuple with one such value per composition.

    Raises:
        CompositionError: an input of another type, an empty list, a bad formula or mapping.
        SpaceGroupError: a space-group list of the wrong length, or :data:`FROM_STRUCTURE`
            for an input that is not a Structure.
    """
    items = _as_list(compositions)
    if not items:
        raise CompositionError("no composition given: name at least one, e.g. CaTiO3")
    if isinstance(spacegroup, (list, tuple)):
        if len(spacegroup) != len(items):
            raise SpaceGroupError(f"spacegroup lists {len(spacegroup)} value(s) for {len(items)} composition(s); "
                                  "give one space group for all, or exactly one per composition")
        groups = list(spacegroup)
    else:
        groups = [spacegroup] * len(items)
    return [_target(item, group, position) for position, (item, group) in enumerate(zip(items, groups))]


def _as_list(compositions: Any) -> list[Any]:
    """Return the compositions as a list (one item stays one item: a Composition, Structure
    and mapping are iterable but are single compositions)."""
    if compositions is None:
        return []
    if isinstance(compositions, (list, tuple)):
        return list(compositions)
    return [compositions]


def _target(item: Any, spacegroup: Any, position: int) -> tuple[str, str | int | None]:
    from pymatgen.core import Composition, IStructure

    if isinstance(spacegroup, str) and spacegroup.strip().lower() == FROM_STRUCTURE:
        if not isinstance(item, IStructure):
            raise SpaceGroupError(f"spacegroup={FROM_STRUCTURE!r} takes the space group of a Structure, but "
                                  f"composition {position + 1} is {_shown(item)}; give its space group instead")
        return _structure_target(item)
    if isinstance(item, str):
        return item, spacegroup
    if isinstance(item, IStructure):
        return _formula_of(item.composition), spacegroup
    if isinstance(item, Composition):
        return _formula_of(item), spacegroup
    if isinstance(item, Mapping):
        return _formula_of_counts(item), spacegroup
    raise CompositionError(f"composition {position + 1} is {_shown(item)}: give a formula string (CaTiO3), a "
                           "pymatgen Composition or Structure, or element counts such as {'Ca': 1, 'Ti': 1, 'O': 3}")


def _structure_target(structure: Any) -> tuple[str, int]:
    """Return the formula of a Structure's conventional cell and its space-group number."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if not structure.is_ordered:
        raise CompositionError(f"structure {_formula_of(structure.composition)} is disordered (partial "
                               "occupancies): its space group cannot be read; give one instead")
    try:
        analyzer = SpacegroupAnalyzer(structure, symprec=STRUCTURE_SYMPREC)
        number = analyzer.get_space_group_number()
        conventional = analyzer.get_conventional_standard_structure()
    except Exception as exc:  # noqa: BLE001 - spglib fails in several ways on odd cells
        raise SpaceGroupError(f"the space group of structure {_formula_of(structure.composition)} "
                              f"cannot be read ({type(exc).__name__}); give one instead") from None
    return _formula_of(conventional.composition), number


def _formula_of(composition: Any) -> str:
    """Return a formula string of a pymatgen Composition that keeps its atom counts
    (``CaTiO3`` for one formula unit, ``Ca2Ti2O6`` for two)."""
    if composition.num_atoms == 0:
        raise CompositionError("composition is empty: give at least one element")
    whole = all(abs(amount - round(amount)) < 1e-8 for amount in composition.values())
    if whole and composition.get_reduced_composition_and_factor()[1] == 1:
        return composition.reduced_formula
    return "".join(f"{element.symbol if hasattr(element, 'symbol') else element}{_count(amount)}"
                   for element, amount in composition.items())


def _formula_of_counts(counts: Mapping[Any, Any]) -> str:
    """Return the formula string of an element-count mapping (checked later as any formula)."""
    if not counts:
        raise CompositionError("composition {} is empty: give element counts such as {'Ca': 1, 'Ti': 1, 'O': 3}")
    parts = []
    for element, amount in counts.items():
        symbol = getattr(element, "symbol", element)
        if not isinstance(symbol, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise CompositionError(f"composition {dict(counts)!r}: expected element symbol -> count, "
                                   f"got {element!r}: {amount!r}")
        parts.append(f"{symbol.strip()}{_count(amount)}")
    from ..cif.composition import check_composition

    return _formula_of(check_composition("".join(parts)))  # a bad mapping gets the CLI's message


def _count(amount: float) -> str:
    """Return an atom count as a formula writes it: none for one, whole numbers without a point."""
    if abs(amount - 1) < 1e-8:
        return ""
    return str(int(round(amount))) if abs(amount - round(amount)) < 1e-8 else f"{amount:g}"


def _shown(item: Any) -> str:
    text = repr(item) if isinstance(item, (str, int, float)) else type(item).__name__
    return text[:60]


def same_spacegroup_for_all(spacegroup: Any) -> bool:
    """Return whether ``spacegroup`` is one value for every composition (not a list, not
    :data:`FROM_STRUCTURE`): the case a prompts file may fall back on."""
    return not isinstance(spacegroup, (list, tuple)) and not (
        isinstance(spacegroup, str) and spacegroup.strip().lower() == FROM_STRUCTURE)


__all__: Sequence[str] = ("FROM_STRUCTURE", "composition_targets")
