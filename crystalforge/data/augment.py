"""Symmetry-preserving augmentation: one structure written as several equivalent canonical CIFs.

The canonical training form (:func:`crystalforge.cif.preprocess.preprocess_cif`) lists one
representative site per Wyckoff orbit and a collapsed operator loop; the decoder
(:func:`crystalforge.cif.postprocess.postprocess_cif`) restores the space group's operators
and expands each representative to its orbit. A variant changes only the site loop, in
three ways that leave the decoded crystal unchanged:

* **orbit representative**: any member ``g(x)`` of a site's orbit, ``g`` one of the
  operators the decoder applies, expands to the same orbit;
* **origin shift**: every site moved by a translation ``t`` of the group's Euclidean
  normalizer, i.e. one for which ``x -> x + t`` maps the decoder's operator set onto itself
  (``tau + (1 - R) t`` is again a translation part of rotation ``R``, modulo lattice
  vectors); the decoded structure is the original translated by ``t``;
* **site order**: the rows permuted (labels renumbered in the new order, as CifWriter numbers them).

Everything else -- cell, formula, Z, multiplicities, the atom-properties block, the
space-group line, 4-decimal rounding -- is the text ``preprocess_cif`` wrote. Structures
whose stated multiplicities the decoder's operators do not reproduce are not varied.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from typing import Sequence

import numpy as np

from ..errors import CIFError

logger = logging.getLogger(__name__)

#: the kinds of variation, in the order they are applied
KINDS = ("orbit", "origin", "order")
#: origin shifts are looked for on this grid of the cell (covers 1/2, 1/3, 1/4, 1/6, 1/8)
SHIFT_GRID = 24
_TOLERANCE = 2e-3
_COORD_COLUMNS = ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z")
_ELEMENT_RE = re.compile(r"[A-Z][a-z]?")  # "Fe" of "Fe2+": CifWriter labels sites by element


@functools.lru_cache(maxsize=256)
def decoder_operators(space_group: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rotations (n, 3, 3), translations (n, 3))`` of the operators the decoder applies.

    They are :func:`crystalforge.cif.symmetry.symmetry_operators` of the symbol (the identity
    alone for P1), so a variant expands exactly as ``postprocess_cif`` makes it expand.

    Raises:
        SpaceGroupError: unknown space group.
    """
    from pymatgen.core.operations import SymmOp

    from ..cif.extract import normalize_space_group
    from ..cif.symmetry import IDENTITY, symmetry_operators

    symbol = normalize_space_group(space_group)
    strings = (IDENTITY,) if symbol == "P1" else symmetry_operators(symbol)
    matrices = [SymmOp.from_xyz_str(op).affine_matrix for op in strings]
    rotations = np.array([m[:3, :3] for m in matrices])
    translations = np.array([m[:3, 3] for m in matrices]) % 1.0
    return rotations, translations


def _periodic_close(a: np.ndarray, b: np.ndarray, tolerance: float = _TOLERANCE) -> np.ndarray:
    """Return whether fractional vectors ``a`` and ``b`` agree modulo 1 (broadcasting, last axis)."""
    delta = (a - b) % 1.0
    return np.all(np.minimum(delta, 1.0 - delta) < tolerance, axis=-1)


@functools.lru_cache(maxsize=256)
def origin_shifts(space_group: str, grid: int = SHIFT_GRID) -> tuple[tuple[float, float, float], ...]:
    """Return the origin shifts (on a ``1/grid`` mesh of the cell) that keep the decoder's operators.

    A shift ``t`` qualifies when, for every operator ``(R, tau)``, ``(R, tau + (1 - R) t)``
    is again one of the operators modulo lattice translations: the translation part of the
    group's Euclidean normalizer in this setting (continuous for polar axes, sampled on the
    mesh). The zero shift comes first.

    Raises:
        SpaceGroupError: unknown space group.
    """
    rotations, translations = decoder_operators(space_group)
    steps = np.arange(grid) / grid
    candidates = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    keep = np.ones(len(candidates), dtype=bool)
    for rotation, translation in zip(rotations, translations):
        same_rotation = translations[np.all(np.isclose(rotations, rotation), axis=(1, 2))]
        moved = translation + candidates @ (np.eye(3) - rotation).T  # (N, 3)
        hit = np.zeros(len(candidates), dtype=bool)
        for other in same_rotation:
            hit |= _periodic_close(moved, other)
        keep &= hit
        if not keep.any():  # pragma: no cover - the zero shift always qualifies
            break
    return tuple(tuple(float(v) for v in t) for t in candidates[keep])


