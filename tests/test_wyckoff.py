"""Wyckoff positions of the 230 space groups and which cell compositions fit a group."""

from __future__ import annotations

import functools
import json
import re

import pytest

from crystalforge.cif.extract import extract_formula, extract_space_group
from crystalforge.cif.wyckoff import (
    WYCKOFF_ASSET,
    compute_wyckoff_positions,
    feasible,
    feasible_z,
    infeasibility_reason,
    space_group_sites,
)
from crystalforge.errors import CompositionError, SpaceGroupError

from conftest import CARBON_CSV, PEROV_CSV, read_csv_slice

# International Tables, Vol. A: (multiplicity, free parameters) of every Wyckoff position
ITA = {
    "P1": "1a3",
    "P-1": "1a0 1b0 1c0 1d0 1e0 1f0 1g0 1h0 2i3",
    "P2_1/c": "2a0 2b0 2c0 2d0 4e3",
    "C2/m": "2a0 2b0 2c0 2d0 4e0 4f0 4g1 4h1 4i2 8j3",
    "Pnma": "4a0 4b0 4c2 8d3",
    "Cmcm": "4a0 4b0 4c1 8d0 8e1 8f2 8g2 16h3",
    "P4/mmm": "1a0 1b0 1c0 1d0 2e0 2f0 2g1 2h1 4i1 4j1 4k1 4l1 4m1 4n1 4o1 8p2 8q2 8r2 8s2 8t2 16u3",
    "I4/mmm": "2a0 2b0 4c0 4d0 4e1 8f0 8g1 8h1 8i1 8j1 16k1 16l2 16m2 16n2 32o3",
    "P4_2/mnm": "2a0 2b0 4c0 4d0 4e1 4f1 4g1 8h1 8i2 8j2 16k3",
    "R-3m": "3a0 3b0 6c1 9d0 9e0 18f1 18g1 18h2 36i3",
    "P6/mmm": "1a0 1b0 2c0 2d0 2e1 3f0 3g0 4h1 6i1 6j1 6k1 6l1 6m1 12n2 12o2 12p2 12q2 24r3",
    "P6_3/mmc": "2a0 2b0 2c0 2d0 4e1 4f1 6g0 6h1 12i1 12j2 12k2 24l3",
    "Pm-3m": "1a0 1b0 3c0 3d0 6e1 6f1 8g1 12h1 12i1 12j1 24k2 24l2 24m2 48n3",
    "Fm-3m": "4a0 4b0 8c0 24d0 24e1 32f1 48g1 48h1 48i1 96j2 96k2 192l3",
    "Fd-3m": "8a0 8b0 16c0 16d0 32e1 48f1 96g2 96h1 192i3",
    "Im-3m": "2a0 6b0 8c0 12d0 12e1 16f1 24g1 24h1 48i1 48j2 48k2 96l3",
    "Ia-3d": "16a0 16b0 24c0 24d0 32e1 48f1 48g1 96h3",
}


def _ita(text: str) -> tuple[tuple[int, int], ...]:
    pairs = [re.fullmatch(r"(\d+)[a-z](\d)", item).groups() for item in text.split()]
    return tuple(sorted((int(m), int(d)) for m, d in pairs))


@pytest.mark.parametrize("symbol", sorted(ITA))
def test_table_matches_international_tables(symbol):
    assert space_group_sites(symbol).positions == _ita(ITA[symbol])


def test_table_has_all_230_groups_and_1731_positions():
    groups = json.loads(WYCKOFF_ASSET.read_text())["groups"]
    assert sorted(int(n) for n in groups) == list(range(1, 231))
    # the number of Wyckoff positions (letters) over all 230 groups in the International Tables
    assert sum(len(entry["positions"]) for entry in groups.values()) == 1731


@pytest.mark.parametrize("number", [1, 2, 15, 70, 142, 167, 186, 205, 216, 230])
def test_general_position_is_the_group_order(number):
    """The largest multiplicity is the number of operations pymatgen lists for the conventional cell."""
    from pymatgen.symmetry.groups import SpaceGroup

    sites = space_group_sites(number)
    general = max(sites.positions)
    assert general[1] == 3 and sites.positions.count(general) == 1
    assert general[0] == len(SpaceGroup.from_int_number(number).symmetry_ops)


