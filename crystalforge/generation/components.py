"""The pipeline's components, built by the kernel (:mod:`crystalforge.components`).

One small function per kind with the argument order the pipeline uses; each delegates to
the kernel's ``create_*`` function, so every kind comes from its registry and is checked
against its contract there. Every setting error raises here, before any generation.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..components import (create_model, create_scorer, create_search, create_tokenizer, create_validators,
                          resolve_device)

__all__ = ["make_model", "make_scorer", "make_strategy", "make_tokenizer", "make_validators", "resolve_device"]


def make_tokenizer(name: str | None = None, plugin_manager: Any = None) -> Any:
    """Return the tokenizer ``name`` (default: CrystaLLM's) from the tokenizer registry.

    Raises:
        UnknownComponentError: no such tokenizer.
    """
    if name is not None and not isinstance(name, str):
        return name
    return create_tokenizer(plugin_manager, name or "crystallm")


def make_model(model: Any = None, *, device: str = "cpu", dtype: str | None = None,
               options: Mapping[str, Any] | None = None, plugin_manager: Any = None) -> Any:
    """Return a loaded model: a model object (checked), a registered model name, a
    checkpoint file or folder (read by the built-in ``gpt`` loader), or None (the
    embedded default model).

    Raises:
        CheckpointError: the checkpoint cannot be loaded. OptionError: a bad option.
        UnknownComponentError: no such registered model and no such path.
    """
    return create_model(plugin_manager, model, device=device, dtype=dtype, **dict(options or {}))


def make_strategy(search: str = "top-k", options: Mapping[str, Any] | None = None, plugin_manager: Any = None) -> Any:
    """Return the search strategy ``search`` built with ``options``.

    Raises:
        UnknownComponentError: no such strategy. OptionError: a bad option.
    """
    return create_search(plugin_manager, search, **dict(options or {}))


def make_scorer(scorer: Any = None, options: Mapping[str, Any] | None = None, plugin_manager: Any = None) -> Any:
    """Return an adapted scorer (``score_many``, ``close``, ``unit`` always present), or None.

    Raises:
        UnknownComponentError: no such scorer. OptionError: a bad option.
    """
    return create_scorer(plugin_manager, scorer, **dict(options or {}))


def make_validators(plugin_manager: Any = None, require: Sequence[str] = (),
                    options: Mapping[str, Any] | None = None) -> list[tuple[str, Any, bool]]:
    """Return the built validators, ``options`` as ``{check: {key: value}}`` or ``{"check.key": value}``.

    Raises:
        UnknownComponentError: an unknown check in ``require`` or ``options``.
        OptionError: a bad validator option.
    """
    return create_validators(plugin_manager, options, require)
