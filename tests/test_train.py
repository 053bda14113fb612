"""Training: config parsing, a tiny run on real data, checkpoints, resume (also after SIGKILL), DDP."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import CARBON_CSV, PEROV_CSV, REPO, read_csv_slice
from crystalforge.cif.io import write_cifs
from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.cli import cli
from crystalforge.data.pipeline import prepare
from crystalforge.errors import CheckpointError, ConfigError, DataError
from crystalforge.model.checkpoint import load_checkpoint, load_model
from crystalforge.train.config import TrainConfig, load_config, parse_overrides
from crystalforge.train.dataset import open_dataset
from crystalforge.train.loop import learning_rate_at, train

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=256, batch_size=4, max_iters=20, eval_interval=10,
            eval_iters_train=2, eval_iters_val=2, learning_rate=1e-3, warmup_iters=2, lr_decay_iters=20,
            min_lr=1e-4, device="cpu", dtype="float32", always_save_checkpoint=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tokenized dataset of ~40 Perov-5 and ~20 Carbon-24 structures."""
    folder = tmp_path_factory.mktemp("train_data")
    source = folder / "slice.csv"
    write_cifs(source, read_csv_slice(PEROV_CSV, 100, 40) + read_csv_slice(CARBON_CSV, 100, 20))
    prepare([source], folder / "data", steps="preprocess,split,tokenize", workers=2, progress=False)
    return folder / "data"


def tiny_config(dataset: Path, out_dir: Path, **changes) -> TrainConfig:
    return TrainConfig(**{**TINY, "dataset": str(dataset), "out_dir": str(out_dir), **changes})


def write_yaml(path: Path, values: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


# --- configuration -------------------------------------------------------------------


def test_config_accepts_crystallm_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("out_dir: 'out/x'\neval_interval: 250\nlearning_rate: 1e-3\nmin_lr: 1e-4\ndecay_lr: True\n"
                    "validate: True\nwandb_log: False\nbackend: 'gloo'\ndtype: 'float16'\n")
    config = load_config(path, ["max_iters=30", "lr_decay_iters=30", "device=cpu"])
    assert config.learning_rate == 1e-3 and isinstance(config.learning_rate, float)
    assert config.max_iters == 30 and config.device == "cpu" and config.backend == "gloo"
    assert parse_overrides(["compile=true", "dataset=a/b"]) == {"compile": True, "dataset": "a/b"}


@pytest.mark.parametrize("text, message", [
    ("n_layers: 4\n", "unknown config key 'n_layers'. Did you mean 'n_layer'?"),
    ("batch_size: many\n", "config key 'batch_size' must be a int"),
    ("dropout: 1.5\n", "config key 'dropout' must be in [0, 1)"),
    ("n_embd: 30\nn_head: 4\n", "config key 'n_embd' (30) must be divisible"),
    ("dtype: float8\n", "config key 'dtype' must be one of"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_bad_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    result = CliRunner().invoke(cli, ["train", "--config", str(path)])
    assert result.exit_code == 1 and message in result.output
    assert result.output.strip().count("\n") == 0  # one line, no traceback


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.n_embd % config.n_head == 0 and config.dataset


def test_learning_rate_schedule():
    config = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=100, max_iters=100)
    rates = [learning_rate_at(i, config) for i in range(0, 120)]
    assert all(a < b for a, b in zip(rates[:10], rates[1:11]))  # warm-up rises
    assert rates[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:100], rates[11:101]))  # cosine falls
    assert rates[55] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))
    assert rates[100] == rates[119] == 1e-4
    assert learning_rate_at(50, config.replace(decay_lr=False)) == 1e-3


# --- data loading --------------------------------------------------------------------


def test_windows_start_at_cif_boundaries(dataset):
    opened = open_dataset(dataset, 256, need_val=True)
    x, y = opened.train.sample(8, 256, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 256)
    assert (x[:, 0] == default_tokenizer().stoi["data_"]).all()
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_missing_dataset_folder_is_one_line(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {**TINY, "dataset": str(tmp_path / "nowhere"), "out_dir": str(tmp_path)})
    result = CliRunner().invoke(cli, ["train", "-c", str(config), "--no-progress"])
    assert result.exit_code == 1
    assert "dataset folder not found" in result.output and result.output.strip().count("\n") == 0


