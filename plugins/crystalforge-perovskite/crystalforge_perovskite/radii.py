"""ABX3 site assignment and Shannon ionic radii for perovskite factors."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import attrs

#: Coordination numbers tried per site, preferred first (A: cuboctahedral, B/X: octahedral).
A_SITE_CN = ("XII", "XI", "X", "IX", "VIII", "VII", "VI")
B_SITE_CN = ("VI", "V", "VII", "IV", "VIII")
X_SITE_CN = ("VI", "IV", "III", "II", "VIII")

NOT_ABX3 = "not ABX3, not applicable"


class NotABX3(Exception):
    """The composition is not of the ABX3 form."""


class RadiusUnavailable(Exception):
    """The composition is ABX3 but no oxidation states / Shannon radii could be found."""


@attrs.frozen
class PerovskiteSites:
    """Ions and Shannon radii (Angstrom) of an ABX3 composition."""

    a: str
    b: str
    x: tuple[str, ...]
    r_a: float
    r_b: float
    r_x: float

    @property
    def tolerance_factor(self) -> float:
        """Goldschmidt t = (r_A + r_X) / (sqrt(2) (r_B + r_X))."""
        return (self.r_a + self.r_x) / (math.sqrt(2.0) * (self.r_b + self.r_x))

    @property
    def octahedral_factor(self) -> float:
        """mu = r_B / r_X."""
        return self.r_b / self.r_x

    def describe(self) -> str:
        anions = "+".join(self.x)
        return f"A={self.a} ({self.r_a:.3f}), B={self.b} ({self.r_b:.3f}), X={anions} ({self.r_x:.3f})"


def shannon_radius(symbol: str, oxidation: int, coordinations: tuple[str, ...]) -> float | None:
    """Return the Shannon ionic radius of ``symbol`` at ``oxidation``, first tabulated coordination wins."""
    from pymatgen.core import Species

    try:
        species = Species(symbol, oxidation)
    except Exception:
        return None
    for cn in coordinations:
        for spin in ("", "High Spin", "Low Spin"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return float(species.get_shannon_radius(cn, spin=spin))
            except Exception:
                continue
    return None


def _is_abx3_shape(amounts: dict[str, float]) -> bool:
    """Two elements with one atom each and three more atoms (reduced formula), before charges."""
    counts = sorted(amounts.values())
    ones = [c for c in counts if abs(c - 1) < 1e-6]
    return len(amounts) >= 3 and len(ones) >= 2 and abs(sum(counts) - 5) < 1e-6


@functools.lru_cache(maxsize=2048)
def perovskite_sites(reduced_formula: str) -> PerovskiteSites:
    """Return the ABX3 site assignment and radii of a composition.

    A and B are the two cations with one atom each in the reduced formula (A the larger), X
    the anions making up three atoms. The first integer oxidation-state guess of pymatgen
    with Shannon radii for every ion is used.

    Raises:
        NotABX3: the composition is not ABX3.
        RadiusUnavailable: ABX3-shaped but no usable oxidation states or radii.
    """
    from pymatgen.core import Composition

    composition = Composition(reduced_formula).reduced_composition
    amounts = {str(el): amt for el, amt in composition.get_el_amt_dict().items()}
    if not _is_abx3_shape(amounts):
        raise NotABX3(reduced_formula)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guesses = composition.oxi_state_guesses(max_sites=-1) if len(composition) <= 4 else ()
    if not guesses:
        raise RadiusUnavailable(f"no oxidation states found for {reduced_formula}")
    reasons = []
    for guess in guesses:
        if any(abs(v - round(v)) > 1e-6 for v in guess.values()):
            continue
        states = {el: int(round(v)) for el, v in guess.items()}
        cations = [el for el, v in states.items() if v > 0]
        anions = [el for el, v in states.items() if v < 0]
        if len(cations) != 2 or not anions or any(abs(amounts[c] - 1) > 1e-6 for c in cations):
            continue
        if abs(sum(amounts[x] for x in anions) - 3) > 1e-6:
            continue
        first, second = cations
        r_first = shannon_radius(first, states[first], A_SITE_CN)
        r_second = shannon_radius(second, states[second], A_SITE_CN)
        if r_first is None or r_second is None:
            reasons.append(f"no Shannon radius for {first}{states[first]:+d} or {second}{states[second]:+d}")
            continue
        a, b = (first, second) if r_first >= r_second else (second, first)
        r_a = r_first if a == first else r_second
        r_b = shannon_radius(b, states[b], B_SITE_CN)
        anion_radii = [shannon_radius(x, states[x], X_SITE_CN) for x in anions]
        if r_b is None or any(r is None for r in anion_radii):
            reasons.append(f"no Shannon radius for B={b}{states[b]:+d} or an anion")
            continue
        r_x = sum(r * amounts[x] for r, x in zip(anion_radii, anions)) / 3.0  # type: ignore[operator]
        return PerovskiteSites(a=a, b=b, x=tuple(sorted(anions)), r_a=r_a, r_b=r_b, r_x=r_x)
    if not reasons:
        raise NotABX3(reduced_formula)
    raise RadiusUnavailable(f"{reduced_formula}: {reasons[0]}")


def sites_of_structure(structure: Any) -> PerovskiteSites:
    """Return :func:`perovskite_sites` for a pymatgen ``Structure`` (or ``Composition``)."""
    composition = getattr(structure, "composition", structure)
    return perovskite_sites(composition.reduced_formula)
