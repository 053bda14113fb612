"""The built-in validity checks: CrystaLLM's four, verdict for verdict, plus cell sanity.

Each validator is a small attrs class with typed options and one method,
``check(cif, context) -> CheckResult``. Checks never raise on bad input: a CIF that cannot
be read fails the check with a message saying why. The parsed structure and the CIF's
data blocks are shared through the
:class:`~crystalforge.validation.report.ValidationContext`.

The four required checks give CrystaLLM's verdicts exactly: the same pymatgen readers
(``CifParser`` for the fields, ``Structure.from_str`` for the structure), the same
neighbours (``CrystalNN()``), the same expected bond lengths and the same symbol
comparison. ``tests/test_crystallm_golden.py`` pins them to verdicts recorded from the
original code. Where this module refuses a structure CrystaLLM would analyse, the cell is
physically impossible (non-finite or non-positive lengths, an angle outside (0, 180)
degrees, a degenerate volume) or too large to analyse in bounded time.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from typing import TYPE_CHECKING, Any

import attrs

from ..cif.extract import extract_cell, normalize_space_group
from ..errors import CIFError, CrystalforgeError
from .report import CheckResult

if TYPE_CHECKING:  # pragma: no cover
    from .report import ValidationContext

#: Limits that keep CrystalNN and spglib from running for ever on absurd structures.
MAX_SITES = 500
MIN_VOLUME_PER_ATOM = 0.1  # cubic Angstrom
MIN_CELL_HEIGHT = 0.1  # Angstrom between opposite cell faces
# CrystalNN's Voronoi search may widen to the cell's longest diagonal D; the atoms it then
# tessellates are about (4/3) pi D^3 / (volume per atom). Compact cells stay near 22 per site.
MAX_NEIGHBOUR_POINTS = 20000
#: the data_ line as CrystaLLM reads it: letters and digits right up to the line's end
DATA_FORMULA_RE = re.compile(r"data_([A-Za-z0-9]+)\n")


def _fail(name: str, message: str, score: float | None = None) -> CheckResult:
    return CheckResult(name=name, passed=False, score=score, message=message, required=False)


def structure_problem(context: "ValidationContext") -> str | None:
    """Return why the context's structure cannot go through heavy analysis, or None.

    Refuses unparsable CIFs, more than :data:`MAX_SITES` sites, non-finite cells, lengths
    that are not positive, angles outside (0, 180) degrees, cells thinner than
    :data:`MIN_CELL_HEIGHT` and less than :data:`MIN_VOLUME_PER_ATOM` per atom, so CrystalNN
    and spglib cannot hang on them.
    """
    if "structure_problem" not in context.cache:  # the bond and space-group checks both ask
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            context.cache["structure_problem"] = _structure_problem(context)
    return context.cache["structure_problem"]


def _structure_problem(context: "ValidationContext") -> str | None:
    structure = context.structure
    if structure is None:
        return context.parse_error or "CIF could not be parsed"
    from ..cif.preprocess import unknown_species

    unknown = unknown_species(structure.composition.elements)
    if unknown:
        return f"unknown element symbol(s): {', '.join(unknown)}"
    try:
        stated = extract_cell(context.cif)
    except CrystalforgeError:
        stated = None  # the cell was read some other way; the lattice checks below decide
    if stated is not None and min(stated[:3]) <= 0:
        return f"cell length {min(stated[:3]):g} A is not positive"
    if stated is not None and not all(0 < angle < 180 for angle in stated[3:]):
        outside = next(angle for angle in stated[3:] if not 0 < angle < 180)
        return f"cell angle {outside:g} deg is outside (0, 180)"
    count = len(structure)
    if count > MAX_SITES:
        return f"{count} sites in the cell, more than the {MAX_SITES} this check analyses"
    lattice = structure.lattice
    try:
        volume = float(lattice.volume)
        matrix = lattice.matrix
        finite = all(math.isfinite(float(v)) for v in matrix.flat) and math.isfinite(volume)
    except Exception:  # noqa: BLE001 - a broken lattice is a failed check, not a crash
        return "cell matrix cannot be evaluated"
    if not finite:
        return "cell has non-finite lengths or angles"
    if volume <= 0:
        return f"cell volume {volume:.4g} A^3 is not positive"
    if volume / count < MIN_VOLUME_PER_ATOM:
        return f"volume per atom {volume / count:.3g} A^3 is below {MIN_VOLUME_PER_ATOM} A^3"
    import numpy as np

    with np.errstate(all="ignore"):
        a, b, c = matrix
        heights = [volume / np.linalg.norm(np.cross(u, v)) for u, v in ((b, c), (c, a), (a, b))]
        diagonal = max(np.linalg.norm(a * i + b * j + c * k) for i, j, k in ((1, 1, 1), (-1, 1, 1), (1, -1, 1), (1, 1, -1)))
        points = 4.0 / 3.0 * math.pi * float(diagonal) ** 3 / (volume / count)
    if not all(math.isfinite(h) for h in heights) or min(heights) < MIN_CELL_HEIGHT:
        return f"cell is degenerate (thickness {min(heights):.3g} A below {MIN_CELL_HEIGHT} A)"
    if not math.isfinite(points) or points > MAX_NEIGHBOUR_POINTS:
        return (f"cell too sparse or elongated for neighbour analysis (diagonal {float(diagonal):.4g} A, "
                f"{volume / count:.4g} A^3 per atom)")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def cif_blocks(context: "ValidationContext") -> list[dict[str, Any]]:
    """Return the CIF's data blocks (tag -> value, loops as lists) as pymatgen's ``CifParser``
    reads them; parsed once per context and shared by the checks.

    Raises:
        CIFError: pymatgen cannot read the text as CIF, or it has no data block.
    """
    if "cif_blocks" not in context.cache:
        try:
            blocks = list(context.cif_parser().as_dict().values())
            context.cache["cif_blocks"] = blocks if blocks else CIFError("CIF has no data block")
        except Exception as exc:  # noqa: BLE001 - any parser failure fails the checks that need it
            context.cache["cif_blocks"] = CIFError(f"pymatgen cannot read the CIF: {_first_line(exc)}")
    blocks = context.cache["cif_blocks"]
    if isinstance(blocks, Exception):
        raise blocks
    return blocks


def _first_block_value(context: "ValidationContext", tag: str) -> Any:
    block = cif_blocks(context)[0]
    if tag not in block:
        raise CIFError(f"CIF has no {tag} field")
    return block[tag]


def _composition(formula: Any):
    from pymatgen.core import Composition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Composition(formula)


@attrs.define
class FormulaConsistency:
    """The ``data_`` formula, ``_chemical_formula_sum`` and ``_chemical_formula_structural``
    have the same reduced formula (pymatgen's ``Composition.reduced_formula``)."""

    name = "formula_consistency"

    def check(self, cif: str, context: "ValidationContext") -> CheckResult:
        formulas = {}
        label = "data_ line"
        try:
            match = DATA_FORMULA_RE.search(cif)
            if match is None:
                raise CIFError("no data_ line of letters and digits")
            formulas[label] = _composition(match.group(1)).reduced_formula
            for label in ("_chemical_formula_sum", "_chemical_formula_structural"):
                formulas[label] = _composition(_first_block_value(context, label)).reduced_formula
        except Exception as exc:  # noqa: BLE001 - an unreadable formula fails the check
            return _fail(self.name, f"{label}: {_first_line(exc)}")
        if len(set(formulas.values())) == 1:
            return CheckResult(self.name, True, None, f"formula {next(iter(formulas.values()))}", False)
        detail = ", ".join(f"{label} {formula}" for label, formula in formulas.items())
        return _fail(self.name, f"formulas disagree: {detail}")


@attrs.define
class SiteMultiplicityConsistency:
    """Site multiplicities summed per ``_atom_site_type_symbol`` equal the counts of
    ``_chemical_formula_sum``, exactly."""

    name = "site_multiplicity"

    def check(self, cif: str, context: "ValidationContext") -> CheckResult:
        try:
            wanted = _composition(_first_block_value(context, "_chemical_formula_sum")).as_dict()
            counted: dict[str, int] = {}
            for block in cif_blocks(context):
                if "_atom_site_type_symbol" in block and "_atom_site_symmetry_multiplicity" in block:
                    for symbol, multiplicity in zip(block["_atom_site_type_symbol"],
                                                    block["_atom_site_symmetry_multiplicity"]):
                        counted[symbol] = counted.get(symbol, 0) + int(multiplicity)
        except Exception as exc:  # noqa: BLE001 - unreadable fields fail the check
            return _fail(self.name, _first_line(exc))
        if wanted == counted:
            return CheckResult(self.name, True, None, "site multiplicities match the formula", False)
        mismatched = sorted(s for s in set(wanted) | set(counted) if wanted.get(s, 0) != counted.get(s, 0))
        detail = ", ".join(f"{s} sites {counted.get(s, 0)} vs formula {wanted.get(s, 0):g}" for s in mismatched)
        return _fail(self.name, f"multiplicities disagree with _chemical_formula_sum: {detail}")


@functools.lru_cache(maxsize=4096)
def expected_bond_length(first, second, ionic_difference: float = 1.7) -> float:
    """Return the bond length CrystaLLM expects between two species (Angstrom).

    An ionic pair (Pauling electronegativity gap at least ``ionic_difference``) expects the
    less electronegative species' ``average_cationic_radius`` plus the other's
    ``average_anionic_radius``; any other pair (a NaN electronegativity included) the sum
    of the atomic radii.

    Raises:
        TypeError: an atomic radius is unknown (pymatgen gives ``None``, e.g. for He).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if abs(first.X - second.X) >= ionic_difference:
            if first.X < second.X:
                return float(first.average_cationic_radius + second.average_anionic_radius)
            return float(first.average_anionic_radius + second.average_cationic_radius)
        return float(first.atomic_radius + second.atomic_radius)


@attrs.define
class BondLengthReasonableness:
    """CrystalNN bonds within ``tolerance`` of the expected length; score = reasonable / counted.

    For every site, pymatgen's ``CrystalNN()`` (default settings) gives the neighbours; a
    neighbour that is an image of the site itself is skipped. The length is the
    minimum-image distance between the two sites, the expected length
    :func:`expected_bond_length`. A bond is reasonable when length / expected lies strictly
    within ``1 +- tolerance``; a bond to H when the ratio is below ``hydrogen_factor``.
    When no bond is counted the check fails without a score.
    """

    tolerance: float = attrs.field(default=0.32, metadata={"help": "allowed relative deviation"})
    hydrogen_factor: float = attrs.field(default=2.5, metadata={"help": "upper ratio for bonds to H"})
    ionic_difference: float = attrs.field(default=1.7, metadata={"help": "electronegativity gap for ionic radii"})
    min_score: float = attrs.field(default=1.0, metadata={"help": "score needed to pass"})

    name = "bond_length"

    def check(self, cif: str, context: "ValidationContext") -> CheckResult:
        problem = structure_problem(context)
        if problem is not None:
            return _fail(self.name, problem)
        try:
            reasonable, total, worst = self._count(context.structure)
        except Exception as exc:  # noqa: BLE001 - CrystalNN and missing radii fail the check
            return _fail(self.name, f"bond lengths cannot be judged: {_first_line(exc)}")
        if total == 0:
            return _fail(self.name, "CrystalNN found no bonds between distinct sites")
        score = reasonable / total
        if score >= self.min_score:
            return CheckResult(self.name, True, score, f"all {total} bonds reasonable", False)
        message = f"{total - reasonable} of {total} bonds outside {self.tolerance:.0%} of expected"
        if worst is not None:
            message += f" (worst: {worst})"
        return _fail(self.name, message, score=score)

    def _count(self, structure) -> tuple[int, int, str | None]:
        """Return ``(reasonable bonds, counted bonds, worst bond)`` over the whole cell.

        CrystalNN's neighbours (:class:`~crystalforge.validation.neighbours.NeighbourFinder`,
        the same set as ``CrystalNN().get_nn_info``) are found once per set of
        symmetry-equivalent sites (see :func:`equivalent_site_groups`) and each bond counts
        as often as the set has sites: the same totals as a pass over every site, in a
        fraction of the time.
        """
        import numpy as np
        from pymatgen.util.coord import pbc_shortest_vectors

        from .neighbours import NeighbourFinder

        finder = NeighbourFinder(structure)
        lattice = structure.lattice
        reasonable = total = 0
        worst, worst_gap = None, -1.0
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            for index, weight in equivalent_site_groups(structure):
                site = structure[index]
                neighbours = [(j, coords) for j, coords in finder.neighbours(index) if j != index]
                if not neighbours:
                    continue
                _, squared = pbc_shortest_vectors(lattice, site.frac_coords,
                                                  np.array([coords for _, coords in neighbours]), return_d2=True)
                own = site.specie
                for (j, _), length in zip(neighbours, np.sqrt(squared[0])):
                    other = structure[j].specie
                    expected = expected_bond_length(own, other, self.ionic_difference)
                    ratio = length / np.float64(expected)
                    if "H" in (own.symbol, other.symbol):
                        ok = ratio < self.hydrogen_factor
                    else:
                        ok = 1 - self.tolerance < ratio < 1 + self.tolerance
                    total += weight
                    if ok:
                        reasonable += weight
                    elif abs(ratio - 1) > worst_gap:
                        worst_gap = float(abs(ratio - 1))
                        worst = f"{own.symbol}-{other.symbol} {length:.2f} A vs {expected:.2f} A expected"
        return reasonable, total, worst


#: tolerance (A) under which sites count as images of each other; far below any length
#: the bond check can tell apart, so an image's CrystalNN bonds are the site's own
EQUIVALENCE_SYMPREC = 1e-5


def equivalent_site_groups(structure) -> list[tuple[int, int]]:
    """Return ``(representative site index, number of sites)`` per set of sites that the
    structure's own symmetry maps onto each other (spglib at :data:`EQUIVALENCE_SYMPREC`).

    Every site is its own set when spglib finds no symmetry or fails.
    """
    try:
        import spglib

        species = [site.specie for site in structure]
        kinds = {specie: number for number, specie in enumerate(dict.fromkeys(species))}
        cell = (structure.lattice.matrix, structure.frac_coords, [kinds[specie] for specie in species])
        dataset = spglib.get_symmetry_dataset(cell, symprec=EQUIVALENCE_SYMPREC, angle_tolerance=-1)
        labels = [int(label) for label in dataset.equivalent_atoms]
    except Exception:  # noqa: BLE001 - no symmetry information: analyse every site
        return [(index, 1) for index in range(len(structure))]
    counts: dict[int, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return sorted(counts.items())


@attrs.define
class SpaceGroupConsistency:
    """The stated ``_symmetry_space_group_name_H-M`` equals, character for character (outer
    spaces aside), the symbol ``SpacegroupAnalyzer(structure, symprec).get_space_group_symbol()``
    detects."""

    symprec: float = attrs.field(default=0.1, metadata={"help": "symmetry tolerance (A)"})

    name = "space_group"

    def check(self, cif: str, context: "ValidationContext") -> CheckResult:
        try:
            stated = str(_first_block_value(context, "_symmetry_space_group_name_H-M")).strip()
        except CrystalforgeError as exc:
            return _fail(self.name, str(exc))
        try:
            normalize_space_group(stated)
        except CrystalforgeError as exc:
            return _fail(self.name, str(exc))
        problem = structure_problem(context)
        if problem is not None:
            return _fail(self.name, problem)
        try:
            from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                detected = SpacegroupAnalyzer(context.structure, symprec=self.symprec).get_space_group_symbol().strip()
        except Exception as exc:  # noqa: BLE001 - spglib fails on odd structures
            return _fail(self.name, f"symmetry detection failed: {_first_line(exc)}")
        if detected == stated:
            return CheckResult(self.name, True, None, f"space group {stated}", False)
        return _fail(self.name, f"stated {stated}, detected {detected} at symprec {self.symprec}")


@attrs.define
class CellSanity:
    """Cell lengths within ``min_length``-``max_length`` A, angles within ``min_angle``-``max_angle``."""

    min_length: float = attrs.field(default=0.5, metadata={"help": "shortest cell length (A)"})
    max_length: float = attrs.field(default=1000.0, metadata={"help": "longest cell length (A)"})
    min_angle: float = attrs.field(default=10.0, metadata={"help": "smallest cell angle (deg)"})
    max_angle: float = attrs.field(default=170.0, metadata={"help": "largest cell angle (deg)"})

    name = "cell_sanity"

    def check(self, cif: str, context: "ValidationContext") -> CheckResult:
        try:
            a, b, c, alpha, beta, gamma = extract_cell(cif)
        except CrystalforgeError as exc:
            return _fail(self.name, str(exc))
        problems = [
            f"{label} = {value:g} A" for label, value in (("a", a), ("b", b), ("c", c))
            if not self.min_length <= value <= self.max_length
        ]
        problems += [
            f"{label} = {value:g} deg" for label, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma))
            if not self.min_angle <= value <= self.max_angle
        ]
        if not problems:
            return CheckResult(self.name, True, None, "cell lengths and angles sensible", False)
        return _fail(
            self.name,
            f"outside {self.min_length:g}-{self.max_length:g} A / {self.min_angle:g}-{self.max_angle:g} deg: "
            + ", ".join(problems),
        )
