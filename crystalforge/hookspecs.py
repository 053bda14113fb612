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

What each kind's component must provide is a typed Protocol in
:mod:`crystalforge.contracts`, exported at the top level (``crystalforge.Tokenizer``,
``LanguageModel``, ``SearchStrategy``, ``Scorer``, ``Validator``). The registry checks a
component against it when creating it and fills in the optional members.

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

    A tokenizer factory takes no required arguments and returns a
    :class:`crystalforge.contracts.Tokenizer`: ``tokenize(text) -> list[str]``,
    ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size``, ``itos``,
    ``stoi``, ``newline_id`` and ``vocab_hash``. The built-in ``crystallm`` tokenizer
    matches CrystaLLM's vocabulary exactly.

    :param register: call ``register(name, factory, ...)`` once per tokenizer.
    :return: nothing; results are collected through ``register``.
    """


@hookspec
def register_models(register: Register) -> None:
    """Register model loaders: callables that return a ready language model.

    A model factory is called with its options (``device`` and ``dtype`` when it declares
    them, as the built-in ``gpt`` loader ``factory(path=None, device="cpu", dtype=None)``
    does) and returns a :class:`crystalforge.contracts.LanguageModel`: a ``config``
    (``block_size``, ``vocab_size``), ``parameters()``, ``forward(idx, targets=None)`` and
    the KV-cache API ``new_cache`` / ``forward_cached``. For ``gpt``, ``path=None`` means
    the embedded default.

    :param register: call ``register(name, factory, ...)`` once per model loader.
    :return: nothing; results are collected through ``register``.
    """


@hookspec
def register_search_strategies(register: Register) -> None:
    """Register search strategies: how candidate CIFs are decoded from a model.

    A strategy is built from its keyword options and is a
    :class:`crystalforge.contracts.SearchStrategy`:
    ``generate(model, tokenizer, prompts, n, *, generator, device, batch_size, ...)``
    returns one list of :class:`crystalforge.Sample` per prompt, as the built-ins
    ``random``, ``top-k``, ``top-p``, ``greedy`` (sampling) and ``puct``, ``uct``,
    ``mcts-greedy`` (tree search) do. Optional: an ``indices`` keyword and
    ``artifacts()`` (extra tables, such as MCTS's rollouts).

    :param register: call ``register(name, factory, ...)`` once per strategy.
    :return: nothing; results are collected through ``register``.
    """


@hookspec
def register_scorers(register: Register) -> None:
    """Register scorers: objects that give a CIF a number (energy, property, ...).

    A scorer is built from its keyword options and is a
    :class:`crystalforge.contracts.Scorer`: ``score(cif: str) -> float`` (``nan`` when
    it cannot score) and ``lower_is_better: bool`` saying which direction is good, so
    search strategies never have to guess a sign convention. ``unit``, ``score_many``
    and ``close`` are optional: the kernel supplies defaults.

    :param register: call ``register(name, factory, ...)`` once per scorer.
    :return: nothing; results are collected through ``register``.
    """


@hookspec
def register_validators(register: Register) -> None:
    """Register validators: checks that join every candidate's validity report.

    A validator is built from its keyword options (settable as ``CHECK.KEY=VALUE``) and
    is a :class:`crystalforge.contracts.Validator`:
    ``check(cif: str, context) -> CheckResult`` (``passed``, optional ``score`` in [0, 1],
    ``message``). Pass ``required=True`` to ``register`` to make the check part of
    ``is_valid``; otherwise it is reported but does not decide validity.

    :param register: call ``register(name, factory, required=..., ...)`` once per validator.
    :return: nothing; results are collected through ``register``.
    """
