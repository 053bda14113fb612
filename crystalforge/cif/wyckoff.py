"""Which cell compositions a space group can hold, from its Wyckoff positions.

A crystal in space group G puts every atom on some Wyckoff position: a set of points whose
site-symmetry groups are conjugate in G. A position with ``m`` points per conventional cell
adds ``m`` atoms each time it is occupied. A position without free parameters (``dof`` 0,
e.g. Fm-3m's 4a at 0,0,0) is a fixed set of points, so the whole structure can use it at most
once; one with free parameters (``x,0,0``, ``x,y,z``) can be used again and again with other
parameter values. A cell composition fits G when each element's count is a sum of such
multiplicities, every fixed position used at most once in all.

Counts are those of the conventional cell, as CrystaLLM's CIFs (``CifWriter(symprec=0.1)``)
state them in ``_chemical_formula_sum``; rhombohedral groups use the hexagonal cell.

The positions of all 230 groups are derived from spglib's symmetry operations (see
:func:`compute_wyckoff_positions`) and stored in ``crystalforge/assets/wyckoff.json``
by ``scripts/build_wyckoff_table.py``.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import CompositionError, SpaceGroupError

WYCKOFF_ASSET = Path(__file__).resolve().parent.parent / "assets" / "wyckoff.json"

#: grid of the conventional cell the positions are found on: every special position of the
#: 230 groups has coordinates in multiples of 1/24 (1/8, 1/6, 1/4, 1/3, ...)
GRID = 24

#: the largest Z :func:`feasible_z` tries when none are given
DEFAULT_MAX_Z = 24


@dataclass(frozen=True)
class SpaceGroupSites:
    """The Wyckoff positions of one space group: ``(multiplicity, dof)`` per position.

    ``positions`` is sorted by multiplicity, then degrees of freedom; it has one entry per
    Wyckoff position (letter) of the International Tables, the general position last.
    """

    number: int
    symbol: str
    positions: tuple[tuple[int, int], ...]

    @property
    def fixed_multiplicities(self) -> tuple[int, ...]:
        """Multiplicities of the positions without free parameters (each usable once)."""
        return tuple(m for m, dof in self.positions if dof == 0)

    @property
    def free_multiplicities(self) -> tuple[int, ...]:
        """Distinct multiplicities of the positions with free parameters (usable any number of times)."""
        return tuple(sorted({m for m, dof in self.positions if dof > 0}))

    @property
    def smallest_multiplicity(self) -> int:
        """The fewest atoms one occupied position adds."""
        return min(m for m, _ in self.positions)


# --- deriving the positions from symmetry operations ----------------------------------


def compute_wyckoff_positions(number: int) -> tuple[tuple[int, int], ...]:
    """Return the ``(multiplicity, dof)`` of each Wyckoff position of space group ``number``.

    Derived from spglib's operations of the group's standard setting (hexagonal cell for
    rhombohedral groups), centring translations included: every point of a 1/24 grid of the
    conventional cell is mapped by all operations; its orbit size is the multiplicity, the
    dimension of the space its site-symmetry group leaves fixed is ``dof``. Orbits are merged
    into one Wyckoff position when a lattice translation puts a point of one on the fixed
    subspace of a point of the other with the same site symmetry (conjugate site groups).

    Raises:
        SpaceGroupError: ``number`` is not 1-230.
    """
    import numpy as np

    rotations, shifts = _operations(number)
    n = GRID
    axis = np.arange(n)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)  # (P, 3)
    images = (np.einsum("gij,pj->gpi", rotations, points) + shifts[:, None, :]) % n  # (G, P, 3)
    index = (images[..., 0] * n + images[..., 1]) * n + images[..., 2]  # (G, P)
    own = np.arange(len(points))
    orbit_of = index.min(axis=0)  # a canonical point of each point's orbit
    stabilizer = index == own[None, :]  # (G, P): the operations fixing each point
    patterns, mask_of = np.unique(np.packbits(stabilizer, axis=0).T, axis=0, return_inverse=True)
    mask_of = mask_of.reshape(-1)

    parent = {int(o): int(o) for o in np.unique(orbit_of)}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    dof_of_mask: dict[int, int] = {}
    for mask_id in range(len(patterns)):
        members = np.nonzero(mask_of == mask_id)[0]
        ops = np.nonzero(stabilizer[:, members[0]])[0]
        fixed = _fixed_directions(rotations[ops])
        dof_of_mask[mask_id] = len(fixed)
        keys = _component_keys(points[members], fixed, n)
        first_orbit: dict[int, int] = {}
        for key, orbit in zip(keys.tolist(), orbit_of[members].tolist()):
            root = first_orbit.setdefault(key, orbit)
            a, b = find(root), find(orbit)
            if a != b:
                parent[b] = a

    size = len(rotations) // stabilizer.sum(axis=0)  # orbit size of each point
    result: dict[int, tuple[int, int]] = {}
    for p in range(len(points)):
        entry = (int(size[p]), dof_of_mask[int(mask_of[p])])
        previous = result.setdefault(find(int(orbit_of[p])), entry)
        if previous != entry:  # pragma: no cover - would mean the merging rule is wrong
            raise RuntimeError(f"space group {number}: inconsistent Wyckoff position {previous} vs {entry}")
    return tuple(sorted(result.values()))


def _operations(number: int):
    """Return integer rotations (G, 3, 3) and shifts in grid units (G, 3) of a group's standard setting."""
    import warnings

    import numpy as np
    import spglib

    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 230:
        raise SpaceGroupError(f"space-group number {number!r} is out of range; use 1-230")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hall = next(h for h in range(1, 531) if spglib.get_spacegroup_type(h).number == number)
        data = spglib.get_symmetry_from_database(hall)
    rotations = np.asarray(data["rotations"], dtype=np.int64)
    scaled = np.asarray(data["translations"], dtype=float) * GRID
    shifts = np.rint(scaled).astype(np.int64)
    if np.abs(scaled - shifts).max() > 1e-6:  # pragma: no cover - spglib's tables fit the grid
        raise RuntimeError(f"space group {number}: a translation is not a multiple of 1/{GRID}")
    return rotations, shifts % GRID


