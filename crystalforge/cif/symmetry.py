"""Space-group symmetry operators: the full list for a symbol, and the collapsed form.

CrystaLLM trains on "semi-symmetrized" CIFs whose operator loop holds only the identity;
after generation the full operator list is restored from the space-group symbol.
"""

from __future__ import annotations

import functools
import re
import warnings

from ..errors import SpaceGroupError
from .extract import normalize_space_group

IDENTITY = "x, y, z"

# the whole symmetry-operator loop: header lines then rows like "  1  'x, y, z'"
SYMMETRY_LOOP_RE = re.compile(
    r"^[ \t]*loop_[ \t]*\n"
    r"(?:[ \t]*_symmetry_equiv_pos_\w+[ \t]*\n)+"
    r"(?:[ \t]*\d+[ \t]+'[^'\n]*'[ \t]*(?:\n|$))*",
    re.M,
)


@functools.lru_cache(maxsize=256)
def symmetry_operators(space_group: str | int) -> tuple[str, ...]:
    """Return the full list of operators (``'x, y, z'`` style) of a space group.

    The identity comes first and the rest are sorted, so the list is the same every run.

    Raises:
        SpaceGroupError: unknown space group.
    """
    from pymatgen.symmetry.groups import SpaceGroup

    symbol = normalize_space_group(space_group)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            operators = {op.as_xyz_str() for op in SpaceGroup(symbol).symmetry_ops}
    except Exception as exc:  # pragma: no cover - normalize_space_group checked it
        raise SpaceGroupError(f"pymatgen does not know space group {symbol!r}: {exc}") from None
    operators.discard(IDENTITY)
    return (IDENTITY, *sorted(operators))


def symmetry_loop(operators: tuple[str, ...] | list[str]) -> str:
    """Return a CIF symmetry-operator loop (ending with a newline) for ``operators``."""
    lines = ["loop_", " _symmetry_equiv_pos_site_id", " _symmetry_equiv_pos_as_xyz"]
    lines += [f"  {i}  '{op}'" for i, op in enumerate(operators, start=1)]
    return "\n".join(lines) + "\n"


def replace_symmetry_loop(cif: str, operators: tuple[str, ...] | list[str]) -> str:
    """Return ``cif`` with its symmetry-operator loop replaced by one holding ``operators``.

    When the CIF has no such loop, it is inserted before the first ``loop_``.
    """
    block = symmetry_loop(operators)
    if SYMMETRY_LOOP_RE.search(cif):
        return SYMMETRY_LOOP_RE.sub(lambda _m: block, cif, count=1)
    index = cif.find("loop_")
    if index < 0:
        return cif.rstrip("\n") + "\n" + block
    return cif[:index] + block + cif[index:]


def collapse_symmetry_loop(cif: str) -> str:
    """Return ``cif`` with its operator loop collapsed to the identity ``1  'x, y, z'``."""
    return replace_symmetry_loop(cif, (IDENTITY,))
