"""Building the pipeline's components: one small function per kind.

Each function turns what a user gives (a name, a path, an object, options) into a
component, through the plugin registries where the kind has one. Every setting error
raises here, before any generation.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

DEFAULT_TOKENIZER = "crystallm"
#: the built-in model loader; a model argument that is not a registered name is a checkpoint for it
DEFAULT_MODEL_LOADER = "gpt"


def _manager(plugin_manager: Any) -> Any:
    if plugin_manager is not None:
        return plugin_manager
    from ..plugins import make_plugin_manager

    return make_plugin_manager()


def resolve_device(device: str | None) -> str:
    """Return ``device`` with ``auto`` (or None) resolved: cuda when available, else cpu."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def make_tokenizer(name: str | None = None, plugin_manager: Any = None) -> Any:
    """Return the tokenizer ``name`` (default: CrystaLLM's) from the tokenizer registry.

    Raises:
        UnknownComponentError: no such tokenizer.
    """
    from ..cif.tokenizer import default_tokenizer

    if name in (None, "", DEFAULT_TOKENIZER):
        return default_tokenizer()
    return _manager(plugin_manager).registry("tokenizer").create(name)


def make_model(model: Any = None, *, device: str = "cpu", dtype: str | None = None,
               options: Mapping[str, Any] | None = None, plugin_manager: Any = None) -> Any:
    """Return a loaded model: ``model`` is a model object (used as is), a registered model
    name, a checkpoint file or folder (read by the built-in ``gpt`` loader), or None
    (the embedded default model).

    Raises:
        CheckpointError: the checkpoint cannot be loaded. OptionError: a bad option.
        UnknownComponentError: no such registered model and no such path.
    """
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    options = dict(options or {})
    if model is None or str(model) == "":
        from ..model.checkpoint import load_model

        if options:
            from ..errors import OptionError

            raise OptionError(f"model options {sorted(options)} need --model NAME_OR_PATH")
        return load_model(None, device=device, dtype=dtype)
    registry = _manager(plugin_manager).registry("model")
    name = str(model)
    if name in registry:
        return registry.create(name, **_loader_options(registry, name, device, dtype), **options)
    from ..model.checkpoint import load_model

    if options:
        return registry.create(DEFAULT_MODEL_LOADER, path=name,
                               **_loader_options(registry, DEFAULT_MODEL_LOADER, device, dtype), **options)
    return load_model(name, device=device, dtype=dtype)


def _loader_options(registry: Any, name: str, device: str, dtype: str | None) -> dict[str, Any]:
    """Return the device/dtype settings a registered model accepts (by its declared options)."""
    declared = {option.name for option in getattr(registry.get(name), "options", ())}
    out: dict[str, Any] = {}
    if "device" in declared:
        out["device"] = device
    if "dtype" in declared and dtype is not None:
        out["dtype"] = dtype
    return out


def make_strategy(search: str = "top-k", options: Mapping[str, Any] | None = None, plugin_manager: Any = None) -> Any:
    """Return the search strategy ``search`` built with ``options``.

    Raises:
        UnknownComponentError: no such strategy. OptionError: a bad option.
    """
    return _manager(plugin_manager).registry("search").create(search, **dict(options or {}))


def make_scorer(scorer: Any = None, options: Mapping[str, Any] | None = None, plugin_manager: Any = None) -> Any:
    """Return a scorer: None stays None, a name is built from the registry, an object is used as is.

    Raises:
        UnknownComponentError: no such scorer. OptionError: a bad option.
    """
    if scorer is None or scorer == "":
        return None
    if isinstance(scorer, str):
        return _manager(plugin_manager).registry("scorer").create(scorer, **dict(options or {}))
    return scorer


def make_validators(plugin_manager: Any = None, require: Sequence[str] = (),
                    options: Mapping[str, Mapping[str, Any]] | None = None) -> list[tuple[str, Any, bool]]:
    """Return the built validators (see :func:`crystalforge.validation.report.validators`),
    those named in ``options`` built with their options (``{check: {key: value}}``).

    Raises:
        UnknownComponentError: an unknown check in ``require`` or ``options``.
        OptionError: a bad validator option.
    """
    from ..validation.report import validators

    manager = _manager(plugin_manager)
    options = {name: dict(opts) for name, opts in (options or {}).items()}
    registry = manager.registry("validator")
    configured = {name: registry.get(name).create(**opts) for name, opts in options.items()}
    return [(name, configured.get(name, instance), required)
            for name, instance, required in validators(manager, require)]