def _fixed_directions(rotations) -> list[tuple[int, ...]]:
    """Return a basis of the directions all ``rotations`` leave fixed, as small integer vectors."""
    import numpy as np

    constraint = (rotations - np.eye(3, dtype=np.int64)).reshape(-1, 3)
    dof = 3 - int(np.linalg.matrix_rank(constraint))
    if dof in (0, 3):
        return [(1, 0, 0), (0, 1, 0), (0, 0, 1)][:dof]
    basis: list[tuple[int, ...]] = []
    for vector in _small_vectors():
        if np.any(constraint @ np.asarray(vector)):
            continue
        if int(np.linalg.matrix_rank(np.asarray(basis + [vector]))) > len(basis):
            basis.append(vector)
            if len(basis) == dof:
                return basis
    raise RuntimeError("no small integer basis of the fixed space")  # pragma: no cover


@functools.lru_cache(maxsize=1)
def _small_vectors() -> list[tuple[int, ...]]:
    """Primitive integer vectors with entries -2..2, shortest first."""
    vectors = [v for v in itertools.product(range(-2, 3), repeat=3)
               if any(v) and math.gcd(*(abs(c) for c in v)) == 1]
    return sorted(vectors, key=lambda v: (sum(c * c for c in v), v))


def _component_keys(points, fixed: list[tuple[int, ...]], n: int):
    """Return, per grid point, a key equal for two points exactly when their difference lies in
    span(fixed) + lattice, i.e. when they lie on one lattice translate of the same fixed subspace."""
    import numpy as np

    dof = len(fixed)
    if dof == 3:
        return np.zeros(len(points), dtype=np.int64)
    if dof == 0:
        return (points[:, 0] * n + points[:, 1]) * n + points[:, 2]
    if dof == 2:  # a plane: its primitive normal covector tells the parallel planes apart
        normal = np.cross(np.asarray(fixed[0]), np.asarray(fixed[1]))
        normal //= math.gcd(*(abs(int(c)) for c in normal))
        return (points @ normal) % n
    direction = np.asarray(fixed[0])  # a line: the smallest point of the line through each point
    shifted = (points[None, :, :] - np.arange(n)[:, None, None] * direction[None, None, :]) % n
    return ((shifted[..., 0] * n + shifted[..., 1]) * n + shifted[..., 2]).min(axis=0)


