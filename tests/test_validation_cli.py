"""``crystalforge validate`` through CliRunner: folders with bad files, --json, -o, --require, plugins."""

from __future__ import annotations

import csv
import json

import attrs
import pytest
from click.testing import CliRunner

from crystalforge import hookimpl
from crystalforge.cif.io import write_cifs
from crystalforge.cif.postprocess import postprocess_cif
from crystalforge.cif.preprocess import preprocess_cif
from crystalforge.cli import cli
from crystalforge.validation.report import CheckResult


@pytest.fixture(scope="module")
def valid_cifs(perov_raw):
    return [(name, postprocess_cif(preprocess_cif(cif))) for name, cif in perov_raw[:4]]


def run(args, plugin_manager):
    return CliRunner().invoke(cli, args, obj={"plugin_manager": plugin_manager})


@pytest.fixture
def folder(tmp_path, valid_cifs):
    path = tmp_path / "cifs"
    write_cifs(path, valid_cifs)
    (path / "empty.cif").write_text("")
    (path / "binary.cif").write_bytes(b"\x00\x01" * 100)
    (path / "negative.cif").write_text(valid_cifs[0][1].replace("_cell_length_a   ", "_cell_length_a   -"))
    (path / "unknown_sg.cif").write_text(valid_cifs[0][1].replace("Pm-3m", "Pq-7"))
    return path


def test_folder_with_bad_cifs_reports_every_file(folder, plugin_manager, tmp_path):
    report_csv = tmp_path / "report.csv"
    result = run(["validate", str(folder), "-o", str(report_csv), "--no-progress"], plugin_manager)
    assert result.exit_code == 1, result.output  # two files are not CIFs at all
    lines = result.output.splitlines()
    by_name = {line.split(":")[0]: line for line in lines[:-1]}
    assert len(by_name) == 8
    assert by_name["empty"] == "empty: not a CIF: empty, binary or unreadable"
    assert by_name["binary"] == "binary: not a CIF: empty, binary or unreadable"
    assert "not positive" in by_name["negative"]
    assert "unknown space group 'Pq-7'" in by_name["unknown_sg"]
    assert lines[-1].startswith(("3/8 valid", "4/8 valid")) and "bond-length score" in lines[-1]
    assert lines[-1].endswith("; 2 file(s) not CIFs; report in " + str(report_csv))
    with open(report_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {"name", "is_valid", "bond_length_score", "space_group_message"} <= set(rows[0])


def test_json_and_two_workers_agree(folder, plugin_manager):
    one = json.loads(run(["validate", str(folder), "--json", "--no-progress"], plugin_manager).output)
    two = json.loads(run(["validate", str(folder), "--json", "-j", "2", "--no-progress"], plugin_manager).output)
    assert one == two
    summary = one["summary"]
    assert summary["cifs"] == 8 and set(summary["checks"]) >= {"bond_length", "space_group"}
    assert summary["checks"]["formula_consistency"]["passed"] >= 5
    assert 0.0 <= summary["bond_length_score"]["mean"] <= 1.0


@attrs.define
class AlwaysFails:
    def check(self, cif, context):
        return CheckResult("always_fails", False, None, "nope")


class Plugin:
    @hookimpl
    def register_validators(self, register):
        register("always_fails", AlwaysFails)


def test_plugin_validator_joins_and_can_be_required(tmp_path, valid_cifs, plugin_manager):
    plugin_manager.register(Plugin(), name="x")
    path = tmp_path / "one.cif"
    path.write_text(valid_cifs[0][1])
    result = run(["validate", str(path), "--json", "--no-progress"], plugin_manager)
    row = json.loads(result.output)["results"][0]
    assert row["is_valid"] is True and row["always_fails"] is False and row["always_fails_message"] == "nope"
    result = run(["validate", str(path), "--require", "always_fails", "--json", "-j", "2", "--no-progress"],
                 plugin_manager)
    assert json.loads(result.output)["results"][0]["is_valid"] is False


def test_unknown_require_name_is_one_line(tmp_path, valid_cifs, plugin_manager):
    path = tmp_path / "one.cif"
    path.write_text(valid_cifs[0][1])
    result = run(["validate", str(path), "--require", "bond_lenght"], plugin_manager)
    assert result.exit_code == 1
    assert "Did you mean 'bond_length'?" in result.output and result.output.count("\n") == 1


def test_non_cif_files_get_one_line_each_and_a_failing_exit(tmp_path, valid_cifs, plugin_manager):
    from pymatgen.core import Lattice, Structure

    structure = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Ca", "Ti", "O"],
                                          [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]])
    structure.to(filename=str(tmp_path / "POSCAR"))  # written by pymatgen, as a user would have it
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "notes.txt").write_text("just some notes\n")
    (tmp_path / "good.cif").write_text(valid_cifs[0][1])
    paths = [str(tmp_path / name) for name in ("POSCAR", "blob.bin", "notes.txt", "good.cif")]
    result = run(["validate", *paths, "--no-progress"], plugin_manager)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("POSCAR: not a CIF but a VASP POSCAR: convert it first")
    assert lines[1] == "blob: not a CIF: binary file"
    assert lines[2] == "notes: not a CIF: no data_ block"
    assert lines[3] == "good: valid"
    assert len(lines) == 5 and lines[4].startswith("1/4 valid") and "3 file(s) not CIFs" in lines[4]
    # only proper CIFs: exit 0
    assert run(["validate", paths[3], "--no-progress"], plugin_manager).exit_code == 0
