"""Exporters and ``crystalforge export`` on real structures."""

from __future__ import annotations

import json

from ase.io import read as ase_read
from click.testing import CliRunner
from pymatgen.core import Structure
from pymatgen.io.vasp import Poscar

from crystalforge.cli import cli
from crystalforge.generation.export import export_cifs


def _write_inputs(folder, perov_raw, carbon_raw):
    folder.mkdir()
    for name, cif in [*perov_raw[:2], *carbon_raw[:1]]:
        (folder / f"{name}.cif").write_text(cif)
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 1\n")
    return folder


def test_export_poscar_extxyz_and_cif_round_trip(perov_raw, carbon_raw, tmp_path):
    inputs = _write_inputs(tmp_path / "in", perov_raw, carbon_raw)
    originals = {name: Structure.from_str(cif, fmt="cif") for name, cif in [*perov_raw[:2], *carbon_raw[:1]]}
    for fmt, suffix in (("poscar", ".vasp"), ("extxyz", ".extxyz"), ("cif", ".cif")):
        out = tmp_path / fmt
        results = list(export_cifs([inputs], fmt, out))
        assert [r.name for r in results if not r.ok] == ["broken"]
        for name, original in originals.items():
            path = out / f"{name}{suffix}"
            if fmt == "poscar":
                structure = Poscar.from_file(path).structure
            elif fmt == "extxyz":
                atoms = ase_read(path, format="extxyz")
                assert len(atoms) == len(original) and all(atoms.pbc)
                assert abs(atoms.get_volume() - original.volume) < 1e-3
                continue
            else:
                structure = Structure.from_file(path)
            assert structure.composition == original.composition
            assert abs(structure.volume - original.volume) < 1e-3


def test_export_cli_reports_failures_and_exits_1(perov_raw, carbon_raw, tmp_path):
    inputs = _write_inputs(tmp_path / "in", perov_raw, carbon_raw)
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(inputs), "--format", "poscar", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "failed: broken:" in result.output and "exported 3 of 4 structures" in result.output
    good = runner.invoke(cli, ["export", *(str(p) for p in sorted(inputs.glob("*.cif")) if p.stem != "broken"),
                               "--format", "extxyz", "-o", str(tmp_path / "x"), "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["exported"] == 3 and len(list((tmp_path / "x").glob("*.extxyz"))) == 3
    missing = runner.invoke(cli, ["export", str(tmp_path / "nope.cif"), "-o", str(tmp_path / "o2")])
    assert missing.exit_code == 1 and "Error: No such file" in missing.output
