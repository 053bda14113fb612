"""The data pipeline on real Perov-5 / Carbon-24 slices: ingest, preprocess, dedupe, split, tokenize."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CARBON_CSV, PEROV_CSV, read_csv_slice
from crystalforge.cif.io import write_cifs
from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.cli import cli
from crystalforge.data.dedupe import dedupe, dedupe_key
from crystalforge.data.ingest import ingest, read_items
from crystalforge.data.pipeline import parse_steps, prepare
from crystalforge.data.split import split_items
from crystalforge.data.tokenize import load_meta, load_starts, safe_load_pickle, training_text
from crystalforge.errors import DataError

OUTPUT_FILES = ("prep.tar.gz", "dedup.tar.gz", "train.tar.gz", "val.tar.gz", "test.tar.gz", "train.bin", "val.bin",
                "meta.pkl", "starts.pkl", "starts_val.pkl", "failures.csv", "manifest.json")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Two CSV sources: 40 raw Perov-5 and 20 raw Carbon-24 CIFs."""
    folder = tmp_path_factory.mktemp("sources")
    perov, carbon = folder / "perov.csv", folder / "carbon.csv"
    write_cifs(perov, read_csv_slice(PEROV_CSV, 0, 40))
    write_cifs(carbon, read_csv_slice(CARBON_CSV, 0, 20))
    return [perov, carbon]


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(sources, out, workers=2, seed=0, progress=False)
    return out


