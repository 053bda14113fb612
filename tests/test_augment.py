"""Symmetry-preserving augmentation on real Perov-5 and Carbon-24 structures."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from pymatgen.analysis.structure_matcher import StructureMatcher

from conftest import CARBON_CSV, PEROV_CSV, read_csv_slice
from crystalforge.cif.extract import extract_site_multiplicities, extract_space_group
from crystalforge.cif.io import write_cifs
from crystalforge.cif.postprocess import postprocess_cif
from crystalforge.cif.preprocess import parse_structure, preprocess_cif
from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.cli import cli
from crystalforge.data.augment import augment_cif, augment_items, decoder_operators, orbit, origin_shifts, original_name
from crystalforge.data.ingest import read_items
from crystalforge.data.pipeline import prepare
from crystalforge.data.tokenize import load_starts
from crystalforge.errors import OptionError
from crystalforge.validation.report import validate

CHECKS = ("formula_consistency", "site_multiplicity", "space_group")


@pytest.fixture(scope="module")
def canonical():
    """12 real structures (8 Perov-5, 4 Carbon-24 from spread-out rows): raw and canonical text."""
    rows = read_csv_slice(PEROV_CSV, 0, 40)[::5] + read_csv_slice(CARBON_CSV, 0, 40)[::10]
    return [(rid, raw, preprocess_cif(raw)) for rid, raw in rows]


def _site_rows(text: str) -> list[str]:
    """The site-loop rows: type, label, multiplicity, x, y, z, occupancy."""
    return [line for line in text.splitlines() if len(line.split()) == 7 and line.split()[2].isdigit()]


def _verdicts(text: str, manager) -> dict[str, bool]:
    report = validate(postprocess_cif(text), plugin_manager=manager)
    return {name: report.checks[name].passed for name in CHECKS}


def test_every_variant_decodes_to_the_same_structure(canonical, plugin_manager):
    matcher = StructureMatcher()
    sizes = []
    for rid, raw, text in canonical:
        original = parse_structure(raw)
        variants = augment_cif(text, 4, seed=0)
        sizes.append(len(variants))
        assert variants[0] == text and len(set(variants)) == len(variants), rid
        expected = _verdicts(text, plugin_manager)
        for variant in variants[1:]:
            assert variant != text
            decoded = parse_structure(postprocess_cif(variant))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert matcher.fit(original, decoded), (rid, variant)
            # the conventional cell the canonical text describes, atom for atom
            assert decoded.composition == parse_structure(postprocess_cif(text)).composition, rid
            assert extract_site_multiplicities(variant) == extract_site_multiplicities(text)
            assert extract_space_group(variant) == extract_space_group(text)
            # everything but the site rows is the canonical text
            assert [l for l in variant.splitlines() if l not in _site_rows(variant)] == \
                   [l for l in text.splitlines() if l not in _site_rows(text)]
            assert _verdicts(variant, plugin_manager) == expected, rid
            assert "<unk>" not in default_tokenizer().tokenize(variant)
    assert min(sizes) == 4  # even a cubic perovskite has 4 distinct texts


def test_variants_are_seeded_and_really_differ(canonical):
    text = canonical[-1][2]  # a Carbon-24 structure
    first = augment_cif(text, 6, seed=3)
    assert augment_cif(text, 6, seed=3) == first
    assert augment_cif(text, 6, seed=4) != first
    only_order = augment_cif(text, 3, seed=0, kinds=("order",))
    coordinates = [sorted(" ".join(row.split()[3:6]) for row in _site_rows(v)) for v in only_order]
    assert all(c == coordinates[0] for c in coordinates)  # rows permuted, positions kept
    assert augment_cif(text, 1) == [text]
    with pytest.raises(OptionError, match="at least 1"):
        augment_cif(text, 0)
    with pytest.raises(OptionError, match="unknown augmentation kind"):
        augment_cif(text, 2, kinds=("rotate",))


def test_origin_shifts_are_the_normalizer_translations():
    # Pm-3m: the body centre swaps 1a and 1b, nothing else on the mesh keeps the group
    assert sorted(origin_shifts("Pm-3m")) == [(0.0, 0.0, 0.0), (0.5, 0.5, 0.5)]
    # P4mm is polar along c: any z shift, and (1/2, 1/2, z)
    shifts = origin_shifts("P4mm")
    assert len(shifts) == 2 * 24 and all(t[0] == t[1] in (0.0, 0.5) for t in shifts)
    assert len(origin_shifts("P-1")) == 8 and len(origin_shifts("P1")) == 24**3
    # a shift keeps the operator set: every shifted operator is one of the group's
    rotations, translations = decoder_operators("Fm-3m")
    for shift in map(np.array, origin_shifts("Fm-3m")):
        for rotation, translation in zip(rotations, translations):
            moved = (translation + (np.eye(3) - rotation) @ shift) % 1.0
            same = translations[np.all(np.isclose(rotations, rotation), axis=(1, 2))]
            assert any(np.allclose(np.minimum((moved - t) % 1, 1 - (moved - t) % 1), 0, atol=1e-6) for t in same)
    assert (0.25, 0.25, 0.25) not in origin_shifts("Fm-3m")


def test_orbit_sizes_are_wyckoff_multiplicities():
    assert len(orbit([0.5, 0.5, 0.0], "Pm-3m")) == 3  # 3c
    assert len(orbit([0.0, 0.0, 0.0], "Fm-3m")) == 4  # 4a, centring included
    assert len(orbit([0.1, 0.2, 0.3], "P-1")) == 2


def test_unreproducible_multiplicities_are_not_varied(canonical):
    text = canonical[0][2]
    rows = _site_rows(text)
    broken = text.replace(rows[0], rows[0].replace("  1  ", "  2  ", 1), 1)
    assert augment_cif(broken, 4) == [broken]


def test_augment_items_names_shuffle_and_failures(canonical):
    items = [(rid, text) for rid, _, text in canonical[:4]] + [("bad", "data_X\nnothing here\n\n")]
    out, failures = augment_items(items, 3, seed=1, progress=False)
    assert failures and failures[0][0] == "bad"
    names = [name for name, _ in out]
    assert Counter(original_name(n) for n in names) == Counter({rid: 3 for rid, _ in items[:4]} | {"bad": 1})
    assert names != sorted(names, key=lambda n: [original_name(m) for m, _ in items].index(original_name(n)))
    assert augment_items(items, 3, seed=1, progress=False) == (out, failures)
    assert augment_items(items, 1, progress=False) == (items, [])


def test_prepare_augments_training_split_only(tmp_path):
    sources = tmp_path / "perov.csv"
    write_cifs(sources, read_csv_slice(PEROV_CSV, 0, 20) + read_csv_slice(CARBON_CSV, 0, 10))
    plain = tmp_path / "plain"
    prepare([sources], plain, steps="preprocess,split,tokenize", workers=1, seed=0, progress=False)
    augmented = tmp_path / "augmented"
    result = prepare([sources], augmented, steps="preprocess,split,tokenize", workers=1, seed=0, augment=4,
                     progress=False)
    counts = result.counts
    train = read_items(augmented / "train.tar.gz")
    assert counts["train_augmented"] == counts["train_cifs_tokenized"] == 4 * len(train)
    assert counts["val_cifs_tokenized"] == counts["val"]
    for name in ("val.bin", "starts_val.pkl", "train.tar.gz", "val.tar.gz", "test.tar.gz"):
        assert (augmented / name).read_bytes() == (plain / name).read_bytes(), name
    # every CIF start is marked, and the tokenized texts are the originals plus variants
    tokenizer = default_tokenizer()
    ids = np.fromfile(augmented / "train.bin", dtype=np.uint16)
    starts = list(load_starts(augmented / "starts.pkl"))
    assert len(starts) == 4 * len(train) and starts == sorted(starts)
    bounds = starts + [len(ids)]
    texts = [tokenizer.decode(ids[a:b]) for a, b in zip(bounds, bounds[1:])]
    assert all(t.startswith("data_") and t.endswith("\n\n") and not t.endswith("\n\n\n") for t in texts)
    originals = {tokenizer.normalized_text(text) for _, text in train}
    assert originals <= set(texts) and len(set(texts)) == len(texts)
    manifest = json.loads((augmented / "manifest.json").read_text())
    assert manifest["augment"] == 4 and manifest["augment_seed"] == 0
    # byte-identical rerun, through the CLI
    again = tmp_path / "again"
    run = CliRunner().invoke(cli, ["data", "prepare", str(sources), str(again), "--steps", "preprocess,split,tokenize",
                                   "--augment", "4", "--seed", "0", "-j", "1", "--no-progress"])
    assert run.exit_code == 0, run.output
    for name in ("train.bin", "starts.pkl", "val.bin", "manifest.json"):
        assert (again / name).read_bytes() == (augmented / name).read_bytes(), name
    bad = CliRunner().invoke(cli, ["data", "prepare", str(sources), str(tmp_path / "x"), "--augment", "0"])
    assert bad.exit_code == 1 and "--augment must be at least 1" in bad.output
    with pytest.raises(OptionError, match="tokenize step"):
        prepare([sources], tmp_path / "y", steps="preprocess,split", augment=2, progress=False)


def test_rows_of_a_disordered_site_move_together(canonical):
    structure = parse_structure(canonical[0][1])  # a real cubic Perov-5 cell, Pm-3m
    anion = max(structure.composition, key=lambda e: structure.composition[e])  # the 3c/3d site
    structure.replace_species({anion: {anion: 0.5, "S": 0.5}})
    text = preprocess_cif(structure.to(fmt="cif"))
    rows = _site_rows(text)
    shared = [r for r in rows if [s.split()[3:6] for s in rows].count(r.split()[3:6]) == 2]
    assert len(shared) == 2 and shared[0].split()[2] == "3"  # two rows share one site of 3 positions
    reference = parse_structure(postprocess_cif(text))
    for variant in augment_cif(text, 6, seed=0)[1:]:
        # as CifWriter writes a disordered site: one row per species, same coordinates
        occupancies = {}
        for row in _site_rows(variant):
            occupancies.setdefault(tuple(row.split()[3:6]), []).append(row.split()[-1])
        assert sorted(map(sorted, occupancies.values())) == sorted(map(sorted, [["0.5", "0.5"]] + [["1.0"]] * 2))
        decoded = parse_structure(postprocess_cif(variant))
        assert len(decoded) == len(reference) and decoded.composition == reference.composition
        assert StructureMatcher().fit(reference, decoded)


def _sites(cif: str) -> list[tuple[str, np.ndarray]]:
    """The decoded crystal's sites as (element, fractional position) pairs."""
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = Structure.from_str(postprocess_cif(cif), fmt="cif")
    return [(site.specie.symbol, np.asarray(site.frac_coords) % 1.0) for site in structure]


