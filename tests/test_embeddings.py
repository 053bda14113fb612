"""Tests of token-embedding export with a tiny random-weight model checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.cli import cli
from crystalforge.errors import DataError, OptionError
from crystalforge.evaluation.embeddings import (
    project_2d,
    read_embeddings,
    token_embeddings,
    tokens_of_kind,
    write_embeddings,
)
from crystalforge.model.checkpoint import load_model, save_checkpoint
from crystalforge.model.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256))
    path = tmp_path_factory.mktemp("emb") / "ckpt.pt"
    save_checkpoint(path, model)
    return path


def test_token_kinds_follow_the_vocabulary():
    tokenizer = default_tokenizer()
    atoms = tokens_of_kind(tokenizer, "atom")
    assert len(atoms) == 89 and atoms[:3] == ["Si", "C", "Pb"]
    groups = tokens_of_kind(tokenizer, "spacegroup")
    assert len(groups) == 227 and all(t.endswith("_sg") for t in groups)
    assert tokens_of_kind(tokenizer, "digit") == [str(d) for d in range(10)]
    with pytest.raises(OptionError, match="Available: atom, spacegroup, digit"):
        tokens_of_kind(tokenizer, "atoms")


def test_embeddings_are_the_wte_rows_and_round_trip(tmp_path, tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    tokenizer = default_tokenizer()
    tokens, vectors = token_embeddings(model, tokenizer, "digit")
    weight = model.transformer.wte.weight.detach().numpy()
    assert np.allclose(vectors[3], weight[tokenizer.stoi["3"]])
    path = tmp_path / "digits.csv"
    write_embeddings(path, tokens, vectors)
    read_tokens, read_vectors = read_embeddings(path)
    assert read_tokens == tokens and read_vectors.shape == (10, 32)
    assert np.array_equal(read_vectors, vectors)  # repr() floats: exact round trip


def test_read_embeddings_rejects_other_csvs(tmp_path):
    (tmp_path / "bad.csv").write_text("name,x\nA,1\n")
    with pytest.raises(DataError, match="not an embeddings CSV"):
        read_embeddings(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("token,v0,v1\nA,1\n")
    with pytest.raises(DataError, match="line 2"):
        read_embeddings(tmp_path / "ragged.csv")
    with pytest.raises(DataError, match="No such embeddings file"):
        read_embeddings(tmp_path / "none.csv")


def test_pca_projection_keeps_the_main_direction():
    rng = np.random.default_rng(0)
    line = np.outer(np.linspace(-5, 5, 20), rng.normal(size=8)) + rng.normal(scale=0.01, size=(20, 8))
    coords = project_2d(line, "pca")
    assert coords.shape == (20, 2)
    assert np.var(coords[:, 0]) > 100 * np.var(coords[:, 1])
    with pytest.raises(OptionError):
        project_2d(line, "umap")


def test_cli_embeddings_csv_and_plot(tmp_path, tiny_checkpoint):
    out = tmp_path / "atoms.csv"
    png = tmp_path / "atoms.png"
    result = CliRunner().invoke(cli, ["embeddings", str(tiny_checkpoint), "--kind", "atom", "-o", str(out),
                                      "--plot", str(png), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tokens"] == 89
    tokens, vectors = read_embeddings(out)
    assert tokens[0] == "Si" and vectors.shape == (89, 32)
    assert png.read_bytes()[:4] == b"\x89PNG"
    sg = CliRunner().invoke(cli, ["embeddings", str(tiny_checkpoint), "--kind", "spacegroup", "-o",
                                  str(tmp_path / "sg.csv"), "--plot", str(tmp_path / "sg.png")])
    assert sg.exit_code == 0 and "227 spacegroup embeddings" in sg.output


def test_cli_embeddings_bad_input_one_line(tmp_path, tiny_checkpoint):
    missing = CliRunner().invoke(cli, ["embeddings", str(tmp_path / "no.pt"), "-o", str(tmp_path / "x.csv")])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    try:
        import sklearn  # noqa: F401
    except ImportError:
        tsne = CliRunner().invoke(cli, ["embeddings", str(tiny_checkpoint), "-o", str(tmp_path / "x.csv"),
                                        "--plot", str(tmp_path / "x.png"), "--method", "tsne"])
        assert tsne.exit_code == 1 and "scikit-learn" in tsne.output
        assert not (tmp_path / "x.csv").exists()
