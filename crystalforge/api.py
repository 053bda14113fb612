"""Small public helpers that compose registry components."""

from __future__ import annotations

from typing import Any


def load_tokenizer(name: str = "crystallm", plugin_manager: Any = None):
    """Return a tokenizer by registered name (default: the CrystaLLM-compatible one).

    Raises:
        UnknownComponentError: no tokenizer of that name is registered.
    """
    if name == "crystallm" and plugin_manager is None:
        from .cif.tokenizer import default_tokenizer

        return default_tokenizer()
    if plugin_manager is None:
        from .plugins import make_plugin_manager

        plugin_manager = make_plugin_manager()
    return plugin_manager.registry("tokenizer").create(name)
