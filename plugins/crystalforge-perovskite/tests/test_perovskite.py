"""Tests of the perovskite validators: radii, factors, registration and use as required checks."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

import crystalforge_perovskite
from crystalforge.cli import cli
from crystalforge.validation.report import ValidationContext, validate
from crystalforge_perovskite.radii import NOT_ABX3, NotABX3, RadiusUnavailable, perovskite_sites
from crystalforge_perovskite.validators import OctahedralFactor, ToleranceFactor


def cubic_perovskite(a_site: str, b_site: str, x_site: str, a: float = 3.9) -> str:
    structure = Structure(Lattice.cubic(a), [a_site, b_site, x_site, x_site, x_site],
                          [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return str(CifWriter(structure, symprec=0.1))


@pytest.fixture
def manager(cf_plugin_manager):
    """Built-ins plus this plugin, registered in-process (as the entry point would)."""
    cf_plugin_manager.register(crystalforge_perovskite, name="perovskite")
    return cf_plugin_manager


def test_srtio3_factors_from_shannon_radii():
    sites = perovskite_sites("SrTiO3")
    assert (sites.a, sites.b, sites.x) == ("Sr", "Ti", ("O",))
    # Shannon: Sr2+ XII 1.44, Ti4+ VI 0.605, O2- VI 1.40
    assert sites.r_a == pytest.approx(1.44) and sites.r_b == pytest.approx(0.605) and sites.r_x == pytest.approx(1.40)
    assert sites.tolerance_factor == pytest.approx((1.44 + 1.40) / (math.sqrt(2) * (0.605 + 1.40)))
    assert sites.octahedral_factor == pytest.approx(0.605 / 1.40)


def test_larger_cation_is_a_whatever_the_order():
    assert perovskite_sites("TiSrO3") == perovskite_sites("SrTiO3")


def test_mixed_anion_abx3_uses_weighted_radius():
    sites = perovskite_sites("SrTaO2N")
    assert sites.x == ("N", "O") and sites.r_x == pytest.approx((2 * 1.40 + 1.46) / 3)


def test_non_abx3_compositions():
    for formula in ("C", "NaCl", "Sr2TiO4", "Si2O2F"):
        with pytest.raises(NotABX3):
            perovskite_sites(formula)


def test_validators_pass_and_fail_on_real_structures():
    context = ValidationContext(cubic_perovskite("Sr", "Ti", "O"))
    t = ToleranceFactor().check(context.cif, context)
    mu = OctahedralFactor().check(context.cif, context)
    assert t.passed and 0.95 < t.score < 1.05 and "Sr" in t.message
    assert mu.passed and mu.score == pytest.approx(0.4321, abs=1e-3)
    strict = ToleranceFactor(upper=1.0).check(context.cif, context)  # options move the window
    assert not strict.passed and "outside" in strict.message


def test_not_abx3_passes_as_not_applicable():
    structure = Structure(Lattice.cubic(3.57), ["C"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    context = ValidationContext(str(CifWriter(structure)))
    for validator in (ToleranceFactor(), OctahedralFactor()):
        result = validator.check(context.cif, context)
        assert result.passed and result.score is None and result.message == NOT_ABX3


def test_unparsable_cif_fails_with_reason():
    context = ValidationContext("data_x\n")
    result = ToleranceFactor().check(context.cif, context)
    assert not result.passed and result.message


def test_registered_optional_and_requirable(manager):
    registry = manager.registry("validator")
    assert {"tolerance_factor", "octahedral_factor"} <= set(registry.names())
    assert registry.get("tolerance_factor").plugin == "perovskite"
    assert not registry.get("tolerance_factor").metadata.get("required")
    # cubic BaSiO3: t = (1.61 + 1.40) / (sqrt(2) (0.40 + 1.40)) = 1.18, outside 0.8..1.1
    cif = cubic_perovskite("Ba", "Si", "O", a=3.6)
    plain = validate(cif, plugin_manager=manager)
    tolerance = plain.checks["tolerance_factor"]
    assert not tolerance.passed and not tolerance.required and tolerance.score == pytest.approx(1.18, abs=0.01)
    builtin_verdict = all(r.passed for r in plain.checks.values() if r.required)
    assert plain.is_valid == builtin_verdict  # an optional failure does not decide validity
    strict = validate(cif, plugin_manager=manager, require=["tolerance_factor"])
    assert strict.checks["tolerance_factor"].required and not strict.is_valid


def test_options_visible_and_settable(manager):
    component = manager.registry("validator").get("tolerance_factor")
    assert {o.name: o.default for o in component.options} == {"lower": 0.8, "upper": 1.1}
    assert component.create(lower="0.9").lower == 0.9


def test_cli_list_shows_the_plugin(manager):
    result = CliRunner().invoke(cli, ["list", "validator"], obj={"plugin_manager": manager})
    assert result.exit_code == 0 and "tolerance_factor  [perovskite]" in result.output


def test_radius_unavailable_is_reported():
    with pytest.raises((RadiusUnavailable, NotABX3)):
        perovskite_sites("XeKrO3")
