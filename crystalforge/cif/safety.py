"""Refuse CIF text that would crash or stall the C code behind pymatgen, before it runs.

pymatgen hands cells and coordinates to spglib and NumPy without checking them; a NaN or
infinite cell value, an angle of 0 or 180 degrees, a NaN coordinate or a 400-digit number
kills the whole Python process with SIGSEGV inside spglib, and one 180,000-character line
keeps pymatgen's CIF reader busy for minutes. :func:`check_cif_text` looks at the text
only (no parser, linear time) and raises a one-line :class:`CIFError` naming the first
value that is out of bounds; :func:`check_structure` does the same for a parsed structure
before symmetry analysis. The bounds refuse only what no real crystal has.
"""

from __future__ import annotations

import math
import re

from ..errors import CIFError

#: characters per CIF: a real CIF of the largest cells (a few thousand sites) is far below
MAX_CIF_CHARS = 1_000_000
#: characters per line: the limit the CIF 1.1 syntax sets for every line
MAX_LINE_CHARS = 2048
#: site rows in one ``_atom_site_`` loop
MAX_SITE_ROWS = 5000
#: site rows x symmetry operators: bounds the positions a parser generates before merging
MAX_EXPANDED_POSITIONS = 10000
#: symmetry operators listed in one data block: no space group has more general positions
MAX_SYMMETRY_OPERATORS = 192
#: atoms in a parsed structure handed to symmetry analysis
MAX_ATOMS = 10000
#: digits in one number (a float has 17 significant digits; more is noise or an attack)
MAX_DIGITS = 40
#: cell lengths in Angstrom: real cells are at most a few hundred Angstrom
MAX_CELL_LENGTH = 1.0e4
#: magnitude of a coordinate or occupancy (fractional or Cartesian)
MAX_COORDINATE = 1.0e4
#: smallest allowed (volume / (a b c)): below this the three cell vectors are coplanar
MIN_VOLUME_FACTOR = 1.0e-6

_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:\(\d+\))?")
_LONG_DIGITS_RE = re.compile(r"\d{%d,}" % (MAX_DIGITS + 1))
_DATA_RE = re.compile(r"^[ \t]*data_", re.M | re.I)
_OPERATOR_RE = re.compile(r"^[ \t]*\d+[ \t]+'[^'\n]*'[ \t]*$", re.M)
_LENGTH_KEYS = ("_cell_length_a", "_cell_length_b", "_cell_length_c")
_ANGLE_KEYS = ("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
_OPERATOR_COLUMNS = frozenset({"_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz"})
_BOUNDED_COLUMNS = frozenset({
    "_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z",
    "_atom_site_cartn_x", "_atom_site_cartn_y", "_atom_site_cartn_z", "_atom_site_occupancy",
})


def check_cif_text(cif: str) -> None:
    """Raise :class:`CIFError` when ``cif`` holds a value that could crash or stall a parser.

    Checked, in this order: size (at most :data:`MAX_CIF_CHARS` characters, lines of at
    most :data:`MAX_LINE_CHARS`), no NUL bytes, no number of more than :data:`MAX_DIGITS`
    digits; per data block: every cell field present is a finite number, lengths
    positive, angles strictly between 0 and 180 degrees, a cell of non-zero volume; at most
    :data:`MAX_SYMMETRY_OPERATORS` symmetry operators; site loops of at most
    :data:`MAX_SITE_ROWS` rows whose coordinates and occupancies are finite and bounded,
    and at most :data:`MAX_EXPANDED_POSITIONS` rows x symmetry operators. Fields that are
    absent are left to the parser to report.
    """
    if not isinstance(cif, str):
        raise CIFError(f"CIF must be text, not {type(cif).__name__}")
    if len(cif) > MAX_CIF_CHARS:
        raise CIFError(f"CIF is {len(cif):,} characters, more than the {MAX_CIF_CHARS:,} allowed")
    if "\x00" in cif:
        raise CIFError("binary data, not a CIF")
    longest = max(map(len, cif.splitlines()), default=0)
    if longest > MAX_LINE_CHARS:
        raise CIFError(f"CIF has a line of {longest:,} characters, more than the {MAX_LINE_CHARS} CIF allows")
    long_number = _LONG_DIGITS_RE.search(cif)
    if long_number is not None:
        raise CIFError(f"CIF has a number of {len(long_number.group()):,} digits, more than {MAX_DIGITS}")
    starts = [m.start() for m in _DATA_RE.finditer(cif)] or [0]
    if starts[0] != 0:
        starts.insert(0, 0)
    for begin, end in zip(starts, starts[1:] + [len(cif)]):
        block = cif[begin:end]
        _check_cell(block)
        _check_site_loops(block)


def check_structure(structure) -> None:
    """Raise :class:`CIFError` when a pymatgen ``Structure`` is unsafe for symmetry analysis.

    The lattice must be finite, its lengths at most :data:`MAX_CELL_LENGTH` (a huge cell
    is parsed, and refused by the validators, but not handed to spglib), its volume not
    degenerate, every coordinate finite, and the structure at most :data:`MAX_ATOMS` sites.
    """
    import numpy as np

    if len(structure) > MAX_ATOMS:
        raise CIFError(f"structure has {len(structure):,} sites, more than the {MAX_ATOMS:,} allowed")
    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(matrix)):
        raise CIFError("cell is not finite (NaN or infinite lattice vectors)")
    lengths = np.linalg.norm(matrix, axis=1)
    if np.any(lengths <= 0) or np.any(lengths > MAX_CELL_LENGTH):
        raise CIFError(f"cell lengths {', '.join(f'{x:.4g}' for x in lengths)} A are not positive "
                       f"or beyond {MAX_CELL_LENGTH:g} A")
    volume = abs(float(np.linalg.det(matrix)))
    if not volume > MIN_VOLUME_FACTOR * float(np.prod(lengths)):
        raise CIFError(f"cell volume {volume:.4g} A^3 is degenerate (the cell vectors are coplanar)")
    if len(structure) and not np.all(np.isfinite(structure.frac_coords)):
        raise CIFError("atom coordinates are not finite (NaN or infinite)")


