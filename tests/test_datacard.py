"""A model's data card: computed from a tokenized dataset, stored in checkpoints, warning on reach."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import CARBON_CSV, PEROV_CSV, read_csv_slice
from crystalforge.cif.extract import extract_formula, extract_space_group, extract_z
from crystalforge.cif.io import write_cifs
from crystalforge.data.ingest import read_items
from crystalforge.data.pipeline import prepare
from crystalforge.data.tokenize import encode_cif
from crystalforge.errors import CompositionError, DataError, SpaceGroupError
from crystalforge.model.datacard import (
    CHECKPOINT_KEY,
    EMBEDDED_CARD,
    DataCard,
    card_from_checkpoint,
    card_from_dataset,
    dataset_name,
    embedded_data_card,
    estimate_cif_tokens,
    load_data_card,
    reach_warnings,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tokenized dataset of 16 Perov-5 and 8 Carbon-24 structures from two named sources."""
    folder = tmp_path_factory.mktemp("card_data")
    (folder / "perov_5").mkdir()
    (folder / "carbon_24").mkdir()
    write_cifs(folder / "perov_5" / "val.csv", read_csv_slice(PEROV_CSV, 40, 16))
    write_cifs(folder / "carbon_24" / "val.csv", read_csv_slice(CARBON_CSV, 40, 8))
    prepare([folder / "perov_5" / "val.csv", folder / "carbon_24" / "val.csv"], folder / "data",
            steps="preprocess,split,tokenize", workers=1, progress=False, val_fraction=0.2, test_fraction=0.0)
    return folder / "data"


def test_card_from_dataset_matches_the_training_cifs(dataset):
    """The card read from train.bin agrees with the training split's CIF texts read in full."""
    card = card_from_dataset(dataset)
    cifs = [text for _, text in read_items(dataset / "train.tar.gz")]
    assert card.known and card.n_structures == len(cifs) > 10
    assert card.datasets == ["perov_5", "carbon_24"]
    elements: Counter[str] = Counter()
    atoms = []
    for cif in cifs:
        counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"([A-Z][a-z]?)(\d+)", extract_formula(cif))}
        elements.update(counts.keys())
        atoms.append(sum(counts.values()))
    assert card.elements == dict(elements)
    assert card.space_groups == dict(Counter(extract_space_group(cif) for cif in cifs))
    assert card.z_values == dict(Counter(extract_z(cif) for cif in cifs))
    assert card.max_atoms == max(atoms)
    assert card.max_tokens == max(len(encode_cif(cif)) for cif in cifs)
    assert card_from_dataset(dataset, datasets=["mine"]).datasets == ["mine"]


def test_card_from_dataset_errors(tmp_path, dataset):
    with pytest.raises(DataError, match="no train.bin"):
        card_from_dataset(tmp_path)
    (tmp_path / "train.bin").write_bytes((dataset / "train.bin").read_bytes())
    with pytest.raises(DataError, match="meta.pkl"):
        card_from_dataset(tmp_path)


