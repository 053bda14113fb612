"""Validity checks and the composite report: real CIFs, hostile input, third-party validators."""

from __future__ import annotations

import time

import attrs
import pytest

from conftest import CARBON_CSV, PEROV_CSV, read_csv_slice
from crystalforge import hookimpl
from crystalforge.cif.extract import extract_formula, parse_composition
from crystalforge.cif.postprocess import postprocess_cif
from crystalforge.cif.preprocess import preprocess_cif
from crystalforge.cif.symmetry import collapse_symmetry_loop
from crystalforge.errors import UnknownComponentError
from crystalforge.validation.checks import (
    BondLengthReasonableness,
    CellSanity,
    FormulaConsistency,
    SiteMultiplicityConsistency,
    SpaceGroupConsistency,
)
from crystalforge.validation.report import CheckResult, ValidationContext, ValidityReport, validate

BUILTIN = ["bond_length", "cell_sanity", "formula_consistency", "site_multiplicity", "space_group"]


@pytest.fixture(scope="module")
def good_cif(perov_raw) -> str:
    return postprocess_cif(preprocess_cif(perov_raw[0][1]))  # CdCuN3, Pm-3m, valid


def test_real_cif_passes_every_builtin_check(good_cif, plugin_manager):
    report = validate(good_cif, plugin_manager=plugin_manager)
    assert isinstance(report, ValidityReport)
    assert sorted(report.checks) == BUILTIN
    assert report.is_valid and report.failed() == []
    assert report.bond_length_score == 1.0
    assert report.checks["cell_sanity"].required is False
    assert all(report.checks[n].required for n in BUILTIN if n != "cell_sanity")
    flat = report.to_dict()
    assert flat["is_valid"] is True and flat["space_group"] is True
    assert flat["bond_length_score"] == 1.0 and "space_group_message" in flat


def test_check_classes_directly(good_cif):
    context = ValidationContext(good_cif)
    for cls in (FormulaConsistency, SiteMultiplicityConsistency, BondLengthReasonableness,
                SpaceGroupConsistency, CellSanity):
        result = cls().check(good_cif, context)
        assert isinstance(result, CheckResult) and result.passed, (cls, result.message)
    assert context.structure is not None and context.parse_error is None


def test_checks_detect_inconsistencies(good_cif, plugin_manager):
    wrong_formula = good_cif.replace("data_Cd1Cu1N3", "data_Cd1Cu1N2")
    report = validate(wrong_formula, plugin_manager=plugin_manager)
    assert report.failed() == ["formula_consistency"] and not report.is_valid
    assert "disagree" in report.checks["formula_consistency"].message

    wrong_mult = good_cif.replace("N  N2  3", "N  N2  2")
    report = validate(wrong_mult, plugin_manager=plugin_manager)
    assert "site_multiplicity" in report.failed()
    assert "N sites 2 vs formula 3" in report.checks["site_multiplicity"].message

    wrong_sg = good_cif.replace("_symmetry_space_group_name_H-M   Pm-3m", "_symmetry_space_group_name_H-M   P1")
    report = validate(wrong_sg, plugin_manager=plugin_manager)
    assert "space_group" in report.failed()
    assert "stated P1, detected Pm-3m" in report.checks["space_group"].message

    squeezed = good_cif.replace("4.2793", "2.5000")
    report = validate(squeezed, plugin_manager=plugin_manager)
    assert "bond_length" in report.failed() and report.bond_length_score < 1.0
    assert "bonds outside 32% of expected" in report.checks["bond_length"].message


