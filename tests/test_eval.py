"""Tests of ``crystalforge evaluate`` and the CDVAE validity helpers, on real Perov-5 / Carbon-24 CIFs."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from crystalforge.cli import cli
from crystalforge.cif.io import write_cifs
from crystalforge.evaluation.evaluate import evaluate_cif, evaluate_source, read_summary_scores, summarize
from crystalforge.evaluation.metrics import parse_structure
from crystalforge.evaluation.smact_check import min_interatomic_distance, smact_valid, structure_valid

from conftest import CARBON_CSV, PEROV_CSV, read_csv_slice


def _roundtrip(rows):
    from crystalforge.cif.postprocess import postprocess_cif
    from crystalforge.cif.preprocess import preprocess_cif

    return [(rid, postprocess_cif(preprocess_cif(cif))) for rid, cif in rows]


@pytest.fixture(scope="module")
def perov_cifs():
    """6 Perov-5 structures in the postprocessed (generated-like) form."""
    return _roundtrip(read_csv_slice(PEROV_CSV, 0, 6))


@pytest.fixture(scope="module")
def carbon_cifs():
    return _roundtrip(read_csv_slice(CARBON_CSV, 0, 3))


def _invoke(plugin_manager, args):
    return CliRunner().invoke(cli, args, obj={"plugin_manager": plugin_manager})


# -- CDVAE validity ------------------------------------------------------------------------

@pytest.mark.parametrize("formula, expected", [
    ("CaTiO3", True), ("SrTiO3", True), ("NaCl", True), ("C", True),
    ("Fe3Al", True),   # all metals: an alloy, accepted
    ("NaCl2", False),  # no charge-neutral oxidation states
    ("CaCdO3", False), # Perov-5 composition that fails the SMACT test (CDVAE's known cap)
])
def test_smact_valid_known_compositions(formula, expected):
    assert smact_valid(formula) is expected


def test_smact_valid_scales_to_reduced_stoichiometry():
    assert smact_valid("Ca2Ti2O6") is smact_valid("CaTiO3") is True


def test_structure_valid_real_and_overlapping_atoms(perov_raw):
    structure = parse_structure(perov_raw[0][1])
    assert structure_valid(structure)
    assert min_interatomic_distance(structure) > 1.0
    squeezed = structure.copy()
    squeezed.translate_sites([1], squeezed[0].frac_coords - squeezed[1].frac_coords + 0.01, frac_coords=True)
    assert not structure_valid(squeezed)


def test_most_real_perov_compositions_pass_smact():
    rows = read_csv_slice(PEROV_CSV, 0, 100)
    passing = sum(smact_valid(parse_structure(cif).composition) for _, cif in rows)
    assert 90 <= passing < 100  # a few percent of real Perov-5 fail SMACT (FACTS.md)


# -- evaluate ------------------------------------------------------------------------------

def test_evaluate_cif_row_has_every_column(perov_cifs, plugin_manager):
    name, cif = perov_cifs[0]
    row = evaluate_cif(name, cif, plugin_manager=plugin_manager)
    assert row["parsed"] is True and row["error"] == ""
    assert row["space_group_stated"] == row["space_group_detected"]
    assert row["n_sites"] >= 5 and row["volume"] > 0 and row["density"] > 0
    assert 0.0 <= row["bond_length_score"] <= 1.0
    for check in ("formula_consistency", "site_multiplicity", "bond_length", "space_group", "cell_sanity"):
        assert check in row and f"{check}_message" in row
    assert row["formula_consistency"] is True and row["site_multiplicity"] is True


def test_evaluate_cif_never_raises_on_garbage(plugin_manager):
    row = evaluate_cif("junk", "data_x\n_cell_length_a 3\nloop_\n", plugin_manager=plugin_manager)
    assert row["parsed"] is False and row["is_valid"] is False and row["error"]
    empty = evaluate_cif("empty", "", plugin_manager=plugin_manager)
    assert empty["is_valid"] is False and "empty" in empty["error"]


def test_evaluate_folder_summary_known_counts(tmp_path, perov_cifs, carbon_cifs, plugin_manager):
    folder = tmp_path / "cifs"
    write_cifs(folder, perov_cifs + carbon_cifs)
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\n")
    result = evaluate_source(folder, plugin_manager=plugin_manager, progress=False)
    summary = result.summary
    assert summary["n_cifs"] == 10 and summary["n_unparsable"] == 1
    # the round trip keeps stated and detected space groups and multiplicities consistent
    assert summary["space_group_consistent"]["count"] == 9
    assert summary["multiplicity_consistent"]["count"] == 9
    assert summary["valid"]["count"] == sum(1 for r in result.rows if r["is_valid"])
    reasonable = sum(1 for r in result.rows if (r["bond_length_score"] or 0) >= 1.0)
    assert summary["bond_lengths_reasonable"]["count"] == reasonable
    assert summary["bond_length_score"]["n"] == 9
    assert 0 < summary["bond_length_score"]["mean"] <= 1
    broken = next(r for r in result.rows if r["name"] == "broken")
    assert broken["is_valid"] is False and not broken["parsed"]
    assert sum(v["count"] for v in summary["by_crystal_system"].values()) == 10
    assert summary == summarize(result.rows)


def test_evaluate_two_workers_same_rows(tmp_path, perov_cifs, plugin_manager):
    folder = tmp_path / "cifs"
    write_cifs(folder, perov_cifs[:4])
    one = evaluate_source(folder, plugin_manager=plugin_manager, workers=1, progress=False)
    two = evaluate_source(folder, plugin_manager=plugin_manager, workers=2, progress=False)
    assert one.rows == two.rows


def test_evaluate_tar_and_generation_folder_scores(tmp_path, perov_cifs, plugin_manager):
    archive = tmp_path / "set.tar.gz"
    write_cifs(archive, perov_cifs[:2])
    assert [r["name"] for r in evaluate_source(archive, plugin_manager=plugin_manager, progress=False).rows] == \
        [name for name, _ in sorted(perov_cifs[:2])]
    out = tmp_path / "run"
    write_cifs(out, [("CaTiO3_000", perov_cifs[0][1]), ("CaTiO3_001", perov_cifs[1][1])])
    (out / "summary.csv").write_text("rank,file,score,is_valid\n1,CaTiO3_001.cif,-1.5,True\n2,CaTiO3_000.cif,0.25,True\n")
    assert read_summary_scores(out) == {"CaTiO3_001": -1.5, "CaTiO3_000": 0.25}
    rows = evaluate_source(out, plugin_manager=plugin_manager, progress=False).rows
    assert {r["name"]: r["score"] for r in rows} == {"CaTiO3_000": 0.25, "CaTiO3_001": -1.5}


def test_cli_evaluate_csv_json_and_plots(tmp_path, perov_cifs, plugin_manager):
    folder = tmp_path / "cifs"
    write_cifs(folder, perov_cifs[:3])
    out_csv = tmp_path / "results.csv"
    plots = tmp_path / "plots"
    result = _invoke(plugin_manager, ["evaluate", str(folder), "-o", str(out_csv), "--plots", str(plots), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["n_cifs"] == 3 and len(payload["plots"]) == 3
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and "bond_length_score" in rows[0] and "space_group_detected" in rows[0]
    for png in plots.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = _invoke(plugin_manager, ["evaluate", str(folder)])
    assert text.exit_code == 0 and "space group consistent:" in text.output and "+-" in text.output


def test_cli_evaluate_bad_input_one_line(tmp_path, plugin_manager):
    missing = _invoke(plugin_manager, ["evaluate", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "No such file or folder" in missing.output
    assert "Traceback" not in missing.output
    (tmp_path / "empty").mkdir()
    empty = _invoke(plugin_manager, ["evaluate", str(tmp_path / "empty")])
    assert empty.exit_code == 1 and "no CIF files found" in empty.output
    unknown = _invoke(plugin_manager, ["evaluate", str(tmp_path / "empty"), "--require", "tolerance_fctor"])
    assert unknown.exit_code == 1 and "Unknown validator" in unknown.output
    workers = _invoke(plugin_manager, ["evaluate", str(tmp_path / "empty"), "--workers", "0"])
    assert workers.exit_code == 1 and "--workers" in workers.output


class _Exploding:
    """A validator that always crashes (stands in for a buggy third-party check)."""

    def check(self, cif, context):
        raise RuntimeError("boom")


def _validator_plugin(name, factory, description):
    """An in-process plugin object registering one validator."""
    from crystalforge import hookimpl

    class _Plugin:
        @staticmethod
        @hookimpl
        def register_validators(register):
            register(name, factory, description=description)

    return _Plugin()


def test_a_crashing_check_is_recorded_not_fatal(tmp_path, perov_cifs, plugin_manager):
    plugin_manager.register(_validator_plugin("exploding", _Exploding, "always raises"), name="exploding-plugin")
    write_cifs(tmp_path / "cifs", perov_cifs[:2])
    result = evaluate_source(tmp_path / "cifs", plugin_manager=plugin_manager, progress=False)
    for row in result.rows:
        assert row["exploding"] is False and "boom" in row["exploding_message"]
    assert result.summary["checks"]["exploding"]["count"] == 0
    required = evaluate_source(tmp_path / "cifs", plugin_manager=plugin_manager, require=["exploding"],
                               progress=False)
    assert required.summary["valid"]["count"] == 0


class _NumpyCheck:
    """A validator that answers with NumPy scalars, as checks built on array maths do."""

    def check(self, cif, context):
        import numpy as np

        from crystalforge.validation.report import CheckResult

        volume = np.float64(context.structure.volume) if context.structure is not None else np.float64(0)
        return CheckResult(name="numpy_volume", passed=volume > 1.0, score=volume / (volume + 1))


def test_a_check_answering_numpy_scalars_is_counted(tmp_path, perov_cifs, plugin_manager):
    from crystalforge.evaluation.evaluate import summary_lines

    plugin_manager.register(_validator_plugin("numpy_volume", _NumpyCheck, "passes with a numpy.bool_"),
                            name="numpy-plugin")
    write_cifs(tmp_path / "cifs", perov_cifs[:3])
    result = evaluate_source(tmp_path / "cifs", plugin_manager=plugin_manager, progress=False)
    for row in result.rows:
        assert row["numpy_volume"] is True and type(row["numpy_volume_score"]) is float
    assert result.summary["checks"]["numpy_volume"] == {"count": 3, "total": 3, "rate": 1.0}
    lines = list(summary_lines(result.summary))
    assert any(line.strip().startswith("numpy_volume:") and "3/3" in line for line in lines)
    assert "valid by crystal system:" in lines