def test_card_round_trips_as_json_and_in_a_weights_only_checkpoint(dataset, tmp_path):
    card = card_from_dataset(dataset)
    data = card.to_dict()
    assert DataCard.from_dict(json.loads(json.dumps(data))) == card
    torch.save({"model": {}, CHECKPOINT_KEY: data}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert card_from_checkpoint(loaded) == card
    assert all(isinstance(k, str) for k in data["z_values"])


def test_unknown_cards():
    crystallm_layout = {"model": {}, "model_args": {}, "iter_num": 0, "config": {}}
    assert card_from_checkpoint(crystallm_layout) == DataCard.unknown()
    assert not card_from_checkpoint({CHECKPOINT_KEY: {"format": "other/9"}}).known  # unreadable: unknown
    assert DataCard.from_dict(None) == DataCard.unknown()
    assert DataCard.from_dict(DataCard.unknown().to_dict()) == DataCard.unknown()
    assert DataCard.unknown().summary() == "unknown training data"
    with pytest.raises(DataError, match="not a data card"):
        DataCard.from_dict({"elements": {}})
    with pytest.raises(DataError, match="malformed"):
        DataCard.from_dict({"format": "crystalforge-data-card/1", "z_values": {"one": 3}})


def test_merged_cards():
    a = DataCard(datasets=["a"], n_structures=2, elements={"O": 2, "Ti": 1}, space_groups={"Pm-3m": 2},
                 z_values={1: 2}, max_atoms=5, max_tokens=300)
    b = DataCard(datasets=["b"], n_structures=1, elements={"C": 1}, space_groups={"Fd-3m": 1},
                 z_values={8: 1}, max_atoms=8, max_tokens=400)
    both = a.merged(b)
    assert both.datasets == ["a", "b"] and both.n_structures == 3 and both.elements == {"O": 2, "Ti": 1, "C": 1}
    assert both.z_values == {1: 2, 8: 1} and (both.max_atoms, both.max_tokens) == (8, 400)
    assert a.merged(a) == a  # the same data again adds nothing
    assert not a.merged(DataCard.unknown()).known and not DataCard.unknown().merged(a).known


def test_dataset_names():
    assert dataset_name("../shared/data/perov_5/val.csv") == "perov_5"
    assert dataset_name("data/mp_20/train.csv") == "mp_20"
    assert dataset_name("cifs_2024.tar.gz") == "cifs_2024"
    assert dataset_name("/x/cif_model_35.pkl.gz") == "cif_model_35"
    assert dataset_name("some/folder/") == "folder"


def test_embedded_card_describes_the_default_models_data():
    card = embedded_data_card()
    # MODEL_CARD.md: 4,655 training CIFs of Perov-5 and Carbon-24
    assert card.known and card.n_structures == 4655 and card.datasets == ["perov_5", "carbon_24"]
    assert {"C", "O", "Ti", "Ca", "Sr", "N", "F"} <= set(card.elements) and "Cl" not in card.elements
    assert {"Pm-3m", "P4/mmm", "C2/m", "Fd-3m"} <= set(card.space_groups)
    assert sum(card.space_groups.values()) == sum(card.z_values.values()) == 4655
    assert load_data_card() == card and load_data_card(EMBEDDED_CARD.parent) == card
    assert json.loads(EMBEDDED_CARD.read_text())["format"] == "crystalforge-data-card/1"


def test_reach_warnings_of_the_default_model():
    card = embedded_data_card()
    data = "its data: perov_5, carbon_24"
    assert reach_warnings(card, "Na4Cl4", "Fm-3m") == [
        f"the model never saw Cl in training ({data}; {len(card.elements)} elements)",
        f"the model never saw space group Fm-3m in training ({data}; {len(card.space_groups)} space groups)",
    ]
    assert reach_warnings(card, "LiFePO4") == [
        f"the model never saw P in training ({data}; {len(card.elements)} elements)"]
    assert reach_warnings(card, "CaTiO3", "Pm-3m") == []
    assert reach_warnings(card, {"Ca": 1, "Ti": 1, "O": 3}, 221) == []
    assert reach_warnings(card, "C8", "Fd-3m") == []
    assert reach_warnings(card, "C60") == [
        f"the model never saw a cell of 60 atoms in training (its largest: {card.max_atoms})"]
    assert reach_warnings(DataCard.unknown(), "Na4Cl4", "Fm-3m") == []
    with pytest.raises(SpaceGroupError, match="did you mean 'Fm-3m'"):
        reach_warnings(card, "NaCl", "Fm3m")
    with pytest.raises(CompositionError):
        reach_warnings(card, {"Na": 0.5})


def test_token_estimate_is_a_lower_bound_and_warns_past_the_longest_cif(dataset):
    for _, cif in read_items(dataset / "train.tar.gz"):
        counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"([A-Z][a-z]?)(\d+)", extract_formula(cif))}
        assert estimate_cif_tokens(counts) <= len(encode_cif(cif))
    card = DataCard(datasets=["x"], n_structures=1, elements={e: 1 for e in ("Ba", "Sr", "Ca", "Ti", "Zr", "O")},
                    space_groups={"P1": 1}, z_values={1: 1}, max_atoms=100, max_tokens=400)
    warnings = reach_warnings(card, "Ba1Sr1Ca1Ti1Zr1O6")
    assert warnings == [f"a CIF of this cell needs at least about {estimate_cif_tokens(dict.fromkeys('abcdef', 1))} "
                        "tokens; the longest the model saw had 400"]


def test_save_checkpoint_writes_the_card_as_an_extra_key(tmp_path):
    from crystalforge.errors import CheckpointError
    from crystalforge.model.checkpoint import load_checkpoint, save_checkpoint
    from crystalforge.model.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(block_size=16, vocab_size=371, n_layer=1, n_head=1, n_embd=8))
    card = embedded_data_card()
    written = save_checkpoint(tmp_path / "ckpt.pt", model, extra={CHECKPOINT_KEY: card.to_dict()})
    assert card_from_checkpoint(load_checkpoint(written)) == card == load_data_card(written)
    with pytest.raises(CheckpointError, match="standard key"):
        save_checkpoint(tmp_path / "bad.pt", model, extra={"model_args": {}})


def test_z_candidates():
    from crystalforge.model.datacard import z_candidates

    card = embedded_data_card()  # largest training cell: 48 atoms
    assert card.max_atoms == 48
    assert z_candidates("NaCl", "Fm-3m") == [4, 8]
    assert z_candidates("NaCl") == [1, 2, 3, 4, 6, 8]
    assert z_candidates("CaTiO3", "Pm-3m", card) == [1, 3, 4, 6, 8]
    assert z_candidates("LiFePO4", "Pnma", card) == [4]  # Z=8 would be 56 atoms
    assert z_candidates("LiFePO4", card=card) == [1, 2, 3, 4, 6]
    assert z_candidates("C", "Fd-3m", card) == [8]
    assert z_candidates("NaCl", "Fm-3m", max_atoms=7) == []
    assert z_candidates("Ca3Al2Si3O12", "Ia-3d") == [8]  # garnet
    # none of 1, 2, 3, 4, 6, 8 fits: the smallest Z that do (16a + 16b, 24c + 24d)
    assert z_candidates("NaCl", "Ia-3d") == [16, 24]
    assert z_candidates("CaTiO3", "Pm-3m", DataCard.unknown()) == [1, 3, 4, 6, 8]


def test_card_without_starts_file_finds_the_data_tokens(dataset, tmp_path):
    import shutil

    for name in ("train.bin", "meta.pkl"):
        shutil.copy(dataset / name, tmp_path / name)
    assert card_from_dataset(tmp_path, datasets=card_from_dataset(dataset).datasets) == card_from_dataset(dataset)
