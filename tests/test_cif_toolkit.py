"""The CIF toolkit on real Perov-5 / Carbon-24 CIFs: preprocess, prompts, postprocess, extraction."""

from __future__ import annotations

import re

import pytest

from crystalforge.cif.extract import (
    extract_cell,
    extract_data_formula,
    extract_formula,
    extract_site_multiplicities,
    extract_space_group,
    extract_volume,
    extract_z,
    normalize_space_group,
    parse_composition,
)
from crystalforge.cif.postprocess import postprocess_cif
from crystalforge.cif.preprocess import clean_lines, preprocess_cif, round_decimals
from crystalforge.cif.prompt import make_prompt
from crystalforge.cif.properties import atom_props_block, element_properties
from crystalforge.cif.symmetry import symmetry_operators
from crystalforge.cif.tokenizer import UNK, default_tokenizer
from crystalforge.errors import CIFError, CompositionError, SpaceGroupError


@pytest.fixture(scope="module")
def perov_prep(perov_raw):
    return [(name, preprocess_cif(cif)) for name, cif in perov_raw]


@pytest.fixture(scope="module")
def carbon_prep(carbon_raw):
    return [(name, preprocess_cif(cif)) for name, cif in carbon_raw]


def test_preprocess_follows_the_canonical_chain(perov_prep):
    text = perov_prep[0][1]
    lines = text.split("\n")
    # data_ line from the non-reduced _chemical_formula_sum, quotes and spaces removed
    assert lines[0] == "data_" + extract_formula(text).replace(" ", "")
    # atom-props loop right before the space-group line
    sg_index = next(i for i, line in enumerate(lines) if line.startswith("_symmetry_space_group_name_H-M"))
    assert lines[1:6] == ["loop_", "_atom_type_symbol", "_atom_type_electronegativity",
                          "_atom_type_radius", "_atom_type_ionic_radius"]
    assert all(re.fullmatch(r"[A-Z][a-z]?  \d\.\d{4}  \d\.\d{4}  \d\.\d{4}", line) for line in lines[6:sg_index])
    # symmetrized: a real space group, operators collapsed to the identity
    assert extract_space_group(text) == "Pm-3m"
    assert "_symmetry_equiv_pos_as_xyz\n1  'x, y, z'\nloop_" in text
    # no decimal longer than 4 places, no comment or pymatgen line, stripped lines, ends with an empty line
    assert not re.search(r"\d\.\d{5,}", text)
    assert "pymatgen" not in text and not any(line.startswith("#") for line in lines)
    assert all(line == line.strip() for line in lines)
    assert text.endswith("\n\n") and not text.endswith("\n\n\n")


def test_preprocess_of_its_postprocessed_output_keeps_the_structure(perov_prep):
    text = perov_prep[3][1]
    again = preprocess_cif(postprocess_cif(text))
    # only rounding may differ (the volume is recomputed from rounded lengths)
    strip = lambda t: re.sub(r"_cell_volume.*", "", t)  # noqa: E731
    assert strip(again) == strip(text)


@pytest.mark.parametrize("which", ["perov_prep", "carbon_prep"])
def test_preprocessed_cifs_tokenize_without_unk_and_round_trip(which, request):
    tok = default_tokenizer()
    for name, text in request.getfixturevalue(which):
        tokens = tok.tokenize(text)
        assert UNK not in tokens, name
        sg = extract_space_group(text)
        assert f"{sg}_sg" in tokens
        assert tok.decode(tok.encode(text)) == re.sub(r"[ \t]+", " ", text)
        assert tokens[-2:] == ["\n", "\n"]


def test_prompt_composition_only_and_with_space_group():
    assert make_prompt("CaTiO3") == "data_Ca1Ti1O3\n"
    assert make_prompt("CaTiO3", z=2) == "data_Ca2Ti2O6\n"
    prompt = make_prompt("CaTiO3", spacegroup="Pm-3m")
    assert prompt.startswith("data_Ca1Ti1O3\nloop_\n_atom_type_symbol\n")
    assert prompt.endswith("_symmetry_space_group_name_H-M Pm-3m\n")
    assert "Ca  1.0000  1.8000  1.1400\n" in prompt
    assert make_prompt("CaTiO3", spacegroup=221) == prompt
    tok = default_tokenizer()
    assert UNK not in tok.tokenize(prompt) and tok.tokenize(prompt)[-2:] == ["Pm-3m_sg", "\n"]