def _same_frame(a: str, b: str, tolerance: float = 2e-3) -> bool:
    """Whether two CIFs decode to the same atoms at the same places (modulo lattice vectors;
    4-decimal coordinates, so images of one point may differ in the last digit)."""
    left, right = _sites(a), _sites(b)
    if len(left) != len(right):
        return False
    for element, x in left:
        delta = np.array([(x - y + 0.5) % 1.0 - 0.5 for e, y in right if e == element])
        if not len(delta) or not np.any(np.all(np.abs(delta) < tolerance, axis=1)):
            return False
    return True


def test_kinds_without_origin_keep_every_site_in_the_original_frame(canonical, tmp_path):
    shifted = 0
    for _, _, text in canonical[:12]:
        for variant in augment_cif(text, 4, seed=3, kinds=("orbit", "order"))[1:]:
            assert _same_frame(variant, text)  # same atoms at the same places, not just equivalent
        shifted += sum(not _same_frame(v, text) for v in augment_cif(text, 4, seed=3)[1:])
    assert shifted, "with origin shifts some variants sit in another frame (else this test proves nothing)"
    # through prepare and the CLI: recorded in the manifest, bad kinds refused in one line
    sources = tmp_path / "perov.csv"
    write_cifs(sources, read_csv_slice(PEROV_CSV, 0, 10))
    out = tmp_path / "data"
    run = CliRunner().invoke(cli, ["data", "prepare", str(sources), str(out), "--steps", "preprocess,split,tokenize",
                                   "--augment", "3", "--augment-kinds", "order,orbit", "-j", "1", "--no-progress"])
    assert run.exit_code == 0, run.output
    assert json.loads((out / "manifest.json").read_text())["augment_kinds"] == ["orbit", "order"]
    bad = CliRunner().invoke(cli, ["data", "prepare", str(sources), str(tmp_path / "x"), "--augment", "2",
                                   "--augment-kinds", "orbit,spin"])
    assert bad.exit_code == 1 and "unknown augmentation kind 'spin'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
