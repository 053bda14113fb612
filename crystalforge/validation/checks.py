"""The built-in validity checks (CrystaLLM's four, plus cell sanity).

Each validator is a small attrs class with typed options and one method,
``check(cif, context) -> CheckResult``. Checks never raise on bad input: a CIF that cannot
be read fails the check with a message saying why. The parsed structure is shared through
the :class:`~crystalforge.validation.report.ValidationContext`.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import attrs

from ..cif.extract import (
    extract_cell,
    extract_data_formula,
    extract_formula,
    extract_formula_structural,
    extract_site_multiplicities,
    extract_space_group,
    normalize_space_group,
    parse_composition,
)
from ..cif.properties import element_properties
from ..errors import CrystalforgeError
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


def _fail(name: str, message: str, score: float | None = None) -> CheckResult:
    return CheckResult(name=name, passed=False, score=score, message=message, required=False)


def _reduced(text: str) -> str:
    composition = parse_composition(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return composition.reduced_formula


def structure_problem(context: "ValidationContext") -> str | None:
    """Return why the context's structure cannot go through heavy analysis, or None.

    Refuses unparsable CIFs, more than :data:`MAX_SITES` sites, non-finite cells, cells
    thinner than :data:`MIN_CELL_HEIGHT` and less than :data:`MIN_VOLUME_PER_ATOM` per atom,
    so CrystalNN and spglib cannot hang on them.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _structure_problem(context)


def _structure_problem(context: "ValidationContext") -> str | None:
    structure = context.structure
    if structure is None:
        return context.parse_error or "CIF could not be parsed"
    from pymatgen.core import Element

    unknown = sorted({getattr(e, "symbol", str(e)) for e in structure.composition.elements if not isinstance(e, Element)})
    if unknown:
        return f"unknown element symbol(s): {', '.join(unknown)}"
    try:
        stated = extract_cell(context.cif)
    except CrystalforgeError:
        stated = None  # the cell was read some other way; the lattice checks below decide
    if stated is not None and min(stated[:3]) <= 0:
        return f"cell length {min(stated[:3]):g} A is not positive"
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


@attrs.define
class FormulaConsistency:
    """The ``data_`` formula, ``_chemical_formula_sum`` and ``_chemical_formula_structural``
    reduce to the same formula."""

    name = "formula_consistency"

    def check(self, cif: str, context: "ValidationContext") -> CheckResult:
        formulas = {}
        for label, getter in (
            ("data_ line", extract_data_formula),
            ("_chemical_formula_sum", extract_formula),
            ("_chemical_formula_structural", extract_formula_structural),
        ):
            try:
                formulas[label] = _reduced(getter(cif))
            except CrystalforgeError as exc:
                return _fail(self.name, f"{label}: {exc}")
        if len(set(formulas.values())) == 1:
            return CheckResult(self.name, True, None, f"formula {next(iter(formulas.values()))}", False)
        detail = ", ".join(f"{label} {formula}" for label, formula in formulas.items())
        return _fail(self.name, f"formulas disagree: {detail}")


@attrs.define
class SiteMultiplicityConsistency:
    """Site multiplicities summed per element equal the counts of ``_chemical_formula_sum``."""

    name = "site_multiplicity"

    def check(self, cif: str, context: "ValidationContext") -> CheckResult:
        try:
            expected = parse_composition(extract_formula(cif))
            counted = extract_site_multiplicities(cif)
        except CrystalforgeError as exc:
            return _fail(self.name, str(exc))
        wanted = {element.symbol: float(amount) for element, amount in expected.element_composition.items()}
        symbols = set(wanted) | set(counted)
        mismatched = [s for s in sorted(symbols) if abs(wanted.get(s, 0.0) - counted.get(s, 0)) > 1e-6]
        if not mismatched:
            return CheckResult(self.name, True, None, "site multiplicities match the formula", False)
        detail = ", ".join(f"{s} sites {counted.get(s, 0)} vs formula {wanted.get(s, 0):g}" for s in mismatched)
        return _fail(self.name, f"multiplicities disagree with _chemical_formula_sum: {detail}")


@attrs.define
class BondLengthReasonableness:
    """CrystalNN bonds within ``tolerance`` of the expected length; score = reasonable / all.

    Expected length: cation + anion average ionic radius when the Pauling electronegativity
    difference is at least ``ionic_difference``, else the sum of atomic radii. Bonds to H
    are reasonable below ``hydrogen_factor`` times the expected length.
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
        structure = context.structure
        try:
            reasonable, total, worst = self._count(structure)
        except Exception as exc:  # noqa: BLE001 - CrystalNN fails on odd structures
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _fail(self.name, f"CrystalNN failed: {detail[:160]}")
        if total == 0:
            return _fail(self.name, "CrystalNN found no bonds", score=0.0)
        score = reasonable / total
        if score >= self.min_score:
            return CheckResult(self.name, True, score, f"all {total} bonds reasonable", False)
        message = f"{total - reasonable} of {total} bonds outside {self.tolerance:.0%} of expected"
        if worst is not None:
            message += f" (worst: {worst})"
        return _fail(self.name, message, score=score)

    def _expected(self, first: str, second: str) -> float:
        x1, radius1, ionic1 = element_properties(first)
        x2, radius2, ionic2 = element_properties(second)
        if abs(x1 - x2) >= self.ionic_difference:
            return ionic1 + ionic2
        return radius1 + radius2

    def _count(self, structure) -> tuple[int, int, str | None]:
        from pymatgen.analysis.local_env import CrystalNN

        finder = CrystalNN()
        reasonable = total = 0
        worst, worst_gap = None, -1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index, site in enumerate(structure):
                own = site.species.elements[0].symbol
                for neighbour in finder.get_nn_info(structure, index):
                    other_site = neighbour["site"]
                    other = other_site.species.elements[0].symbol
                    length = float(((site.coords - other_site.coords) ** 2).sum() ** 0.5)
                    expected = self._expected(own, other)
                    total += 1
                    if expected <= 0:
                        continue  # no radius known: cannot call it reasonable
                    ratio = length / expected
                    if "H" in (own, other):
                        ok = ratio < self.hydrogen_factor
                    else:
                        ok = 1 - self.tolerance < ratio < 1 + self.tolerance
                    if ok:
                        reasonable += 1
                    elif abs(ratio - 1) > worst_gap:
                        worst_gap = abs(ratio - 1)
                        worst = f"{own}-{other} {length:.2f} A vs {expected:.2f} A expected"
        return reasonable, total, worst


@attrs.define
class SpaceGroupConsistency:
    """The stated H-M symbol equals the one spglib detects at ``symprec``."""

    symprec: float = attrs.field(default=0.1, metadata={"help": "symmetry tolerance (A)"})

    name = "space_group"

    def check(self, cif: str, context: "ValidationContext") -> CheckResult:
        try:
            stated = normalize_space_group(extract_space_group(cif))
        except CrystalforgeError as exc:
            return _fail(self.name, str(exc))
        problem = structure_problem(context)
        if problem is not None:
            return _fail(self.name, problem)
        try:
            from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = SpacegroupAnalyzer(context.structure, symprec=self.symprec).get_space_group_symbol()
            detected = normalize_space_group(found)
        except Exception as exc:  # noqa: BLE001 - spglib fails on odd structures
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _fail(self.name, f"symmetry detection failed: {detail[:160]}")
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
