"""Did-you-mean hints: close space-group symbols, and element capitalisation of a formula.

Pure functions for error messages: ``Pm3m`` suggests ``Pm-3m``; ``catio3`` is spelled
``CaTiO3`` (the only way to read it as symbols of the tokenizer's elements).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
import warnings

#: the most spellings :func:`formula_case_candidates` considers before giving up
_MAX_SPELLINGS = 64


@functools.lru_cache(maxsize=1)
def _space_group_symbols() -> tuple[str, ...]:
    """The standard short H-M symbols of the 230 space groups, in number order."""
    import spglib

    symbols: dict[int, str] = {}
    with warnings.catch_warnings():  # spglib warns about its error-handling mode
        warnings.simplefilter("ignore")
        for hall in range(1, 531):
            info = spglib.get_spacegroup_type(hall)
            symbols.setdefault(info.number, info.international_short)
    return tuple(symbols[n] for n in sorted(symbols))


#: ways of writing a symbol loosely, tried in order: without case, spaces, bars and screw
#: underscores (``pm3m`` is ``Pm-3m``); also without slashes (``P21c`` is ``P2_1/c``);
#: without the trigonal ``1`` (``P-3m`` is ``P-3m1`` or ``P-31m``)
_LOOSE_FORMS = (
    lambda s: re.sub(r"[\s_\-]", "", s).lower(),
    lambda s: re.sub(r"[\s_\-/]", "", s).lower(),
    lambda s: re.sub(r"[\s_]", "", s).lower().replace("1", ""),
)


def suggest_space_groups(text: str, limit: int = 3) -> list[str]:
    """Return up to ``limit`` standard space-group symbols close to ``text``, best first.

    Symbols equal to ``text`` when written loosely (case, spaces, bars, underscores, then
    slashes, then the trigonal ``1`` ignored: ``Pm3m`` gives ``Pm-3m``) are the answer when
    there are any; otherwise those :func:`difflib.get_close_matches` finds.
    """
    text = str(text).strip().strip("'\"")
    if not text:
        return []
    symbols = _space_group_symbols()
    for loose in _LOOSE_FORMS:
        found = [s for s in symbols if loose(s) == loose(text)]
        if found:
            return found[:limit]
    by_lower: dict[str, str] = {}
    for symbol in symbols:
        by_lower.setdefault(symbol.lower(), symbol)
    compact = re.sub(r"\s", "", text).lower()
    return [by_lower[close] for close in difflib.get_close_matches(compact, list(by_lower), n=limit, cutoff=0.6)]


def unknown_space_group_message(text: str) -> str:
    """Return the one-line error for an unknown space group, with close symbols when any.

    ``unknown space group 'Pm3m'; did you mean 'Pm-3m'?``
    """
    shown = str(text).strip().strip("'\"")[:40]
    suggestions = suggest_space_groups(shown)
    if suggestions:
        return f"unknown space group {shown!r}; did you mean {_or_list(suggestions)}?"
    return f"unknown space group {shown!r}; give an H-M symbol such as Pm-3m or P2_1/c, or a number 1-230"


def _or_list(items: list[str]) -> str:
    quoted = [repr(item) for item in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


@functools.lru_cache(maxsize=1)
def _element_symbols() -> frozenset[str]:
    """The element symbols of the tokenizer's vocabulary (the elements a model can be asked for)."""
    from .tokenizer import load_vocabulary

    return frozenset(t for t in load_vocabulary() if re.fullmatch(r"[A-Z][a-z]?", t))


def _spellings(letters: str) -> list[list[str]]:
    """Every way to read a lower-case run of letters as element symbols."""
    elements = _element_symbols()

    @functools.lru_cache(maxsize=None)
    def read(start: int) -> tuple[tuple[str, ...], ...]:
        if start == len(letters):
            return ((),)
        out = []
        for width in (2, 1):
            symbol = letters[start:start + width].capitalize()
            if len(symbol) == width and symbol in elements:
                out += [(symbol, *rest) for rest in read(start + width)]
                if len(out) > _MAX_SPELLINGS:
                    break
        return tuple(out[:_MAX_SPELLINGS])

    return [list(s) for s in read(0)]


def formula_case_candidates(text: str) -> list[str]:
    """Return every spelling of ``text`` with its letters read as element symbols, fewest symbols first.

    ``"sio2"`` gives ``["SiO2", "SIO2"]``; digits, brackets and dots stay as they are. Empty
    when some run of letters cannot be read as elements at all (``"xyz"``).
    """
    parts = re.split(r"([A-Za-z]+)", str(text).strip())
    options: list[list[list[str]]] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            options.append([[part]] if part else [[]])
            continue
        spellings = _spellings(part.lower())
        if not spellings:
            return []
        options.append(spellings)
    joined: dict[str, int] = {}
    for combination in itertools.islice(itertools.product(*options), _MAX_SPELLINGS):
        symbols = [s for piece in combination for s in piece]
        joined.setdefault("".join(symbols), sum(1 for s in symbols if s[:1].isalpha()))
    return sorted(joined, key=lambda spelling: (joined[spelling], spelling))


def suggest_formula_case(text: str) -> str | None:
    """Return the element capitalisation of ``text`` (``"catio3"`` gives ``"CaTiO3"``), or None.

    None when the letters cannot be read as element symbols, when they can be read in more
    than one way (``"co"``: Co or CO; see :func:`formula_case_candidates`), or when the
    spelling is ``text`` itself.
    """
    candidates = formula_case_candidates(text)
    if len(candidates) != 1 or candidates[0] == str(text).strip():
        return None
    return candidates[0]


def formula_case_hint(text: str, limit: int = 3) -> str | None:
    """Return ``"did you mean 'CaTiO3'?"`` (or several spellings) for a mis-capitalised formula, or None."""
    stripped = str(text).strip()
    candidates = [c for c in formula_case_candidates(stripped) if c != stripped][:limit]
    if not candidates:
        return None
    return f"did you mean {_or_list(candidates)}?"


__all__ = [
    "formula_case_candidates",
    "formula_case_hint",
    "suggest_formula_case",
    "suggest_space_groups",
    "unknown_space_group_message",
]