def _big_p1(cif: str, count: int) -> str:
    """A P1 CIF of ``count`` well-separated N atoms in a 40 A cube."""
    head = collapse_symmetry_loop(cif.replace("Pm-3m", "P1").replace("4.2793", "40.0000"))
    head = head[: head.index("Cd  Cd0")]
    rows = [f"N  N{i}  1  {(i % 9) / 9:.4f}  {(i // 9 % 9) / 9:.4f}  {(i // 81) / 9:.4f}  1.0" for i in range(count)]
    return head + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    "label, mutate, expect",
    [
        ("empty", lambda c: "", "empty CIF"),
        ("binary", lambda c: "\x00\x01\xfe" * 200, "binary"),
        ("truncated", lambda c: c[: len(c) // 2], "pymatgen cannot read"),
        ("huge number", lambda c: c.replace("_cell_length_a   4.2793", "_cell_length_a   1e308"), "non-finite"),
        ("huge cell", lambda c: c.replace("_cell_length_a   4.2793", "_cell_length_a   1e35"), "too sparse"),
        ("negative length", lambda c: c.replace("_cell_length_a   4.2793", "_cell_length_a   -4.2793"),
         "not positive"),
        ("unknown element", lambda c: c.replace("Cd", "Qq"), "unknown element"),
        ("absurd site count", lambda c: c + "".join(f"N  N{i}  1  {i / 9999:.4f}  0.1  0.2  1.0\n"
                                                   for i in range(600)), "symmetry operators is more than"),
        ("absurd P1 site count", lambda c: _big_p1(c, 600), "more than the 500"),
        ("tiny volume", lambda c: c.replace("4.2793", "0.3000"), "volume per atom"),
    ],
)
def test_hostile_input_never_raises_and_says_why(good_cif, plugin_manager, label, mutate, expect):
    start = time.monotonic()
    report = validate(mutate(good_cif), plugin_manager=plugin_manager)
    assert not report.is_valid, label
    messages = " | ".join(r.message for r in report.checks.values() if not r.passed)
    assert expect in messages, messages
    assert all("\n" not in r.message for r in report.checks.values())
    assert time.monotonic() - start < 30  # generous: guards must stop CrystalNN long before this


def test_unknown_space_group_fails_the_check(good_cif, plugin_manager):
    report = validate(good_cif.replace("Pm-3m", "Pz-9q"), plugin_manager=plugin_manager)
    assert report.failed() == ["space_group"]
    assert "unknown space group 'Pz-9q'" in report.checks["space_group"].message


def test_non_string_input_does_not_raise(plugin_manager):
    report = validate(b"\x89PNG\r\n", plugin_manager=plugin_manager)  # type: ignore[arg-type]
    assert not report.is_valid


@attrs.define
class NoFluorine:
    """Fails any CIF containing fluorine (a third-party style check)."""

    def check(self, cif, context):
        has_f = context.structure is not None and "F" in {e.symbol for e in context.structure.composition}
        return CheckResult("no_fluorine", not has_f, None, "contains F" if has_f else "no F")


class Crashing:
    def check(self, cif, context):
        raise RuntimeError("plugin bug")


class ThirdPartyPlugin:
    @hookimpl
    def register_validators(self, register):
        register("no_fluorine", NoFluorine)
        register("crashing", Crashing)


class RequiredPlugin:
    @hookimpl
    def register_validators(self, register):
        register("no_fluorine", NoFluorine, required=True)


def _fluoride(perov_raw) -> str:
    for _, raw in perov_raw:
        text = postprocess_cif(preprocess_cif(raw))
        if "F" in {e.symbol for e in parse_composition(extract_formula(text))}:
            return text
    pytest.skip("no fluoride in the slice")


def test_third_party_validator_joins_report_and_can_be_required(perov_raw, good_cif, plugin_manager):
    plugin_manager.register(ThirdPartyPlugin(), name="x")
    fluoride = _fluoride(perov_raw)
    report = validate(fluoride, plugin_manager=plugin_manager)
    assert "no_fluorine" in report.checks and not report.checks["no_fluorine"].passed
    assert report.checks["no_fluorine"].required is False
    # a crashing plugin fails its own check with a message; the others still run
    assert report.checks["crashing"].message == "check raised RuntimeError: plugin bug"
    assert report.checks["formula_consistency"].passed
    required = validate(fluoride, plugin_manager=plugin_manager, require=["no_fluorine"])
    assert required.checks["no_fluorine"].required and not required.is_valid
    assert validate(good_cif, plugin_manager=plugin_manager, require=["no_fluorine"]).is_valid
    with pytest.raises(UnknownComponentError, match="no_fluorin"):
        validate(good_cif, plugin_manager=plugin_manager, require=["no_fluorin"])


def test_validator_registered_as_required(perov_raw, plugin_manager):
    plugin_manager.register(RequiredPlugin(), name="req")
    report = validate(_fluoride(perov_raw), plugin_manager=plugin_manager)
    assert report.checks["no_fluorine"].required and not report.is_valid
    assert "no_fluorine" in report.summary()


def _validity_rate(path, count, plugin_manager):
    rows = read_csv_slice(path, 0, count)
    reports = [validate(postprocess_cif(preprocess_cif(cif)), plugin_manager=plugin_manager) for _, cif in rows]
    return {
        "valid": sum(r.is_valid for r in reports) / len(reports),
        **{name: sum(r.checks[name].passed for r in reports) / len(reports) for name in BUILTIN},
    }


@pytest.mark.slow
@pytest.mark.parametrize("path", [PEROV_CSV, CARBON_CSV], ids=["perov_5", "carbon_24"])
def test_validity_rate_of_real_structures(path, plugin_manager):
    rates = _validity_rate(path, 200, plugin_manager)
    # real structures: formula, multiplicity and cell always hold after preprocess ->
    # postprocess. The space group does for nearly all: a few structures sit at the edge of
    # symprec 0.1, and after rounding to 4 decimals spglib finds a higher group (measured:
    # 100% Perov-5, 98.5% Carbon-24). The bond-length heuristic rejects more (59.5% / 99.5% on the first 200).
    for name in ("formula_consistency", "site_multiplicity", "cell_sanity"):
        assert rates[name] == 1.0, (name, rates)
    assert rates["space_group"] >= 0.95, rates
    assert rates["valid"] > 0.5, rates


# The CIF pre-checks (cif/safety.py) refuse these angles before pymatgen parses the cell.
@pytest.mark.parametrize("angle, why", [
    ("-90.0000", "cell angle beta = -90 degrees is not strictly between 0 and 180"),
    ("270.0000", "cell angle beta = 270 degrees is not strictly between 0 and 180"),
    ("0.0000", "cell angle beta = 0 degrees is not strictly between 0 and 180"),
    ("180.0000", "cell angle beta = 180 degrees is not strictly between 0 and 180")])
def test_impossible_cell_angle_is_invalid(good_cif, plugin_manager, angle, why):
    report = validate(good_cif.replace("_cell_angle_beta   90.0000", f"_cell_angle_beta   {angle}"),
                      plugin_manager=plugin_manager)
    assert not report.is_valid
    assert why in report.checks["bond_length"].message and why in report.checks["space_group"].message


def test_expected_bond_length_is_crystallm_rule():
    from pymatgen.core import Element

    from crystalforge.validation.checks import expected_bond_length

    # ionic pair: the cation's average cationic radius plus the anion's average anionic radius
    assert expected_bond_length(Element("K"), Element("F")) == pytest.approx(1.38 + 1.33)
    assert expected_bond_length(Element("F"), Element("K")) == pytest.approx(2.71)
    # covalent pair: atomic radii
    assert expected_bond_length(Element("C"), Element("C")) == pytest.approx(1.4)
    with pytest.raises(TypeError):  # no atomic radius for He: CrystaLLM's check raises too
        expected_bond_length(Element("He"), Element("C"))


def test_bonds_to_images_of_the_same_site_are_not_counted(plugin_manager):
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    one_site = str(CifWriter(Structure(Lattice.cubic(2.5), ["Cu"], [[0, 0, 0]])))
    report = validate(one_site.replace("data_Cu", "data_Cu1"), plugin_manager=plugin_manager)
    bond = report.checks["bond_length"]
    assert not bond.passed and bond.score is None and "no bonds between distinct sites" in bond.message


def test_bond_count_over_symmetry_groups_equals_a_pass_over_every_site(perov_raw, carbon_raw, monkeypatch):
    import crystalforge.validation.checks as checks
    from crystalforge.validation.checks import equivalent_site_groups

    checked = 0
    for _, raw in perov_raw[:4] + carbon_raw[:4]:
        context = ValidationContext(postprocess_cif(preprocess_cif(raw)))
        structure = context.structure
        groups = equivalent_site_groups(structure)
        assert sum(weight for _, weight in groups) == len(structure)
        check = BondLengthReasonableness()
        grouped = check._count(structure)
        with monkeypatch.context() as patch:
            patch.setattr(checks, "equivalent_site_groups", lambda s: [(index, 1) for index in range(len(s))])
            assert check._count(structure)[:2] == grouped[:2]
        checked += len(groups) < len(structure)
    assert checked >= 2  # some structures really were counted through their symmetry
