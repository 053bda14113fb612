"""The one gate every composition given for generation goes through.

pymatgen's ``Composition`` reads more than a generation request should mean: ``Ca1e9Ti``
is a billion calcium atoms, ``Ca0Ti1O3`` silently becomes ``TiO3``, ``Fe0.5O`` a
fractional cell. :func:`check_composition` reads the formula with its own small grammar
first (element symbols, whole counts, parenthesised groups) and refuses, with a one-line
:class:`CompositionError`, exponents, zero or fractional counts, and cells of more atoms
than a model can write. The CLI, :func:`crystalforge.generate` and the prompt builder all
call it (through :func:`crystalforge.cif.prompt.prompt_formula`), so all refuse alike.
"""

from __future__ import annotations

import re

from ..errors import CompositionError

#: atoms in the cell formula of a prompt. CrystaLLM's training sets (Materials Project,
#: OQMD, NOMAD) hold no cell above a few hundred atoms, and in P1 every atom needs its own
#: site row of about 30 tokens: 1,000 atoms are ~30,000 tokens, fifteen times the largest
#: published context (2,048) and beyond any max_new_tokens a run would set.
MAX_CELL_ATOMS = 1000
#: characters in a formula given for generation
MAX_FORMULA_CHARS = 200

_EXPONENT_RE = re.compile(r"\d[eE][-+]?\d|\d[eE][-+]")
_TOKEN_RE = re.compile(r"[ \t]+|([A-Z][a-z]{0,2})|([(\[])|([)\]])|(\d+(?:\.\d*)?|\.\d+)")


def check_composition(text: str):
    """Return the pymatgen ``Composition`` of a formula given for generation.

    Accepts element symbols with whole counts (``CaTiO3``, ``Sr2 Ti2 O6``, ``Ca(OH)2``,
    ``NaCl2.0``).

    Raises:
        CompositionError: the text is empty, too long or malformed; uses exponent notation;
            has a zero or fractional count; names an unknown element; or the formula has
            more than :data:`MAX_CELL_ATOMS` atoms.
    """
    from .extract import parse_composition

    cleaned = str(text if text is not None else "").strip().strip("'\"").strip()
    shown = cleaned[:40]
    if not cleaned:
        raise CompositionError("empty composition; give a formula such as CaTiO3")
    if len(cleaned) > MAX_FORMULA_CHARS:
        raise CompositionError(f"composition of {len(cleaned)} characters is longer than {MAX_FORMULA_CHARS}")
    exponent = _EXPONENT_RE.search(cleaned)
    if exponent is not None:
        raise CompositionError(f"composition {shown!r} uses exponent notation ({exponent.group()}...); "
                               "write whole atom counts, e.g. CaTiO3")
    _check_counts(cleaned, shown)
    composition = parse_composition(cleaned)
    check_atom_count(composition, shown)
    return composition


def check_atom_count(composition, label: str | None = None) -> None:
    """Raise :class:`CompositionError` unless every amount is whole and positive and the
    total is at most :data:`MAX_CELL_ATOMS` (call it again after multiplying by Z)."""
    label = label if label is not None else composition.formula.replace(" ", "")[:40]
    for element, amount in composition.items():
        if amount <= 0:
            raise CompositionError(f"composition {label!r} has no {element} atoms; leave the element out")
        if abs(amount - round(amount)) > 1e-6:
            raise CompositionError(f"composition {label!r} has a fractional amount of {element} ({amount:g}); "
                                   "give whole atom counts")
    total = composition.num_atoms
    if total > MAX_CELL_ATOMS:
        raise CompositionError(f"composition {label!r} has {total:,.0f} atoms per cell, more than the "
                               f"{MAX_CELL_ATOMS:,} a model can write")


def _check_counts(cleaned: str, shown: str) -> None:
    """Walk the formula token by token: every count must be a whole number of at least 1."""
    position = 0
    previous = None  # what a count would multiply: an element symbol or a closing bracket
    while position < len(cleaned):
        match = _TOKEN_RE.match(cleaned, position)
        if match is None or match.end() == position:
            from .hints import formula_case_hint

            hint = formula_case_hint(cleaned) or "use element symbols and whole counts, e.g. CaTiO3"
            raise CompositionError(f"malformed composition {shown!r} at {cleaned[position:position + 10]!r}; {hint}")
        symbol, opening, closing, count = match.groups()
        if symbol is not None:
            previous = symbol
        elif opening is not None:
            previous = None
        elif closing is not None:  # unbalanced brackets are left to pymatgen's reader to report
            previous = "the group before it"
        elif count is not None:
            if previous is None:
                raise CompositionError(f"malformed composition {shown!r}: count {count} follows no element")
            value = float(count)
            if len(count.split(".")[0]) > 6 or value > MAX_CELL_ATOMS:
                raise CompositionError(f"composition {shown!r} asks for {count} {previous}, more than the "
                                       f"{MAX_CELL_ATOMS:,} atoms a model can write")
            if value == 0:
                raise CompositionError(f"composition {shown!r} has a zero count of {previous}; "
                                       "leave the element out or give at least 1")
            if not value.is_integer():
                raise CompositionError(f"composition {shown!r} has a fractional count of {previous} ({count}); "
                                       "give whole atom counts")
            previous = None
        position = match.end()


def parse_system(text: str) -> tuple[str, ...]:
    """Return the element symbols of a chemical system such as ``Li-Fe-P-O``, in the order given.

    A chemical system names elements joined by ``-`` (one element alone is a system too);
    generation for it may use any of them and no other (subsets allowed, the convention of
    chemical-system searches in crystal structure prediction).

    Raises:
        CompositionError: the text is empty or malformed, names an element twice, names
            something that is not an element, or an element the tokenizer has no token for.
    """
    from pymatgen.core.periodic_table import Element

    from .tokenizer import default_tokenizer

    cleaned = str(text if text is not None else "").strip()
    shown = cleaned[:60]
    if not cleaned:
        raise CompositionError("empty chemical system; name elements joined by '-', e.g. Li-Fe-P-O")
    symbols = [part.strip() for part in cleaned.split("-")]
    if any(not part for part in symbols):
        raise CompositionError(f"malformed chemical system {shown!r}: an empty element between '-'; "
                               "name elements joined by single '-', e.g. Li-Fe-P-O")
    vocabulary = default_tokenizer().stoi
    for symbol in symbols:
        if not Element.is_valid_symbol(symbol):
            proper = symbol[:1].upper() + symbol[1:].lower()
            hint = f" (did you mean {proper}?)" if Element.is_valid_symbol(proper) else ""
            raise CompositionError(f"chemical system {shown!r} names an unknown element {symbol!r}{hint}")
        if symbol not in vocabulary:
            raise CompositionError(f"chemical system {shown!r}: the tokenizer has no token for {symbol} "
                                   "(CrystaLLM's vocabulary holds 89 elements), so no model can write it")
    repeated = sorted({s for s in symbols if symbols.count(s) > 1})
    if repeated:
        raise CompositionError(f"chemical system {shown!r} names {', '.join(repeated)} more than once")
    return tuple(symbols)
