"""Prompts for generation: a ``data_`` line, and optionally the props block and space group."""

from __future__ import annotations

import warnings

from ..errors import CompositionError, SpaceGroupError
from .composition import check_atom_count, check_composition
from .extract import normalize_space_group, parse_composition
from .properties import atom_props_block


def prompt_formula(composition: str, z: int | None = None) -> str:
    """Return the ``data_`` formula of a composition: pymatgen's ``Composition.formula``
    without spaces (``CaTiO3`` gives ``Ca1Ti1O3``), times ``z`` formula units when given.

    Raises:
        CompositionError: bad composition (see :func:`crystalforge.cif.composition.check_composition`),
            fractional amounts, too many atoms, or ``z`` not a positive int.
    """
    parsed = check_composition(composition)  # exponents, zero/fractional counts, size
    if z is not None:
        if isinstance(z, bool) or not isinstance(z, int) or z < 1:
            raise CompositionError(f"Z must be a whole number of at least 1, got {z!r}")
        parsed = parsed.reduced_composition * z
        check_atom_count(parsed, f"{composition} x Z={z}"[:60])
    if any(abs(amount - round(amount)) > 1e-6 for amount in parsed.values()):
        raise CompositionError(f"composition {composition!r} has fractional amounts; give whole atom counts")
    with warnings.catch_warnings():  # ordering reads Element.X, which warns for noble gases
        warnings.simplefilter("ignore")
        return parsed.formula.replace(" ", "")


def make_prompt(composition: str, spacegroup: str | int | None = None, z: int | None = None) -> str:
    """Return a generation prompt.

    Composition only: ``data_<formula>\\n``. With a space group: the ``data_`` line, the
    atom-properties block for the formula, then ``_symmetry_space_group_name_H-M <symbol>\\n``,
    lines stripped as in the canonical training form.

    Raises:
        CompositionError: bad composition or ``z``.
        SpaceGroupError: unknown space group (checked before any other work).
    """
    symbol = normalize_space_group(spacegroup) if spacegroup is not None else None
    formula = prompt_formula(composition, z)
    prompt = f"data_{formula}\n"
    if symbol is None:
        return prompt
    from .tokenizer import space_group_symbols

    if symbol not in space_group_symbols():
        raise SpaceGroupError(
            f"space group {symbol} is not in the model's vocabulary (CrystaLLM's list lacks it); "
            "generate without --spacegroup or pick another group"
        )
    elements = parse_composition(formula).elements
    # lines stripped as in the training form, so the prompt matches what the model saw
    block = "".join(line.strip() + "\n" for line in atom_props_block(elements).splitlines())
    return prompt + block + f"_symmetry_space_group_name_H-M {symbol}\n"
