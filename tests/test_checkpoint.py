"""Checkpoint I/O: CrystaLLM layout in and out, safe loading, clear one-line errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import crystalforge
from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.errors import CheckpointError, OptionError
from crystalforge.model import checkpoint as ckpt_module
from crystalforge.model.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    save_checkpoint,
)
from crystalforge.model.gpt import GPT, GPTConfig

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=256)


@pytest.fixture
def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**TINY)).eval()


def logits_of(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)[0]


IDX = torch.randint(0, 371, (2, 12), generator=torch.Generator().manual_seed(1))


def crystallm_style_checkpoint(model: GPT) -> dict:
    """A checkpoint dict laid out as CrystaLLM's train script writes it (compiled-model keys)."""
    return {
        "model": {f"_orig_mod.{k}": v.clone() for k, v in model.state_dict().items()},
        "model_args": dict(n_layer=2, n_head=2, n_embd=32, block_size=256, bias=True, vocab_size=371, dropout=0.1),
        "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "params": [0, 1]}]},
        "iter_num": 5000,
        "best_val_loss": torch.tensor(0.9123),
        "config": {"out_dir": "out/small", "batch_size": 32, "compile": True, "dataset": "tokens_v1"},
    }


def test_crystallm_layout_written_by_hand_loads_with_identical_logits(tmp_path, tiny_model):
    torch.save(crystallm_style_checkpoint(tiny_model), tmp_path / "ckpt.pt")
    loaded = load_model(tmp_path)  # folder holding ckpt.pt
    assert not loaded.training
    assert loaded.config.n_layer == 2 and loaded.config.dropout == pytest.approx(0.1)
    assert torch.equal(logits_of(loaded, IDX), logits_of(tiny_model, IDX))
    assert torch.equal(logits_of(load_model(tmp_path / "ckpt.pt"), IDX), logits_of(tiny_model, IDX))


def test_numpy_scalars_in_checkpoint_load(tmp_path, tiny_model):
    import numpy as np

    ckpt = crystallm_style_checkpoint(tiny_model)
    ckpt["best_val_loss"] = np.float64(0.5)
    ckpt["config"]["batch_size"] = np.int64(32)
    torch.save(ckpt, tmp_path / "ckpt.pt")
    loaded = load_checkpoint(tmp_path)
    assert float(loaded["best_val_loss"]) == 0.5 and int(loaded["config"]["batch_size"]) == 32


def test_old_nanogpt_mask_buffers_are_ignored(tmp_path, tiny_model):
    ckpt = crystallm_style_checkpoint(tiny_model)
    for layer in range(2):
        ckpt["model"][f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones(1, 1, 256, 256))
    del ckpt["model"]["_orig_mod.lm_head.weight"]  # tied: wte alone is enough
    model = model_from_checkpoint(ckpt)
    assert torch.equal(logits_of(model, IDX), logits_of(tiny_model, IDX))


def test_save_checkpoint_roundtrip_with_layout_and_version(tmp_path, tiny_model):
    optimizer = tiny_model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    tiny_model.train()
    loss = tiny_model(IDX, IDX)[1]
    loss.backward()
    optimizer.step()
    tiny_model.eval()
    path = save_checkpoint(
        tmp_path / "run" / "ckpt.pt",
        tiny_model,
        optimizer=optimizer,
        iter_num=7,
        best_val_loss=torch.tensor(1.5),
        config={"out_dir": tmp_path / "run", "betas": (0.9, 0.95), "lr": 1e-3, "nested": {"a": [1, 2]}},
    )
    assert path == tmp_path / "run" / "ckpt.pt"
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)  # what CrystaLLM (and anyone) can read
    assert set(raw) == {
        "model", "model_args", "optimizer", "iter_num", "best_val_loss", "config", "format_version", "vocab_hash",
    }
    assert raw["model_args"] == dict(
        n_layer=2, n_head=2, n_embd=32, block_size=256, bias=True, vocab_size=371, dropout=0.0
    )
    assert raw["format_version"] == FORMAT_VERSION == 1
    assert raw["vocab_hash"] == default_tokenizer().vocab_hash
    assert raw["iter_num"] == 7 and raw["best_val_loss"] == 1.5
    assert raw["config"]["out_dir"] == str(tmp_path / "run")
    assert raw["optimizer"]["state"]  # the Adam moments are there
    restored = load_model(path)
    assert torch.equal(logits_of(restored, IDX), logits_of(tiny_model, IDX))
    # resuming: the optimizer state loads back into a fresh optimizer
    fresh = restored.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    fresh.load_state_dict(load_checkpoint(path)["optimizer"])


def test_save_into_existing_folder_and_compiled_wrapper(tmp_path, tiny_model):
    class Compiled(torch.nn.Module):  # what torch.compile hands back: the model under _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    path = save_checkpoint(tmp_path, Compiled(tiny_model))
    assert path == tmp_path / "ckpt.pt"
    raw = torch.load(path, weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in raw["model"])
    assert raw["optimizer"] is None and raw["best_val_loss"] == float("inf")