def orbit(point: Sequence[float], space_group: str) -> np.ndarray:
    """Return the distinct images (in ``[0, 1)``) of a fractional point under the decoder's operators."""
    rotations, translations = decoder_operators(space_group)
    images = (np.einsum("nij,j->ni", rotations, np.asarray(point, dtype=float)) + translations) % 1.0
    distinct: list[np.ndarray] = []
    for image in images:
        if not any(_periodic_close(image, seen) for seen in distinct):
            distinct.append(image)
    return np.array(distinct)


def _format_coordinate(value: float) -> str:
    text = f"{value % 1.0:.4f}"
    return "0.0000" if text in ("1.0000", "-0.0000") else text


class _SiteLoop:
    """The ``_atom_site_`` loop of a canonical CIF: where its rows are and what they hold."""

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        for start, line in enumerate(self.lines):
            if line.strip() != "loop_":
                continue
            columns: list[str] = []
            index = start + 1
            while index < len(self.lines) and self.lines[index].strip().startswith("_"):
                columns.append(self.lines[index].split()[0])
                index += 1
            if columns and columns[0].startswith("_atom_site_"):
                break
        else:
            raise CIFError("CIF has no _atom_site_ loop")
        self.columns = columns
        self.first_row = index
        rows = []
        while index < len(self.lines) and self.lines[index].strip() and \
                not self.lines[index].strip().startswith(("_", "loop_", "data_", "#")):
            rows.append(self.lines[index].split())
            index += 1
        self.end = index
        if not rows or any(len(row) != len(columns) for row in rows):
            raise CIFError("CIF site loop has no rows or ragged rows")
        missing = [c for c in (*_COORD_COLUMNS, "_atom_site_symmetry_multiplicity", "_atom_site_type_symbol",
                               "_atom_site_label") if c not in columns]
        if missing:
            raise CIFError(f"CIF site loop lacks {', '.join(missing)}")
        self.rows = rows
        self.coordinate_index = [columns.index(c) for c in _COORD_COLUMNS]
        self.multiplicity_index = columns.index("_atom_site_symmetry_multiplicity")
        self.symbol_index = columns.index("_atom_site_type_symbol")
        self.label_index = columns.index("_atom_site_label")

    def coordinates(self) -> np.ndarray:
        try:
            return np.array([[float(row[i]) for i in self.coordinate_index] for row in self.rows])
        except ValueError:
            raise CIFError("CIF site coordinates are not plain numbers") from None

    def render(self, order: Sequence[int], coordinates: np.ndarray) -> str:
        """Return the text with rows in ``order``, new coordinates and labels numbered as CifWriter does."""
        new_rows = []
        for position, old in enumerate(order):
            row = list(self.rows[old])
            for column, value in zip(self.coordinate_index, coordinates[old]):
                row[column] = _format_coordinate(value)
            element = _ELEMENT_RE.match(row[self.symbol_index])
            row[self.label_index] = f"{element.group() if element else row[self.symbol_index]}{position}"
            new_rows.append("  ".join(row))
        return "\n".join(self.lines[: self.first_row] + new_rows + self.lines[self.end:])


