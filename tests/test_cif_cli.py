"""``crystalforge prompt / preprocess / postprocess`` through CliRunner, with real CIFs and bad input."""

from __future__ import annotations

import csv
import tarfile

import pytest
from click.testing import CliRunner

from crystalforge.cif.io import iter_cifs, write_cifs
from crystalforge.cif.tokenizer import UNK, default_tokenizer
from crystalforge.cli import cli


def run(args, plugin_manager=None):
    obj = {"plugin_manager": plugin_manager} if plugin_manager is not None else None
    return CliRunner().invoke(cli, args, obj=obj)


def test_prompt_prints_and_writes(tmp_path):
    result = run(["prompt", "CaTiO3", "--spacegroup", "Pm-3m"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("data_Ca1Ti1O3\nloop_\n")
    assert result.output.endswith("_symmetry_space_group_name_H-M Pm-3m\n")
    out = tmp_path / "p.txt"
    result = run(["prompt", "NaCl", "--z", "4", "-o", str(out)])
    assert result.exit_code == 0 and out.read_text() == "data_Na4Cl4\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["prompt", "Xx3"], "unknown element 'Xx'"),
        (["prompt", "CaTiO3", "-s", "Pq"], "unknown space group 'Pq'"),
        (["prompt", "CaTiO3", "--z", "0"], "Z must be a whole number"),
    ],
)
def test_prompt_bad_input_is_one_line(args, message):
    result = run(args)
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output


def test_preprocess_csv_to_tar_then_postprocess(tmp_path, perov_raw):
    source = tmp_path / "raw.csv"
    write_cifs(source, perov_raw[:6])
    prep = tmp_path / "prep.tar.gz"
    result = run(["preprocess", str(source), str(prep), "-j", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "preprocessed 6 of 6 CIFs" in result.output
    assert not (tmp_path / "prep_failures.csv").exists()
    items = list(iter_cifs(prep))
    assert [n for n, _ in items] == sorted(n for n, _ in perov_raw[:6])
    tok = default_tokenizer()
    assert all(UNK not in tok.tokenize(text) for _, text in items)
    post = tmp_path / "post"
    result = run(["postprocess", str(prep), str(post), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(list(post.glob("*.cif"))) == 6
    assert all("_atom_type_" not in p.read_text() for p in post.glob("*.cif"))


def test_folder_with_bad_cifs_keeps_going(tmp_path, perov_raw):
    folder = tmp_path / "in"
    write_cifs(folder, perov_raw[:3])
    (folder / "empty.cif").write_text("")
    (folder / "binary.cif").write_bytes(b"\x00\x01\x02garbage" * 50)
    (folder / "truncated.cif").write_text(perov_raw[3][1][:300])
    (folder / "unknown_element.cif").write_text(perov_raw[4][1].replace(" Cu", " Qq"))
    out = tmp_path / "out.tar.gz"
    result = run(["preprocess", str(folder), str(out), "-j", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "preprocessed 3 of 7 CIFs" in result.output and "4 failed" in result.output
    with tarfile.open(out) as tar:
        assert len(tar.getnames()) == 3
    with open(tmp_path / "out_failures.csv", newline="") as handle:
        failures = {row["name"]: row["error"] for row in csv.DictReader(handle)}
    assert sorted(failures) == ["binary", "empty", "truncated", "unknown_element"]
    assert all(failures.values()) and all("\n" not in e for e in failures.values())
    assert "unknown element symbol(s): Qq" in failures["unknown_element"]
    assert "empty" in failures["empty"]
    for name in failures:  # one clear line each on stderr
        assert sum(line.startswith(f"failed: {name}:") for line in result.output.splitlines()) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"\x00\xff\x00binary", "binary file"),
        (b"data_x\n_cell_length_a 4\nloop_\n_atom_site_label\n_atom_site_fract_x\nCa0 0.5 0.1\n",
         "pymatgen cannot read"),
    ],
    ids=["empty", "binary", "truncated"],
)
def test_single_bad_file_is_exit_1_one_line(tmp_path, content, message):
    source = tmp_path / "bad.cif"
    source.write_bytes(content)
    result = run(["preprocess", str(source), str(tmp_path / "out.cif"), "--no-progress"])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
    assert not (tmp_path / "out.cif").exists()


def test_postprocess_unknown_space_group(tmp_path):
    source = tmp_path / "gen.cif"
    source.write_text("data_Ca1\n_symmetry_space_group_name_H-M Zz9\n")
    result = run(["postprocess", str(source), str(tmp_path / "o.cif"), "--no-progress"])
    assert result.exit_code == 1 and "unknown space group 'Zz9'" in result.output


def test_missing_source_is_usage_error(tmp_path):
    result = run(["preprocess", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output