def test_ids_beyond_vocabulary_are_refused(dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    ids = np.fromfile(broken / "train.bin", dtype=np.uint16)
    ids[123] = 500
    ids.tofile(broken / "train.bin")
    with pytest.raises(DataError, match="token id 500 at position 123 is beyond the vocabulary"):
        open_dataset(broken, 256)
    result = CliRunner().invoke(cli, ["train", "-c", str(write_yaml(tmp_path / "c.yaml", TINY)),
                                      f"dataset={broken}", f"out_dir={tmp_path / 'o'}", "--no-progress"])
    assert result.exit_code == 1 and "beyond the vocabulary" in result.output


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("name", ["meta.pkl", "starts.pkl"])
def test_code_in_dataset_pickles_is_refused(dataset, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil"
    shutil.copytree(dataset, evil)
    (evil / name).write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(DataError, match="refusing to load it"):
        train(tiny_config(evil, tmp_path / "out"), progress=False)
    assert not (tmp_path / "PWNED").exists()


# --- training ------------------------------------------------------------------------


def test_tiny_run_then_resume_and_finetune(dataset, tmp_path):
    out = tmp_path / "run"
    evals = []
    result = train(tiny_config(dataset, out), progress=False, on_eval=lambda i, losses: evals.append(i))
    assert result.iter_num == 20 and evals == [0, 10, 20]
    assert math.isfinite(result.train_loss) and math.isfinite(result.val_loss)
    assert result.val_loss < 5.5 < math.log(371) + 0.5  # it learned something from ~5.9
    assert result.tokens_per_second > 0 and result.tokens_seen == 19 * 4 * 256 and result.iterations_run == 20

    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["iter_num"] == 20 and ckpt["optimizer"] is not None and ckpt["config"]["n_embd"] == 32
    model = load_model(result.checkpoint)
    x = torch.from_numpy(np.fromfile(dataset / "val.bin", dtype=np.uint16)[:64].astype(np.int64))[None]
    logits, _ = model(x)
    assert logits.shape == (1, 64, 371) and torch.isfinite(logits).all()

    resumed = train(tiny_config(dataset, out, init_from="resume", max_iters=30, lr_decay_iters=30), progress=False)
    assert resumed.iter_num == 30 and load_checkpoint(out)["iter_num"] == 30
    assert resumed.iterations_run == 10  # only the missing iterations ran

    tuned = train(tiny_config(dataset, tmp_path / "tuned", init_from=str(out), max_iters=5, n_layer=6),
                  progress=False)
    tuned_ckpt = load_checkpoint(tuned.checkpoint)
    assert tuned.iter_num == 5 and tuned_ckpt["model_args"]["n_layer"] == 2  # the checkpoint's sizes win

    evaluated = train(tiny_config(dataset, out, init_from="resume", eval_only=True), progress=False)
    assert evaluated.iterations_run == 0 and math.isfinite(evaluated.val_loss)
    assert load_checkpoint(out)["iter_num"] == 30  # evaluation alone writes nothing

    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_config(dataset, tmp_path / "empty", init_from="resume"), progress=False)
    with pytest.raises(ConfigError, match="block_size"):
        train(tiny_config(dataset, tmp_path / "big", init_from=str(out), block_size=512), progress=False)


def test_cli_train_json(dataset, tmp_path):
    config = write_yaml(tmp_path / "tiny.yaml", {**TINY, "dataset": str(dataset), "out_dir": str(tmp_path / "o")})
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "max_iters=4", "eval_interval=2",
                                      "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    assert '"iter_num": 4' in result.output and (tmp_path / "o" / "ckpt.pt").exists()


def _python_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


@pytest.mark.slow
def test_resume_after_sigkill(dataset, tmp_path):
    config = write_yaml(tmp_path / "long.yaml", {**TINY, "dataset": str(dataset), "out_dir": str(tmp_path / "o"),
                                                 "max_iters": 100000, "lr_decay_iters": 100000, "eval_interval": 5})
    process = subprocess.Popen([sys.executable, "-m", "crystalforge", "train", "-c", str(config), "--no-progress"],
                               env=_python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt_path = tmp_path / "o" / "ckpt.pt"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if ckpt_path.exists() and load_checkpoint(ckpt_path)["iter_num"] >= 10:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.3)  # let it get into the middle of further steps or a checkpoint write
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = load_checkpoint(ckpt_path)  # the file is whole: written by rename
    killed_at = saved["iter_num"]
    assert killed_at >= 10 and killed_at % 5 == 0
    resumed = train(load_config(config, ["init_from=resume", f"max_iters={killed_at + 5}"]), progress=False)
    assert resumed.iter_num == killed_at + 5
    final = load_checkpoint(ckpt_path)
    assert final["iter_num"] == killed_at + 5
    assert final["optimizer"]["state"][0]["step"].item() == killed_at + 5  # optimizer state carried over
    assert torch.isfinite(load_model(ckpt_path)(torch.zeros(1, 8, dtype=torch.long))[0]).all()


@pytest.mark.slow
def test_torchrun_two_process_gloo(dataset, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    config = write_yaml(tmp_path / "ddp.yaml", {**TINY, "dataset": str(dataset), "out_dir": str(tmp_path / "o"),
                                                "max_iters": 6, "eval_interval": 3, "gradient_accumulation_steps": 2})
    completed = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2",
                                "-m", "crystalforge", "train", "-c", str(config), "--no-progress", "--json"],
                               env=_python_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count('"iter_num": 6') == 1  # only rank 0 reports
    ckpt = load_checkpoint(tmp_path / "o")
    assert ckpt["iter_num"] == 6
    model = load_model(tmp_path / "o")
    assert torch.isfinite(model(torch.zeros(1, 8, dtype=torch.long))[0]).all()


# --- data card -----------------------------------------------------------------------


def test_checkpoint_carries_the_data_card(dataset, tmp_path):
    from crystalforge.model.datacard import DataCard, card_from_checkpoint, card_from_dataset, load_data_card

    expected = card_from_dataset(dataset)
    assert expected.known and expected.datasets == ["slice"] and expected.n_structures > 30
    out = tmp_path / "run"
    train(tiny_config(dataset, out, max_iters=4, eval_interval=2), progress=False)
    ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["data_card"]["format"] == "crystalforge-data-card/1"
    assert card_from_checkpoint(ckpt) == expected == load_data_card(out)

    # resuming on the same data keeps the card as it is
    train(tiny_config(dataset, out, init_from="resume", max_iters=6, eval_interval=2), progress=False)
    assert load_data_card(out) == expected

    # fine-tuning a CrystaLLM-layout checkpoint (no card): what the base model saw is unknown
    base = {key: value for key, value in ckpt.items() if key != "data_card"}
    torch.save(base, tmp_path / "crystallm.pt")
    assert load_data_card(tmp_path / "crystallm.pt") == DataCard.unknown()
    train(tiny_config(dataset, tmp_path / "tuned", init_from=str(tmp_path / "crystallm.pt"), max_iters=2,
                      eval_interval=2), progress=False)
    assert load_data_card(tmp_path / "tuned") == DataCard.unknown()

    # fine-tuning a carded checkpoint on other data: the card holds both
    other = DataCard(datasets=["other"], n_structures=1, elements={"Xe": 1}, space_groups={"P1": 1},
                     z_values={1: 1}, max_atoms=1, max_tokens=200)
    torch.save({**base, "data_card": other.to_dict()}, tmp_path / "other.pt")
    train(tiny_config(dataset, tmp_path / "both", init_from=str(tmp_path / "other.pt"), max_iters=2,
                      eval_interval=2), progress=False)
    both = load_data_card(tmp_path / "both")
    assert both.datasets == ["other", "slice"] and both.n_structures == expected.n_structures + 1
    assert "Xe" in both.elements and both.max_atoms == expected.max_atoms