def augment_cif(cif: str, k: int, *, seed: int | str = 0, kinds: Sequence[str] = KINDS,
                attempts_per_variant: int = 20) -> list[str]:
    """Return up to ``k`` distinct canonical texts of the structure of ``cif``, the original first.

    ``cif`` is a canonical training CIF (``preprocess_cif`` output). Variants are drawn at
    random with ``seed`` (same seed, same list) from the ``kinds`` of variation (see the
    module docstring); fewer than ``k`` come back when the structure has fewer distinct texts
    (a cubic perovskite has few) or none could be found in ``attempts_per_variant * k`` draws.
    A structure whose decoded orbits would not reproduce its stated multiplicities comes
    back alone.

    Raises:
        CIFError: the text has no readable site loop or space group.
        OptionError: ``k`` below 1 or an unknown kind.
    """
    from ..cif.extract import extract_space_group
    from ..errors import OptionError, SpaceGroupError

    if k < 1:
        raise OptionError(f"--augment must be at least 1, got {k}")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise OptionError(f"unknown augmentation kind {unknown[0]!r}; kinds are {', '.join(KINDS)}")
    if k == 1:
        return [cif]
    try:
        space_group = extract_space_group(cif)
        shifts = origin_shifts(space_group) if "origin" in kinds else ((0.0, 0.0, 0.0),)
        loop = _SiteLoop(cif)
        coordinates = loop.coordinates()
        # rows of one disordered site share coordinates: they move together
        keys = [tuple(row[i] for i in loop.coordinate_index) for row in loop.rows]
        site_of_row = [list(dict.fromkeys(keys)).index(key) for key in keys]
        first_row = {site: row for row, site in reversed(list(enumerate(site_of_row)))}
        orbits = [orbit(coordinates[first_row[site]], space_group) for site in range(len(first_row))]
    except SpaceGroupError as exc:
        raise CIFError(str(exc)) from None
    stated = [int(float(loop.rows[first_row[site]][loop.multiplicity_index])) for site in range(len(orbits))]
    if [len(o) for o in orbits] != stated:
        logger.debug("decoded orbits %s differ from multiplicities %s; not augmented", [len(o) for o in orbits], stated)
        return [cif]
    rng = random.Random(f"augment:{seed}")
    variants = [cif]
    seen = {cif}
    for _ in range(attempts_per_variant * k):
        if len(variants) >= k:
            break
        shift = np.array(shifts[rng.randrange(len(shifts))])
        if "orbit" in kinds:
            per_site = [o[rng.randrange(len(o))] for o in orbits]
            chosen = np.array([per_site[site] for site in site_of_row])
        else:
            chosen = coordinates
        order = list(range(len(loop.rows)))
        if "order" in kinds:
            rng.shuffle(order)
        text = loop.render(order, chosen + shift)
        if text not in seen:
            seen.add(text)
            variants.append(text)
    return variants


def _augment_task(item: tuple[str, str, int, int, tuple[str, ...]]) -> list[str]:
    name, cif, k, seed, kinds = item
    return augment_cif(cif, k, seed=f"{seed}:{name}", kinds=kinds)


def parse_kinds(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Return the kinds of variation named by ``"orbit,order"`` (or a sequence), all by default.

    Raises:
        OptionError: an unknown kind, or none named.
    """
    from ..errors import OptionError

    if text is None:
        return KINDS
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text) if part.strip()]
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise OptionError(f"unknown augmentation kind {unknown[0]!r}; kinds are {', '.join(KINDS)}")
    if not names:
        raise OptionError(f"name at least one augmentation kind of {', '.join(KINDS)}")
    return tuple(kind for kind in KINDS if kind in names)


def augment_items(items: Sequence[tuple[str, str]], k: int, *, seed: int = 0, workers: int = 1,
                  progress: bool = True, kinds: Sequence[str] = KINDS,
                  ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Return ``(augmented items, failures)``: up to ``k`` texts per item, shuffled with ``seed``.

    The original keeps its name; variant ``i`` is named ``<name>__aug<i>``. The whole list is
    shuffled (seeded) so that variants of one structure rarely share a training window. An
    item that cannot be augmented is kept alone and listed in ``failures`` as
    ``(name, error)``. Deterministic for the same items, ``k``, ``seed`` and ``kinds`` (the
    kinds of variation used, see :func:`augment_cif`).

    Raises:
        OptionError: ``k`` below 1, an unknown kind.
    """
    from ..errors import OptionError
    from ..parallel import imap_progress

    if k < 1:
        raise OptionError(f"--augment must be at least 1, got {k}")
    kinds = parse_kinds(kinds)
    if k == 1:
        return list(items), []
    tasks = [(name, text, k, seed, kinds) for name, text in items]
    out: list[tuple[str, str]] = []
    failures: list[tuple[str, str]] = []
    results = imap_progress(_augment_task, tasks, workers=workers, total=len(tasks), description="augment",
                            progress=progress)
    for (name, text), (ok, value) in zip(items, results):
        if not ok:
            failures.append((name, str(value)))
            out.append((name, text))
            continue
        out.extend((name if i == 0 else f"{name}__aug{i}", variant) for i, variant in enumerate(value))
    random.Random(f"shuffle:{seed}").shuffle(out)
    return out, failures


_AUG_SUFFIX_RE = re.compile(r"__aug\d+$")


def original_name(name: str) -> str:
    """Return the name of the structure an augmented item was made from."""
    return _AUG_SUFFIX_RE.sub("", name)