def test_config_with_objects_is_refused(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="config.bad holds a object"):
        save_checkpoint(tmp_path / "ckpt.pt", tiny_model, config={"bad": object()})
    assert not list(tmp_path.iterdir())


def test_truncated_checkpoint(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "ckpt.pt", tiny_model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_random_bytes_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a valid PyTorch checkpoint"):
        load_model(path)


class _Exploit:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_executes_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"model": {}, "model_args": _Exploit(marker)}, protocol=2))
    zipped = tmp_path / "zipped.pt"
    torch.save({"model": {}, "model_args": {}, "x": _Exploit(marker)}, zipped)
    for path in (plain, zipped):
        with pytest.raises(CheckpointError, match="refers to Python code .*system.*safe load refuses"):
            load_checkpoint(path)
    assert not marker.exists()


def test_not_a_checkpoint_dicts(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict, found list"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"model": {}}, tmp_path / "nokeys.pt")
    with pytest.raises(CheckpointError, match="missing key\\(s\\) model_args"):
        load_checkpoint(tmp_path / "nokeys.pt")


def test_missing_paths(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "crystallm_v1_small").mkdir()
    (tmp_path / "crystallm_v1_small" / "ckpt.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no ckpt.pt in folder .*did you mean .*crystallm_v1_small"):
        load_checkpoint(tmp_path)


def test_vocabulary_mismatch_is_refused(tiny_model):
    ckpt = crystallm_style_checkpoint(tiny_model)
    ckpt["vocab_hash"] = "0123456789abcdef"
    with pytest.raises(CheckpointError, match="vocab_hash 0123456789abcdef does not match"):
        model_from_checkpoint(ckpt)
    small = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=372))
    ckpt = {"model": small.state_dict(), "model_args": small.config.to_dict()}
    with pytest.raises(CheckpointError, match="vocabulary size 372 does not match the tokenizer's 371"):
        model_from_checkpoint(ckpt)


def test_weights_that_do_not_fit_model_args(tiny_model):
    ckpt = crystallm_style_checkpoint(tiny_model)
    ckpt["model_args"]["n_embd"] = 64
    with pytest.raises(CheckpointError, match="has shape"):
        model_from_checkpoint(ckpt)
    ckpt = crystallm_style_checkpoint(tiny_model)
    ckpt["model_args"]["n_layer"] = 3
    with pytest.raises(CheckpointError, match="missing"):
        model_from_checkpoint(ckpt)
    ckpt["model_args"]["n_head"] = 5
    with pytest.raises(CheckpointError, match="divisible"):
        model_from_checkpoint(ckpt)


def test_dtype_and_device_options(tmp_path, tiny_model):
    save_checkpoint(tmp_path, tiny_model)
    assert load_model(tmp_path, dtype="bfloat16").dtype == torch.bfloat16
    assert load_model(tmp_path, dtype=torch.float16).dtype == torch.float16
    assert load_model(tmp_path, dtype="float32").dtype == torch.float32
    with pytest.raises(OptionError, match="unknown model dtype 'int8'"):
        load_model(tmp_path, dtype="int8")
    with pytest.raises(OptionError, match="unsupported model dtype"):
        load_model(tmp_path, dtype=torch.int64)
    with pytest.raises(OptionError, match="unknown torch device"):
        load_model(tmp_path, device="gpu7")


def test_bfloat16_model_decodes_with_cache(tmp_path, tiny_model):
    save_checkpoint(tmp_path, tiny_model)
    model = load_model(tmp_path, dtype="bfloat16")
    cache = model.new_cache(2, max_len=16)
    assert cache.keys.dtype == torch.bfloat16
    with torch.no_grad():
        logits = model.forward_cached(IDX, cache)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_default_model_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_module, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    with pytest.raises(CheckpointError, match="no embedded default model"):
        load_model()


def test_default_model_is_used_when_present(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setattr(ckpt_module, "DEFAULT_MODEL_DIR", tmp_path)
    save_checkpoint(tmp_path, tiny_model)
    assert torch.equal(logits_of(load_model(), IDX), logits_of(tiny_model, IDX))


def test_public_api_and_plugin_component(tmp_path, tiny_model, plugin_manager):
    save_checkpoint(tmp_path, tiny_model)
    assert crystalforge.load_model is load_model
    component = plugin_manager.registry("model").get("gpt")
    model = component.create(path=str(tmp_path), dtype="float32")
    assert torch.equal(logits_of(model, IDX), logits_of(tiny_model, IDX))


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path):
    """Any command taking a model must show a broken checkpoint as one line (checked via a tiny command)."""
    import click

    from crystalforge.cli import LazyGroup

    @click.group(cls=LazyGroup)
    @click.pass_context
    def group(ctx):
        ctx.ensure_object(dict)

    @group.command()
    @click.argument("path")
    def load(path):
        load_model(path)

    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    result = CliRunner().invoke(group, ["load", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot read checkpoint") and result.output.count("\n") == 1
