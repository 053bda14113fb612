"""Small public helpers that compose registry components."""

from __future__ import annotations

from typing import Any


def load_tokenizer(name: str = "crystallm", plugin_manager: Any = None, **options: Any):
    """Return a tokenizer by registered name (default: the CrystaLLM-compatible one).

    The tokenizer comes from the registry (:func:`crystalforge.components.create_tokenizer`),
    so a third-party tokenizer plugin is found by its name.

    Raises:
        UnknownComponentError: no tokenizer of that name is registered.
        OptionError: a bad tokenizer option.
    """
    from .components import create_tokenizer

    return create_tokenizer(plugin_manager, name, **options)