@pytest.mark.parametrize("number", [2, 63, 141, 166, 194])
def test_stored_table_is_what_the_derivation_gives(number):
    assert compute_wyckoff_positions(number) == space_group_sites(number).positions


def test_space_group_by_symbol_number_and_setting():
    assert space_group_sites(225) == space_group_sites("Fm-3m") == space_group_sites("F m -3 m")
    assert space_group_sites("225").symbol == "Fm-3m"
    assert space_group_sites("P 21/c").number == 14
    with pytest.raises(SpaceGroupError, match="did you mean 'Fm-3m'"):
        space_group_sites("Fm3m")
    with pytest.raises(SpaceGroupError):
        feasible({"Na": 4, "Cl": 4}, 231)


def test_known_feasible_and_infeasible_cells():
    assert not feasible({"Na": 1, "Cl": 1}, "Fm-3m")
    assert feasible({"Na": 4, "Cl": 4}, "Fm-3m")  # rock salt: 4a + 4b
    from pymatgen.core import Composition

    assert feasible(Composition("Na4Cl4"), "Fm-3m") and not feasible(Composition("NaCl"), "Fm-3m")
    assert feasible({"Ca": 4, "F": 8}, "Fm-3m")  # fluorite: 4a + 8c
    assert feasible("CaTiO3", "Pm-3m")  # 1a + 1b + 3c
    assert not feasible("Ca2Ti2O6", "Pm-3m")  # Pm-3m has two 1-fold positions, not four
    assert feasible("C8", "Fd-3m") and not feasible("C4", "Fd-3m")  # diamond: 8a
    assert feasible("C4", "P6_3/mmc")  # hexagonal diamond (lonsdaleite): 4f
    assert feasible("C2", "P6/mmm")  # graphite-like AA stacking: 2c
    assert feasible("Si1", "P1") and feasible("Si7O3", "P1")
    assert not feasible("Na1", "P2_1/c") and feasible("Na2", "P2_1/c")
    # each fixed position is used once in all: P-1 has eight 1-fold centres of inversion
    # each fixed position is used once in all: P-1 has eight 1-fold centres of inversion and
    # a 2-fold general position, so every odd count takes one of the eight
    eight = dict.fromkeys(["Na", "Cl", "K", "Li", "Rb", "Cs", "F", "Br"], 1)
    assert feasible(eight, "P-1") and not feasible({**eight, "I": 1}, "P-1")
    assert feasible({**eight, "I": 2}, "P-1") and feasible({"Na": 5, "Cl": 5}, "P-1")
    assert not feasible({"Na": 1, "Cl": 1, "K": 1}, "P6_3/mmc")


def _brute_force(counts: list[int], positions: tuple[tuple[int, int], ...]) -> bool:
    """Whether the counts fit, by trying every way to fill each element with positions."""

    @functools.lru_cache(maxsize=None)
    def fill(element: int, remaining: int, used: frozenset[int], start: int) -> bool:
        if remaining == 0:
            return element + 1 == len(counts) or fill(element + 1, counts[element + 1], used, 0)
        for i in range(start, len(positions)):
            multiplicity, dof = positions[i]
            if multiplicity > remaining or (dof == 0 and i in used):
                continue
            if fill(element, remaining - multiplicity, used | {i} if dof == 0 else used, i):
                return True
        return False

    return fill(0, counts[0], frozenset(), 0)


@pytest.mark.parametrize("symbol", ["P-1", "C2/m", "Cmcm", "P4/mmm", "R-3m", "P6_3/mmc", "Pm-3m", "Fm-3m"])
def test_feasibility_agrees_with_brute_force(symbol):
    positions = space_group_sites(symbol).positions
    for a in range(1, 13):
        for b in range(1, 13):
            for c in (None, 1, 3, 4):
                counts = [a, b] if c is None else [a, b, c]
                cell = dict(zip(("Na", "Cl", "K"), counts))
                assert feasible(cell, symbol) == _brute_force(counts, positions), (symbol, counts)