def test_prompt_matches_the_start_of_the_training_form(perov_prep):
    text = perov_prep[0][1]
    formula = extract_data_formula(text)
    prompt = make_prompt(formula, spacegroup=extract_space_group(text))
    tok = default_tokenizer()
    assert tok.tokenize(text)[: len(tok.tokenize(prompt))] == tok.tokenize(prompt)


@pytest.mark.parametrize("bad", ["", "Xx3", "Ca-Ti", "CaTiO3!", "Ca0.5TiO3"])
def test_prompt_bad_composition(bad):
    with pytest.raises(CompositionError):
        make_prompt(bad)


@pytest.mark.parametrize("bad", ["Pq", "", 0, 231, "P99"])
def test_prompt_bad_space_group(bad):
    with pytest.raises(SpaceGroupError):
        make_prompt("CaTiO3", spacegroup=bad)


def test_normalize_space_group_forms():
    assert normalize_space_group("P 21/c") == "P2_1/c"
    assert normalize_space_group("P121/c1") == "P2_1/c"
    assert normalize_space_group(14) == "P2_1/c"
    assert normalize_space_group("fm-3m") == "Fm-3m"
    assert normalize_space_group("Cmca") == "Cmce"
    assert normalize_space_group("Pbnm") == "Pnma"


def test_postprocess_restores_operators_and_removes_props(perov_prep, carbon_prep):
    from pymatgen.core import Structure

    for name, text in perov_prep[:5] + carbon_prep[:5]:
        out = postprocess_cif(text)
        assert "_atom_type_" not in out
        sg = extract_space_group(out)
        count = len(re.findall(r"^\s*\d+\s+'[^']*'\s*$", out, re.M))
        assert count == (1 if sg == "P1" else len(symmetry_operators(sg))), name
        structure = Structure.from_str(out, fmt="cif")
        assert structure.composition.reduced_formula == parse_composition(extract_formula(out)).reduced_formula


def test_postprocess_errors():
    with pytest.raises(CIFError, match="empty"):
        postprocess_cif("")
    with pytest.raises(CIFError, match="unknown space group"):
        postprocess_cif("data_X\n_symmetry_space_group_name_H-M Qz9\n")


def test_preprocess_errors():
    with pytest.raises(CIFError, match="empty"):
        preprocess_cif("  \n")
    with pytest.raises(CIFError, match="pymatgen cannot read"):
        preprocess_cif("data_x\n_cell_length_a 3\nloop_\n_atom_site_label\n")


def test_extract_helpers(perov_prep):
    text = postprocess_cif(perov_prep[0][1])
    a, b, c, alpha, beta, gamma = extract_cell(text)
    assert a > 0 and alpha == 90.0
    assert extract_volume(text) == pytest.approx(a * b * c, rel=1e-3)
    assert extract_z(text) >= 1
    counts = extract_site_multiplicities(text)
    assert sum(counts.values()) == parse_composition(extract_formula(text)).num_atoms
    with pytest.raises(CIFError, match="_cell_length_a"):
        extract_cell("data_x\n")


def test_round_and_clean_lines():
    assert round_decimals("1.123456 -0.000004 2.12 7") == "1.1235 -0.0000 2.12 7"
    assert clean_lines("# c\n  a  \n\nby pymatgen\nb\n") == "a\nb\n\n"


def test_noble_gas_properties_fall_back():
    electronegativity, radius, ionic = element_properties("He")
    # CrystaLLM's values: Allen electronegativity, van der Waals radius, no ionic radius
    assert electronegativity == pytest.approx(4.16) and radius == pytest.approx(1.40) and ionic == 0.0
    from pymatgen.core import Element

    block = atom_props_block([Element("O"), Element("Ca")], {"Ca": 2, "O": -2})
    assert "_atom_type_oxidation_number" in block and "Ca  1.0000  1.8000  1.1400  2.0000" in block
