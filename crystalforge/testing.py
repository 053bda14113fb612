"""pytest plugin for crystalforge plugin authors (loaded through the ``pytest11`` entry point).

Fixtures:

- ``cf_plugin_manager`` -- an isolated plugin manager with the built-ins only (no installed
  third-party plugins leak into your tests);
- ``cf_register`` -- register a plugin object in-process on that manager:
  ``cf_register(MyPluginModule)`` returns the manager;
- ``cf_tiny_model`` -- a tiny random-weight GPT checkpoint file (vocabulary-compatible), for
  exercising generation and search code quickly;
- ``cf_sample_cifs`` -- a handful of real structures as ``(name, cif_text)`` pairs,
  preprocessed into crystalforge's canonical form (Perov-5 and Carbon-24 structures shipped
  in the package): what the model is trained on and generates;
- ``cf_sample_cifs_postprocessed`` -- the same structures as ordinary CIFs (full symmetry
  operators, no atom-properties block): what validators and scorers are given. Validate
  these, not the canonical ones: a canonical CIF lists only the identity operator, so
  pymatgen reads only the symmetry-distinct sites.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture
def cf_plugin_manager(monkeypatch: pytest.MonkeyPatch):
    """Return a fresh plugin manager holding crystalforge's built-in plugins only."""
    from crystalforge.plugins import BLOCK_ENV, STRICT_ENV, make_plugin_manager

    monkeypatch.delenv(BLOCK_ENV, raising=False)
    monkeypatch.delenv(STRICT_ENV, raising=False)
    return make_plugin_manager(entry_points=False)


@pytest.fixture
def cf_register(cf_plugin_manager) -> Callable[..., Any]:
    """Return ``register(plugin, name=None)`` adding a plugin object to ``cf_plugin_manager``."""

    def register(plugin: Any, name: str | None = None):
        cf_plugin_manager.register(plugin, name=name or getattr(plugin, "__name__", None))
        return cf_plugin_manager

    return register


def write_tiny_model(path: Path, *, seed: int = 0, n_layer: int = 2, n_head: int = 2,
                     n_embd: int = 32, block_size: int = 512) -> Path:
    """Write a tiny random-weight GPT checkpoint to ``path`` (a ``ckpt.pt`` file) and return it."""
    import torch

    from crystalforge.model.checkpoint import save_checkpoint
    from crystalforge.model.gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size))
    save_checkpoint(path, model)
    return path


@pytest.fixture(scope="session")
def cf_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the path of a tiny random-weight GPT checkpoint (2 layers, 32 wide)."""
    return write_tiny_model(tmp_path_factory.mktemp("cf_tiny_model") / "ckpt.pt")


def sample_cifs() -> list[tuple[str, str]]:
    """Return the real sample structures shipped with crystalforge, canonical form."""
    data = json.loads(resources.files("crystalforge.assets").joinpath("sample_cifs.json").read_text())
    return [(item["name"], item["cif"]) for item in data]


@pytest.fixture(scope="session")
def cf_sample_cifs() -> list[tuple[str, str]]:
    """Return a handful of real structures ``(name, cif)`` in crystalforge's canonical form."""
    return sample_cifs()


@pytest.fixture(scope="session")
def cf_sample_cifs_postprocessed(cf_sample_cifs) -> list[tuple[str, str]]:
    """Return the sample structures ``(name, cif)`` post-processed into ordinary CIFs."""
    from crystalforge.cif.postprocess import postprocess_cif

    return [(name, postprocess_cif(cif)) for name, cif in cf_sample_cifs]