def test_prepare_writes_crystallm_layout(prepared):
    for name in OUTPUT_FILES:
        assert (prepared / name).is_file(), name
    manifest = json.loads((prepared / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["ingested"] == 60 and counts["preprocessed"] == 60
    assert counts["deduplicated"] + counts["duplicates"] == 60
    assert counts["train"] + counts["val"] + counts["test"] == counts["deduplicated"]
    assert manifest["seed"] == 0

    tokenizer = default_tokenizer()
    meta = load_meta(prepared / "meta.pkl")
    assert meta["vocab_size"] == tokenizer.vocab_size == 371
    assert meta["itos"][0] == tokenizer.itos[0] and meta["stoi"]["data_"] == tokenizer.stoi["data_"]

    ids = np.fromfile(prepared / "train.bin", dtype=np.uint16)
    starts = load_starts(prepared / "starts.pkl")
    assert len(starts) == counts["train"] and list(starts) == sorted(starts) and starts[0] == 0
    assert int(ids.max()) < tokenizer.vocab_size
    bounds = list(starts) + [len(ids)]
    for begin, end in zip(bounds, bounds[1:]):
        text = tokenizer.decode(ids[begin:end])
        assert text.startswith("data_") and text.endswith("\n\n") and not text.endswith("\n\n\n")
        assert ids[end - 1] == ids[end - 2] == tokenizer.newline_id
    # the tokenized CIFs are those of train.tar.gz, in order
    train_items = read_items(prepared / "train.tar.gz")
    first = tokenizer.decode(ids[bounds[0]:bounds[1]])
    assert first == tokenizer.normalized_text(training_text(train_items[0][1]))
    val_ids = np.fromfile(prepared / "val.bin", dtype=np.uint16)
    assert len(load_starts(prepared / "starts_val.pkl")) == counts["val"] and len(val_ids) > 0


def test_rerun_is_byte_identical(sources, prepared, tmp_path):
    again = tmp_path / "again"
    prepare(sources, again, workers=1, seed=0, progress=False)
    for name in OUTPUT_FILES:
        assert (again / name).read_bytes() == (prepared / name).read_bytes(), name


def test_later_steps_rerun_from_files(prepared, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    result = prepare(None, copy, steps="split,tokenize", seed=5, val_fraction=0.2, progress=False)
    assert result.steps == ("split", "tokenize")
    before = {n for n, _ in read_items(prepared / "val.tar.gz")}
    after = {n for n, _ in read_items(copy / "val.tar.gz")}
    assert before != after
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["counts"]["ingested"] == 60  # earlier counts kept
    prepare(None, copy, steps="tokenize", progress=False)  # tokenize alone keeps the split's counts
    assert json.loads((copy / "manifest.json").read_text())["counts"]["val"] == manifest["counts"]["val"]
    with pytest.raises(DataError, match="run the 'preprocess' step"):
        prepare(None, tmp_path / "empty", steps="dedupe", progress=False)
    with pytest.raises(DataError, match="unknown step 'tokenise'"):
        parse_steps("split,tokenise")


def test_bad_cifs_are_listed_not_fatal(tmp_path, perov_raw):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name, text in perov_raw[:3]:
        (folder / f"{name}.cif").write_text(text)
    (folder / "empty.cif").write_text("")
    (folder / "garbage.cif").write_text("data_X\n_cell_length_a nonsense\n")
    (folder / "binary.cif").write_bytes(b"\x00\x01\x02binary")
    result = prepare([folder], tmp_path / "out", steps="preprocess,dedupe", progress=False)
    assert result.counts["preprocessed"] == 3
    with open(tmp_path / "out" / "failures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    failed = {(r["step"], r["name"]) for r in rows}
    assert {("ingest", "empty"), ("ingest", "binary"), ("preprocess", "garbage")} <= failed
    assert all(r["error"] and "\n" not in r["error"] for r in rows)
    # preprocessing again without dedupe drops the now stale dedup.tar.gz
    assert (tmp_path / "out" / "dedup.tar.gz").exists()
    again = prepare([folder], tmp_path / "out", steps="preprocess", progress=False)
    assert not (tmp_path / "out" / "dedup.tar.gz").exists() and "duplicates" not in again.manifest["counts"]


def test_dedupe_keeps_lowest_volume_per_formula_unit(perov_raw):
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    name, raw = perov_raw[0]
    structure = Structure.from_str(raw, fmt="cif")
    bigger = structure.copy()
    bigger.scale_lattice(structure.volume * 1.1)
    supercell = structure.copy()
    supercell.make_supercell([2, 1, 1])  # same formula per unit and volume per unit: a duplicate
    items = [("big", str(CifWriter(bigger))), (name, raw), ("super", str(CifWriter(supercell))), perov_raw[1]]
    result = dedupe(items, progress=False)
    assert [n for n, _ in result.items] == [name, perov_raw[1][0]]
    assert result.duplicates == {"big": name, "super": name}
    # raw P1 text: the symmetry is detected, so the raw CIF and its preprocessed form agree
    from crystalforge.cif.preprocess import preprocess_cif

    assert dedupe_key(raw).space_group == dedupe_key(preprocess_cif(raw)).space_group != "P1"


def test_split_is_seeded_and_can_group_polymorphs(prepared):
    items = read_items(prepared / "prep.tar.gz")
    first = split_items(items, seed=3, val_fraction=0.2, test_fraction=0.2)
    again = split_items(list(reversed(items)), seed=3, val_fraction=0.2, test_fraction=0.2)
    assert first == again and first.counts() == {"train": 36, "val": 12, "test": 12}
    assert split_items(items, seed=4, val_fraction=0.2, test_fraction=0.2) != first

    from crystalforge.data.split import reduced_composition

    grouped = split_items(items, seed=3, val_fraction=0.2, test_fraction=0.2, group_polymorphs=True)
    where = {}
    for split_name in ("train", "val", "test"):
        for _, text in getattr(grouped, split_name):
            where.setdefault(reduced_composition(text), set()).add(split_name)
    assert all(len(s) == 1 for s in where.values())  # every composition (e.g. C) in one split
    assert sum(grouped.counts().values()) == len(items)
    with pytest.raises(DataError, match="val_fraction"):
        split_items(items, val_fraction=1.5)
    with pytest.raises(DataError, match="below 1"):
        split_items(items, val_fraction=0.6, test_fraction=0.5)


def test_ingest_reads_every_source_kind_with_unique_names(tmp_path, perov_raw):
    write_cifs(tmp_path / "a.tar.gz", perov_raw[:2])
    write_cifs(tmp_path / "b.csv", perov_raw[:2])
    result = ingest([tmp_path / "a.tar.gz", tmp_path / "b.csv"])
    names = [n for n, _ in result.items]
    assert len(names) == 4 and len(set(names)) == 4
    assert names[2] == f"{perov_raw[0][0]}-2"
    with pytest.raises(DataError, match="No such file"):
        ingest([tmp_path / "missing.csv"])


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickles_that_run_code_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "starts.pkl"
    evil.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(DataError, match="refusing to load posix.system|refusing to load os.system|refusing"):
        load_starts(evil)
    with pytest.raises(DataError, match="refusing"):
        load_meta(evil)
    assert not (tmp_path / "PWNED").exists()
    # plain data, including numpy arrays of starts, still loads
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(np.array([5, 0, 9])))
    assert list(load_starts(tmp_path / "ok.pkl")) == [0, 5, 9]
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="unreadable pickle"):
        safe_load_pickle(tmp_path / "bad.pkl")


def test_cli_prepare_and_single_steps(sources, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["data", "prepare", str(sources[0]), str(out), "--steps", "preprocess",
                                 "-j", "1", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["preprocessed"] == 40
    result = runner.invoke(cli, ["data", "dedupe", str(out / "prep.tar.gz"), str(tmp_path / "d.tar.gz"),
                                 "-j", "1", "--no-progress"])
    assert result.exit_code == 0, result.output and "kept:" in result.output
    result = runner.invoke(cli, ["data", "split", str(tmp_path / "d.tar.gz"), str(tmp_path / "s"), "--seed", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["data", "tokenize", str(tmp_path / "s"), "--train", str(tmp_path / "s" / "train.tar.gz"),
                                 "--val", str(tmp_path / "s" / "val.tar.gz"), "-j", "1", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["train_cifs"] > 0 and (tmp_path / "s" / "starts.pkl").exists()


def test_cli_missing_source_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["data", "prepare", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "No such file or folder" in result.output
    result = CliRunner().invoke(cli, ["data", "prepare", str(tmp_path / "out"), "--steps", "tokenize"])
    assert result.exit_code == 1 and "run the 'split' step" in result.output


def test_ingest_crystallm_pickle(tmp_path, perov_raw):
    import gzip

    pytest.importorskip("crystalforge.data.pickles")
    path = tmp_path / "cifs.pkl.gz"
    with gzip.open(path, "wb") as handle:  # CrystaLLM's layout: a pickled list of (id, cif) pairs
        pickle.dump(list(perov_raw[:3]), handle)
    result = prepare([path], tmp_path / "out", steps="preprocess", progress=False)
    assert result.counts["preprocessed"] == 3
    # archives are read back in name order (reproducible runs), not insertion order
    assert [n for n, _ in read_items(tmp_path / "out" / "prep.tar.gz")] == sorted(n for n, _ in perov_raw[:3])
