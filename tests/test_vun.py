"""Tests of validity / uniqueness / novelty on real structures with planted duplicates."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from pymatgen.io.cif import CifWriter

from crystalforge.cif.io import write_cifs
from crystalforge.cli import cli
from crystalforge.evaluation.metrics import parse_structure
from crystalforge.evaluation.vun import compute_vun

from conftest import CARBON_CSV, PEROV_CSV, read_csv_slice


@pytest.fixture(scope="module")
def train():
    return read_csv_slice(PEROV_CSV, 0, 10) + read_csv_slice(CARBON_CSV, 0, 5)


@pytest.fixture(scope="module")
def fresh():
    """Structures not in ``train`` (later rows of the same files)."""
    return read_csv_slice(PEROV_CSV, 100, 4) + read_csv_slice(CARBON_CSV, 100, 2)


def _supercell(cif: str) -> str:
    structure = parse_structure(cif)
    structure.make_supercell([2, 1, 1])
    return str(CifWriter(structure))


def _overlapping(cif: str) -> str:
    structure = parse_structure(cif)
    structure.translate_sites([1], structure[0].frac_coords - structure[1].frac_coords + 0.003)
    return str(CifWriter(structure))


def test_planted_duplicates_and_training_copies(train, fresh):
    generated = [(f"new{i}", cif) for i, (_, cif) in enumerate(fresh)]
    generated.append(("dup_of_new0", _supercell(fresh[0][1])))  # same structure, other cell
    generated.append(("dup_of_new1", fresh[1][1]))
    generated.append(("copy_of_train", train[2][1]))
    generated.append(("copy_of_train_again", train[2][1]))
    generated.append(("garbage", "data_nothing\n"))
    result = compute_vun(generated, train, progress=False)
    rows = {r.name: r for r in result.rows}
    assert rows["dup_of_new0"].duplicate_of == "new0" and not rows["dup_of_new0"].unique
    assert rows["dup_of_new1"].duplicate_of == "new1"
    assert rows["copy_of_train"].unique and not rows["copy_of_train"].novel
    assert rows["copy_of_train"].matches_train == train[2][0]
    assert not rows["copy_of_train_again"].unique
    assert not rows["garbage"].parsed and not rows["garbage"].valid and not rows["garbage"].unique
    assert all(rows[f"new{i}"].unique and rows[f"new{i}"].novel for i in range(len(fresh)))
    summary = result.summary
    total = len(generated)
    assert summary["n_generated"] == total and summary["n_train"] == len(train)
    assert summary["unique"]["count"] == len(fresh) + 1
    assert summary["novel"]["count"] == total - 3
    assert summary["vun"]["count"] == sum(1 for r in result.rows if r.vun)
    assert summary["tolerances"] == {"stol": 0.3, "angle_tol": 5.0, "ltol": 0.2}


def test_validity_parts(fresh):
    result = compute_vun([("ok", fresh[0][1]), ("overlap", _overlapping(fresh[0][1]))], progress=False)
    ok, overlap = result.rows
    assert ok.structure_valid and ok.composition_valid and ok.valid and ok.novel  # no train: all novel
    assert not overlap.structure_valid and overlap.composition_valid and not overlap.vun


def test_two_workers_same_verdicts(train, fresh):
    generated = [(f"g{i}", cif) for i, (_, cif) in enumerate(fresh + train[:3])]
    one = compute_vun(generated, train, workers=1, progress=False)
    two = compute_vun(generated, train, workers=2, progress=False)
    assert [r.to_dict() for r in one.rows] == [r.to_dict() for r in two.rows]


def test_cli_vun_json_and_csv(tmp_path, train, fresh):
    write_cifs(tmp_path / "gen.tar.gz", [("a", fresh[0][1]), ("b", fresh[0][1]), ("c", train[0][1])])
    write_cifs(tmp_path / "train.csv", train)
    out = tmp_path / "vun.csv"
    result = CliRunner().invoke(cli, ["vun", str(tmp_path / "gen.tar.gz"), "--train", str(tmp_path / "train.csv"),
                                      "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["unique"]["count"] == 2 and summary["novel"]["count"] == 2 and summary["vun"]["count"] == 1
    assert out.read_text().splitlines()[0].startswith("name,")
    table = CliRunner().invoke(cli, ["vun", str(tmp_path / "gen.tar.gz"), "--quiet"])
    assert table.exit_code == 0 and "unique:" in table.output and "training set: none" in table.output


def test_cli_vun_bad_input_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["vun", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "No such file or folder" in result.output and "Traceback" not in result.output
    (tmp_path / "empty").mkdir()
    write_cifs(tmp_path / "one", [("x", "data_x\n")])
    result = CliRunner().invoke(cli, ["vun", str(tmp_path / "one"), "--train", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no CIF files found" in result.output
