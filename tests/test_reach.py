"""Runs say where a request leaves the model's reach, and refuse what cannot be made."""

from __future__ import annotations

import csv
import logging

import pytest
from click.testing import CliRunner

import crystalforge as cf
from crystalforge.cli import cli
from crystalforge.errors import CompositionError, SpaceGroupError
from crystalforge.generation.prompts import make_specs, spec_count


def test_an_element_the_tokenizer_cannot_write_is_refused():
    with pytest.raises(CompositionError, match="the tokenizer has no token for Og"):
        make_specs("F2Og")


def test_a_space_group_the_cell_cannot_have_is_refused_with_the_z_that_fit():
    with pytest.raises(SpaceGroupError, match=r"Fm-3m cannot hold Na1Cl1 \(Z=1\).*try Z=4"):
        make_specs("NaCl", "Fm-3m", z=1)


def test_without_z_the_candidates_are_shared_among_the_z_that_fit():
    specs = make_specs("NaCl", "Fm-3m")
    assert [spec.formula for spec in specs] == ["Na4Cl4", "Na8Cl8"]
    assert [spec.z for spec in specs] == [4, 8]
    assert [spec_count(spec, 5) for spec in specs] == [3, 2]
    # a formula that fits its group as given is kept as the user wrote it
    (catio3,) = make_specs("CaTiO3", "Pm-3m")
    assert catio3.formula == "Ca1Ti1O3" and spec_count(catio3, 5) == 5


def test_generate_warns_once_per_composition_outside_the_training_data(caplog):
    with caplog.at_level(logging.WARNING, logger="crystalforge"):
        cf.generate(["LiFePO4", "CaTiO3"], n=1, seed=0, device="cpu", validate=False,
                    search_options={"max_new_tokens": 8})
    lines = [r.getMessage() for r in caplog.records if "never saw" in r.getMessage()]
    assert lines == ["LiFePO4: the model never saw P in training (its data: perov_5, carbon_24; 57 elements)"]


def test_run_spreads_n_over_the_feasible_z(cf_tiny_model, plugin_manager, tmp_path):
    out = tmp_path / "nacl"
    result = CliRunner().invoke(cli, ["run", "NaCl", "-s", "Fm-3m", "-n", "3", "--model", str(cf_tiny_model),
                                      "--out", str(out), "--device", "cpu", "--no-progress",
                                      "-O", "max_new_tokens=30"], obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 0, result.output
    with open(out / "summary.csv", newline="") as handle:
        formulas = sorted(row["formula"] for row in csv.DictReader(handle))
    assert formulas == ["Na4Cl4", "Na4Cl4", "Na8Cl8"]


def test_runs_without_out_never_share_a_folder(cf_tiny_model, plugin_manager, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", "NaCl", "-n", "1", "--model", str(cf_tiny_model), "--device", "cpu", "--no-progress",
            "-O", "max_new_tokens=20"]
    first = CliRunner().invoke(cli, args, obj={"plugin_manager": plugin_manager})
    second = CliRunner().invoke(cli, [*args, "--search", "greedy"], obj={"plugin_manager": plugin_manager})
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    folders = sorted(p for p in (tmp_path / "generated").iterdir())
    assert len(folders) == 2 and all(p.name.endswith(("-NaCl", "-NaCl-2")) for p in folders), folders
    for folder in folders:  # each run says where it wrote, and its summary holds only its own rows
        assert str(folder.name) in (first.output + second.output)
        with open(folder / "summary.csv", newline="") as handle:
            assert len(list(csv.DictReader(handle))) == 1


@pytest.mark.parametrize("text, hint", [("catio3", "did you mean 'CaTiO3'?"), ("co2", "did you mean 'Co2' or 'CO2'?")])
def test_a_lower_case_formula_error_suggests_the_capitalised_one(text, hint):
    with pytest.raises(CompositionError, match=hint.replace("?", r"\?")):
        make_specs(text)
