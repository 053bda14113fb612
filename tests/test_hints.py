"""Did-you-mean hints for space-group symbols and formula capitalisation."""

from __future__ import annotations

import pytest

from crystalforge.cif.extract import normalize_space_group
from crystalforge.cif.hints import (
    formula_case_candidates,
    formula_case_hint,
    suggest_formula_case,
    suggest_space_groups,
    unknown_space_group_message,
)
from crystalforge.errors import SpaceGroupError


@pytest.mark.parametrize("text, expected", [
    ("Pm3m", ["Pm-3m"]), ("Fm3m", ["Fm-3m"]), ("Fd3m", ["Fd-3m"]), ("Ia3d", ["Ia-3d"]),
    ("P21c", ["P2_1/c"]), ("P4mmm", ["P4/mmm"]), ("P63mmc", ["P6_3/mmc"]), ("I41amd", ["I4_1/amd"]),
    ("P-3m", ["P-31m", "P-3m1"]), ("P", ["P1"]),
])
def test_space_group_suggestions(text, expected):
    assert suggest_space_groups(text) == expected


def test_space_group_suggestions_fall_back_to_close_symbols():
    assert "Pm-3n" in suggest_space_groups("Fm-3n") and len(suggest_space_groups("Fm-3n")) == 3
    assert suggest_space_groups("Pz-9q") == [] and suggest_space_groups("  ") == []


def test_unknown_space_group_error_says_did_you_mean():
    with pytest.raises(SpaceGroupError) as info:
        normalize_space_group("Pm3m")
    assert str(info.value) == "unknown space group 'Pm3m'; did you mean 'Pm-3m'?"
    assert unknown_space_group_message("Zz9") == (
        "unknown space group 'Zz9'; give an H-M symbol such as Pm-3m or P2_1/c, or a number 1-230")
    # what is unambiguous is accepted, not questioned
    assert normalize_space_group("P63/mmc") == "P6_3/mmc"
    assert [normalize_space_group(n) for n in (1, "221", 230)] == ["P1", "Pm-3m", "Ia-3d"]
    with pytest.raises(SpaceGroupError, match="1-230"):
        normalize_space_group(231)


@pytest.mark.parametrize("text, expected", [
    ("catio3", "CaTiO3"), ("CATIO3", "CaTiO3"), ("lifepo4", "LiFePO4"), ("nacl", "NaCl"),
    ("srtio3", "SrTiO3"), ("kbr", "KBr"), ("na2cl2", "Na2Cl2"), ("fe2o3", "Fe2O3"), ("ca(oh)2", "Ca(OH)2"),
    ("NaCL", "NaCl"),
])
def test_suggest_formula_case(text, expected):
    assert suggest_formula_case(text) == expected


def test_suggest_formula_case_refuses_to_guess():
    assert suggest_formula_case("co2") is None  # Co2 or CO2
    assert formula_case_candidates("co2") == ["Co2", "CO2"]
    assert formula_case_candidates("sio2") == ["SiO2", "SIO2"]
    assert suggest_formula_case("xyz") is None and formula_case_candidates("xyz") == []
    assert suggest_formula_case("CaTiO3") is None  # already right: nothing to suggest
    assert suggest_formula_case("") is None
    assert len(formula_case_candidates("co" * 100)) <= 64  # many readings: capped, still quick
    # At and Po are not in the tokenizer's vocabulary, so "catio3" is not C-At-I-O3
    assert formula_case_candidates("catio3") == ["CaTiO3"]


def test_formula_case_hint():
    assert formula_case_hint("catio3") == "did you mean 'CaTiO3'?"
    assert formula_case_hint("co") == "did you mean 'Co' or 'CO'?"
    assert formula_case_hint("CaTiO3") is None and formula_case_hint("qqq") is None
