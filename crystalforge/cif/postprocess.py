"""Turn a generated (canonical-form) CIF back into an ordinary CIF.

The collapsed operator loop ``1  'x, y, z'`` is replaced by the space group's full
operator list (P1 keeps the identity alone) and the atom-properties block is removed.
"""

from __future__ import annotations

from ..errors import CIFError, SpaceGroupError
from .extract import extract_space_group, normalize_space_group
from .properties import remove_atom_props_block
from .symmetry import IDENTITY, replace_symmetry_loop, symmetry_operators


def postprocess_cif(text: str) -> str:
    """Return ``text`` with full symmetry operators and without the atom-properties block.

    Returns:
        The CIF text ending with one newline.

    Raises:
        CIFError: the CIF is empty, has no space-group line, or names an unknown space group.
    """
    if not text or not text.strip():
        raise CIFError("empty CIF")
    try:
        symbol = normalize_space_group(extract_space_group(text))
    except SpaceGroupError as exc:
        raise CIFError(str(exc)) from None
    operators = (IDENTITY,) if symbol == "P1" else symmetry_operators(symbol)
    text = remove_atom_props_block(text)
    text = replace_symmetry_loop(text, operators)
    return text.rstrip("\n") + "\n"