# --- the stored table ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _table() -> dict[int, SpaceGroupSites]:
    try:
        raw = json.loads(WYCKOFF_ASSET.read_text())
    except (OSError, ValueError) as exc:  # pragma: no cover - the asset ships with the package
        raise SpaceGroupError(f"cannot read the Wyckoff table {WYCKOFF_ASSET}: {exc}") from None
    return {
        int(number): SpaceGroupSites(int(number), entry["symbol"],
                                     tuple((int(m), int(d)) for m, d in entry["positions"]))
        for number, entry in raw["groups"].items()
    }


@functools.lru_cache(maxsize=1)
def _numbers_by_symbol() -> dict[str, int]:
    return {sites.symbol: number for number, sites in _table().items()}


def space_group_sites(spacegroup: str | int) -> SpaceGroupSites:
    """Return the Wyckoff positions of a space group given by H-M symbol or number (1-230).

    Raises:
        SpaceGroupError: not a known space group (the message suggests close symbols).
    """
    from .extract import normalize_space_group

    symbol = normalize_space_group(spacegroup)
    number = _numbers_by_symbol().get(symbol)
    if number is None:  # pragma: no cover - normalize_space_group returns the table's symbols
        raise SpaceGroupError(f"no Wyckoff table entry for space group {symbol!r}")
    return _table()[number]


# --- feasibility ------------------------------------------------------------------------


def cell_counts(cell: Mapping[str, float] | str) -> dict[str, int]:
    """Return whole, positive atom counts per element (in the given order) of a mapping or formula.

    ``{"Na": 4, "Cl": 4}`` and ``"Na4Cl4"`` both give ``{"Na": 4, "Cl": 4}``; zero counts are dropped.

    Raises:
        CompositionError: a count that is not whole or is negative, an unreadable formula, no atoms.
    """
    if isinstance(cell, str):
        from .extract import parse_composition

        items = parse_composition(cell).items()
    else:
        items = cell.items()
    counts: dict[str, int] = {}
    for element, amount in items:
        name = str(getattr(element, "symbol", element))
        if isinstance(amount, bool) or abs(float(amount) - round(float(amount))) > 1e-6:
            raise CompositionError(f"{name} has {amount!r} atoms; a cell needs whole atom counts")
        if round(float(amount)) < 0:
            raise CompositionError(f"{name} has a negative count {amount!r}")
        if round(float(amount)) > 0:
            counts[name] = counts.get(name, 0) + int(round(float(amount)))
    if not counts:
        raise CompositionError("the composition has no atoms")
    return counts


@functools.lru_cache(maxsize=4096)
def _free_sums(free: tuple[int, ...], limit: int) -> frozenset[int]:
    """Every total up to ``limit`` that is a sum of ``free`` multiplicities (repeats allowed; 0 included)."""
    reachable = [False] * (limit + 1)
    reachable[0] = True
    for total in range(1, limit + 1):
        reachable[total] = any(m <= total and reachable[total - m] for m in free)
    return frozenset(t for t, ok in enumerate(reachable) if ok)


def _fits(counts: Iterable[int], sites: SpaceGroupSites) -> bool:
    """Whether every count is a sum of free multiplicities plus fixed ones, fixed ones used once in all."""
    counts = sorted(counts, reverse=True)
    fixed = sorted(Counter(sites.fixed_multiplicities).items())  # (multiplicity, how many positions)
    free = _free_sums(sites.free_multiplicities, max(counts))
    # a state: how many fixed positions of each multiplicity are already taken
    states = {tuple(0 for _ in fixed)}
    for count in counts:
        next_states = set()
        for state in states:
            ranges = [range(0, available - used + 1) for (_, available), used in zip(fixed, state)]
            for take in itertools.product(*ranges):
                on_fixed = sum(k * m for k, (m, _) in zip(take, fixed))
                if on_fixed <= count and count - on_fixed in free:
                    next_states.add(tuple(u + k for u, k in zip(state, take)))
        if not next_states:
            return False
        states = next_states
    return True