def test_feasible_z():
    assert feasible_z({"Na": 1, "Cl": 1}, "Fm-3m") == [4, 8, 24]
    assert feasible_z("NaCl", 225, z_values=range(1, 9)) == [4, 8]
    assert feasible_z("NaCl", "Fm-3m", max_atoms=20) == [4, 8]
    assert feasible_z("CaTiO3", "Pm-3m", z_values=[1, 2, 3]) == [1, 3]
    assert feasible_z("C", "Fd-3m", z_values=[8, 4, 16]) == [8, 16]
    assert feasible_z("LiFePO4", "Pnma", max_atoms=84) == [4, 8, 12]
    assert feasible_z("NaCl", "Fm-3m", z_values=[1, 2]) == []


def test_infeasibility_reason():
    assert infeasibility_reason({"Na": 1, "Cl": 1}, "Fm-3m") == (
        "Fm-3m cannot hold Na1Cl1 (Z=1): its smallest site multiplicity is 4; try Z=4, 8 or 24"
    )
    assert infeasibility_reason({"Na": 4, "Cl": 4}, "Fm-3m") is None
    assert infeasibility_reason("CaTiO3", "Pm-3m") is None
    reason = infeasibility_reason("Ca1Ti1O3", "P6_3/mmc")
    assert reason.startswith(
        "P6_3/mmc cannot hold Ca1Ti1O3 (Z=1): its smallest site multiplicity is 2, but the cell has 1 Ca")
    reason = infeasibility_reason({"Ca": 2, "Ti": 2, "O": 6}, "Pm-3m")
    assert reason.startswith("Pm-3m cannot hold Ca2Ti2O6 (Z=2): the counts are not sums of its site multiplicities")
    assert reason.endswith("try Z=1, 3 or 4")
    assert "\n" not in reason
    assert infeasibility_reason({"Na": 1, "Cl": 1, "K": 1}, "Ia-3d").endswith(
        "smallest site multiplicity is 16; no Z up to 24 fits; try another space group")


def test_bad_counts():
    with pytest.raises(CompositionError, match="whole atom counts"):
        feasible({"Na": 1.5, "Cl": 1}, "P1")
    with pytest.raises(CompositionError, match="no atoms"):
        feasible({"Na": 0}, "P1")
    with pytest.raises(CompositionError, match="negative"):
        feasible({"Na": -1, "Cl": 2}, "P1")


def _real_cells(path, count):
    """(formula counts, space group, site multiplicities) of real structures after preprocessing."""
    from crystalforge import preprocess_cif

    for _, raw in read_csv_slice(path, 0, count):
        cif = preprocess_cif(raw)
        counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"([A-Z][a-z]?)(\d+)", extract_formula(cif))}
        rows = re.findall(r"^\s*([A-Z][a-z]?)\s+\S+\s+(\d+)\s+[-\d.]+\s+[-\d.]+\s+[-\d.]+\s+[\d.]+\s*$", cif, re.M)
        assert sum(int(m) for _, m in rows) == sum(counts.values())
        yield counts, extract_space_group(cif), [int(m) for _, m in rows]


def _check_real(path, count):
    for counts, symbol, site_multiplicities in _real_cells(path, count):
        sites = space_group_sites(symbol)
        assert feasible(counts, symbol), infeasibility_reason(counts, symbol)
        assert set(site_multiplicities) <= {m for m, _ in sites.positions}, (symbol, site_multiplicities)


def test_real_structures_are_feasible_sample():
    _check_real(PEROV_CSV, 12)
    _check_real(CARBON_CSV, 12)


@pytest.mark.slow
@pytest.mark.parametrize("path", [PEROV_CSV, CARBON_CSV], ids=["perov_5", "carbon_24"])
def test_real_structures_are_feasible_all(path):
    _check_real(path, 200)