def _value(block: str, key: str) -> str | None:
    match = re.search(rf"^[ \t]*{re.escape(key)}(?:[ \t]+(.*?))?[ \t]*$", block, re.M | re.I)
    if match is None:
        return None
    value = (match.group(1) or "").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return value


def _as_number(text: str, what: str) -> float:
    if not _NUMBER_RE.fullmatch(text):
        raise CIFError(f"{what} is not a number: {text[:40]!r}")
    try:
        number = float(re.sub(r"\(\d+\)$", "", text))
    except (ValueError, OverflowError):  # pragma: no cover - the pattern admits only numbers
        raise CIFError(f"{what} is not a number: {text[:40]!r}") from None
    if not math.isfinite(number):
        raise CIFError(f"{what} is not finite: {text[:40]!r}")
    return number


def _check_cell(block: str) -> None:
    lengths, angles = [], []
    for key in _LENGTH_KEYS:
        raw = _value(block, key)
        if raw is None:
            continue
        length = _as_number(raw, f"cell length {key[-1]}")
        if not length > 0:
            raise CIFError(f"cell length {key[-1]} = {length:g} A is not positive")
        lengths.append(length)
    for key in _ANGLE_KEYS:
        raw = _value(block, key)
        if raw is None:
            continue
        name = key.rsplit("_", 1)[-1]
        angle = _as_number(raw, f"cell angle {name}")
        if not 0 < angle < 180:
            raise CIFError(f"cell angle {name} = {angle:g} degrees is not strictly between 0 and 180")
        angles.append(angle)
    if len(angles) == 3:
        ca, cb, cg = (math.cos(math.radians(x)) for x in angles)
        factor = 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg
        if factor <= MIN_VOLUME_FACTOR**2:
            raise CIFError("cell angles {:g}, {:g}, {:g} give a cell of zero volume".format(*angles))


def _tokens(line: str) -> list[str]:
    """Split a CIF data line on whitespace, keeping quoted values whole (roughly)."""
    return re.findall(r"'[^']*'|\"[^\"]*\"|\S+", line)


def _loops(block: str) -> list[tuple[list[str], list[str]]]:
    """Return ``(column names, values)`` of every ``loop_`` of a data block (names lower case)."""
    lines = block.splitlines()
    loops = []
    i = 0
    while i < len(lines):
        if lines[i].strip().lower() != "loop_":
            i += 1
            continue
        i += 1
        columns: list[str] = []
        while i < len(lines) and lines[i].strip().startswith("_"):
            columns.append(lines[i].split()[0].lower())
            i += 1
        values: list[str] = []
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(("_", "data_")) or stripped.lower() == "loop_":
                break
            if stripped and not stripped.startswith("#"):
                values.extend(_tokens(stripped))
            i += 1
        if columns:
            loops.append((columns, values))
    return loops


def _check_site_loops(block: str) -> None:
    loops = _loops(block)
    operators = max((len(values) // len(columns) for columns, values in loops
                     if any(c in _OPERATOR_COLUMNS for c in columns)), default=0)
    operators = max(operators, len(_OPERATOR_RE.findall(block)), 1)
    if operators > MAX_SYMMETRY_OPERATORS:
        raise CIFError(f"CIF lists {operators:,} symmetry operators; no space group has more than "
                       f"{MAX_SYMMETRY_OPERATORS}")
    for columns, values in loops:
        if not columns[0].startswith("_atom_site_") or columns[0].startswith("_atom_site_aniso"):
            continue
        rows = len(values) // len(columns)
        if rows > MAX_SITE_ROWS:
            raise CIFError(f"CIF has {rows:,} site rows, more than the {MAX_SITE_ROWS:,} allowed")
        if rows * operators > MAX_EXPANDED_POSITIONS:
            raise CIFError(f"{rows} site rows x {operators} symmetry operators is more than the "
                           f"{MAX_EXPANDED_POSITIONS:,} positions allowed")
        bounded = [k for k, column in enumerate(columns) if column in _BOUNDED_COLUMNS]
        for start in range(0, rows * len(columns), len(columns)):
            for k in bounded:
                raw = values[start + k].strip("'\"")
                if raw in ("?", "."):
                    continue
                number = _as_number(raw, f"site value {columns[k]}")
                if abs(number) > MAX_COORDINATE:
                    raise CIFError(f"site value {columns[k]} = {number:g} is beyond +-{MAX_COORDINATE:g}")