def feasible(cell: Mapping[str, float] | str, spacegroup: str | int) -> bool:
    """Return whether a conventional cell with these atom counts can have space group ``spacegroup``.

    ``cell`` maps elements to atoms per conventional cell (``{"Na": 4, "Cl": 4}``) or
    is a formula string of the cell (``"Na4Cl4"``).

    Raises:
        SpaceGroupError: unknown space group.
        CompositionError: counts that are not whole, positive numbers.
    """
    return _fits(cell_counts(cell).values(), space_group_sites(spacegroup))


def feasible_z(reduced_counts: Mapping[str, float] | str, spacegroup: str | int,
               z_values: Iterable[int] | None = None, max_atoms: int | None = None) -> list[int]:
    """Return the numbers of formula units Z (ascending) for which the cell fits the space group.

    ``reduced_counts`` is one formula unit (``{"Na": 1, "Cl": 1}`` or ``"NaCl"``); Z runs over
    ``z_values`` (default 1 to :data:`DEFAULT_MAX_Z`), skipping cells of more than
    ``max_atoms`` atoms.

    Raises:
        SpaceGroupError: unknown space group.
        CompositionError: counts that are not whole, positive numbers.
    """
    counts = list(cell_counts(reduced_counts).values())
    sites = space_group_sites(spacegroup)
    zs = range(1, DEFAULT_MAX_Z + 1) if z_values is None else sorted({int(z) for z in z_values})
    found = []
    for z in zs:
        if z < 1 or (max_atoms is not None and z * sum(counts) > max_atoms):
            continue
        if _fits([c * z for c in counts], sites):
            found.append(z)
    return found


def infeasibility_reason(cell: Mapping[str, float] | str, spacegroup: str | int) -> str | None:
    """Return one line saying why the cell cannot have this space group, or None when it can.

    For example ``Fm-3m cannot hold Na1Cl1 (Z=1): its smallest site multiplicity is 4; try Z=4``.

    Raises:
        SpaceGroupError: unknown space group.
        CompositionError: counts that are not whole, positive numbers.
    """
    counts = cell_counts(cell)
    sites = space_group_sites(spacegroup)
    if _fits(counts.values(), sites):
        return None
    z = math.gcd(*counts.values())
    formula = "".join(f"{element}{count}" for element, count in counts.items())
    head = f"{sites.symbol} cannot hold {formula} (Z={z})"
    smallest = sites.smallest_multiplicity
    fewest = min(counts, key=counts.get)
    if counts[fewest] < smallest:
        why = f"its smallest site multiplicity is {smallest}, but the cell has {counts[fewest]} {fewest}"
        if smallest > 1 and all(c < smallest for c in counts.values()):
            why = f"its smallest site multiplicity is {smallest}"
    else:
        multiplicities = ", ".join(str(m) for m in sorted({m for m, _ in sites.positions}))
        fixed = ", ".join(str(m) for m in sites.fixed_multiplicities) or "none"
        why = (f"the counts are not sums of its site multiplicities {multiplicities} "
               f"(the fixed sites {fixed} at most once each)")
    reduced = {element: count // z for element, count in counts.items()}
    others = feasible_z(reduced, sites.number)
    if others:
        shown = [str(v) for v in others[:3]]
        hint = "try Z=" + (shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1])
    else:
        hint = f"no Z up to {DEFAULT_MAX_Z} fits; try another space group"
    return f"{head}: {why}; {hint}"


__all__ = [
    "DEFAULT_MAX_Z",
    "SpaceGroupSites",
    "cell_counts",
    "compute_wyckoff_positions",
    "feasible",
    "feasible_z",
    "infeasibility_reason",
    "space_group_sites",
]
