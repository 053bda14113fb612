"""The perovskite validators: Goldschmidt tolerance factor and octahedral factor."""

from __future__ import annotations

from typing import Any

import attrs

from crystalforge.validation.report import CheckResult

from .radii import NOT_ABX3, NotABX3, RadiusUnavailable, sites_of_structure


def _sites(name: str, context: Any):
    """Return the ABX3 sites of the context's structure, or the CheckResult that ends the check."""
    structure = context.structure
    if structure is None:
        return None, CheckResult(name, False, None, context.parse_error or "CIF could not be parsed")
    try:
        return sites_of_structure(structure), None
    except NotABX3:
        return None, CheckResult(name, True, None, NOT_ABX3)
    except RadiusUnavailable as exc:
        return None, CheckResult(name, False, None, f"ABX3, but {exc}")


@attrs.define
class ToleranceFactor:
    """Goldschmidt tolerance factor of ABX3 candidates from Shannon radii (score: t)."""

    lower: float = attrs.field(default=0.8, metadata={"help": "t must be above this"})
    upper: float = attrs.field(default=1.1, metadata={"help": "t must be below this"})

    def check(self, cif: str, context: Any) -> CheckResult:
        """Return passed when lower < t < upper (non-ABX3: passed, not applicable)."""
        sites, ended = _sites("tolerance_factor", context)
        if ended is not None:
            return ended
        t = sites.tolerance_factor
        passed = self.lower < t < self.upper
        verdict = "within" if passed else "outside"
        return CheckResult("tolerance_factor", passed, round(t, 4),
                           f"t = {t:.3f} {verdict} ({self.lower}, {self.upper}); {sites.describe()}")


@attrs.define
class OctahedralFactor:
    """Octahedral factor mu = r_B / r_X of ABX3 candidates from Shannon radii (score: mu)."""

    lower: float = attrs.field(default=0.41, metadata={"help": "mu must be at least this"})
    upper: float = attrs.field(default=0.90, metadata={"help": "mu must be at most this"})

    def check(self, cif: str, context: Any) -> CheckResult:
        """Return passed when lower <= mu <= upper (non-ABX3: passed, not applicable)."""
        sites, ended = _sites("octahedral_factor", context)
        if ended is not None:
            return ended
        mu = sites.octahedral_factor
        passed = self.lower <= mu <= self.upper
        verdict = "within" if passed else "outside"
        return CheckResult("octahedral_factor", passed, round(mu, 4),
                           f"mu = {mu:.3f} {verdict} [{self.lower}, {self.upper}]; {sites.describe()}")
