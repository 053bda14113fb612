"""The crystalforge plugin contract: one registration hook per plugin kind.

Every hook is callback style. crystalforge calls each plugin's implementation with a
``register`` callable; the plugin calls it once per component it provides::

    from crystalforge import hookimpl

    @hookimpl
    def register_scorers(register):
        register("my-energy", MyEnergyScorer, description="Energy per atom from my model")

``register(name, factory, *, description="", options=None, **metadata)``:

- ``name`` -- the component's unique name within its kind (an error names both plugins
  when two register the same name);
- ``factory`` -- a callable that builds the component from keyword options (typically an
  attrs class or dataclass whose fields are the options), or a lazy ``"module:attr"``
  string imported only when the component is used;
- ``description`` -- one line shown by ``crystalforge list``; defaults to the first line of
  the factory's docstring;
- ``options`` -- explicit :class:`crystalforge.registry.Option` list when the factory is not
  an attrs class or dataclass;
- ``metadata`` -- kind-specific extras (validators: ``required=True``).

Implementations may accept fewer arguments than the spec (pluggy passes by keyword), so
new arguments can be added to these hooks without breaking plugins. Hooks return nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT_NAME = "crystalforge"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[..., Any]


@hookspec
def register_tokenizers(register: Register) -> None:
    """Register tokenizers: objects turning CIF text into token ids and back.

    A tokenizer factory takes no required arguments and returns an object with
    ``tokenize(text) -> list[str]``, ``encode(text) -> list[int]``,
    ``decode(ids) -> str``, ``vocab_size``, ``itos``, ``stoi`` and ``vocab_hash``.
    The built-in ``crystallm`` tokenizer matches CrystaLLM's vocabulary exactly.

    :param register: call ``register(name, factory, ...)`` once per tokenizer.
    :return: nothing; results are collected through ``register``.
    """


@hookspec
def register_models(register: Register) -> None:
    """Register model loaders: callables that return a ready language model.

    A model factory is called as ``factory(path=None, device="cpu", dtype=None)`` and
    returns a ``torch.nn.Module`` with a ``config`` (``block_size``, ``vocab_size``, ...),
    ``forward(idx, targets=None)`` and a KV-cache API (``new_cache``, ``forward_cached``)
    as the built-in ``gpt`` model does. ``path=None`` means the embedded default.

    :param register: call ``register(name, factory, ...)`` once per model loader.
    :return: nothing; results are collected through ``register``.
    """


@hookspec
def register_search_strategies(register: Register) -> None:
    """Register search strategies: how candidate CIFs are decoded from a model.

    A strategy is built from its keyword options and exposes
    ``generate(model, tokenizer, prompts, n, *, generator, device, batch_size, ...)``
    returning raw generated CIF texts, as the built-ins ``random``, ``top-k``, ``top-p``,
    ``greedy`` (sampling) and ``puct``, ``uct``, ``mcts-greedy`` (tree search) do.

    :param register: call ``register(name, factory, ...)`` once per strategy.
    :return: nothing; results are collected through ``register``.
    """


@hookspec
def register_scorers(register: Register) -> None:
    """Register scorers: objects that give a CIF a number (energy, property, ...).

    A scorer is built from its keyword options and exposes ``score(cif: str) -> float``
    (``nan`` when it cannot score) and ``lower_is_better: bool`` saying which direction
    is good, so search strategies never have to guess a sign convention.

    :param register: call ``register(name, factory, ...)`` once per scorer.
    :return: nothing; results are collected through ``register``.
    """


@hookspec
def register_validators(register: Register) -> None:
    """Register validators: checks that join every candidate's validity report.

    A validator is built from its keyword options and exposes
    ``check(cif: str, context) -> CheckResult`` (``passed``, optional ``score`` in [0, 1],
    ``message``). Pass ``required=True`` to ``register`` to make the check part of
    ``is_valid``; otherwise it is reported but does not decide validity.

    :param register: call ``register(name, factory, required=..., ...)`` once per validator.
    :return: nothing; results are collected through ``register``.
    """
