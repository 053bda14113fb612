"""Build the components of a run from the registries: one function per plugin kind.

Every stage of generation gets its component here, so a third-party plugin of any kind
is used, not just listed::

    tokenizer = create_tokenizer(pm, "crystallm")
    model = create_model(pm, "bar-model")            # a registered name, a checkpoint, or None
    strategy = create_search(pm, "top-k", top_k=10)
    scorer = create_scorer(pm, "random", seed=1)      # adapted: score_many and close always exist
    checks = create_validators(pm, {"bond_length.tolerance": 0.3})

Each returns an object checked against its kind's contract (:mod:`crystalforge.contracts`)
and raises a one-line :class:`~crystalforge.errors.CrystalforgeError` for a bad name or
option, before any generation work. ``plugin_manager=None`` means a fresh
:func:`~crystalforge.plugins.make_plugin_manager`.

The kernel's defaults for the contracts' optional members live here too:
:func:`adapt_scorer` (``unit``, ``score_many``, ``score_details``, ``close``),
:func:`search_artifacts` and :func:`accepts_indices` (a strategy's ``artifacts()`` and ``indices=``).
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .contracts import OPTIONAL, Table, check_contract
from .errors import CheckpointError, OptionError, PluginError, UnknownComponentError
from .registry import _unknown_message

logger = logging.getLogger(__name__)

#: the model loader used for checkpoint paths and for ``None`` (the embedded default)
DEFAULT_MODEL = "gpt"
DEFAULT_TOKENIZER = "crystallm"


def _manager(plugin_manager: Any) -> Any:
    if plugin_manager is not None:
        return plugin_manager
    from .plugins import make_plugin_manager

    return make_plugin_manager()


def resolve_device(device: Any) -> str:
    """Return ``device`` with ``auto`` (or None, or "") resolved: cuda when available, else cpu."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def create_tokenizer(plugin_manager: Any = None, name: str = DEFAULT_TOKENIZER, **options: Any) -> Any:
    """Return the tokenizer registered as ``name``, built with ``options``.

    Raises:
        UnknownComponentError: no tokenizer of that name. OptionError: a bad option.
        PluginError: the tokenizer does not meet :class:`~crystalforge.contracts.Tokenizer`.
    """
    return _manager(plugin_manager).registry("tokenizer").create(name or DEFAULT_TOKENIZER, **options)


def create_model(
    plugin_manager: Any = None,
    name_or_path: Any = None,
    device: Any = "auto",
    dtype: str | None = None,
    **options: Any,
) -> Any:
    """Return a ready language model, in eval mode.

    ``name_or_path`` is, in this order: a registered model name (``crystalforge list
    model``); a checkpoint file or a folder holding ``ckpt.pt``, read by the built-in
    ``gpt`` loader (CrystaLLM checkpoints included); ``None`` for the embedded default
    model; or an already built model object, which is only checked. ``device``
    (``auto``: cuda when available) and ``dtype`` are passed to loaders that declare
    those options; ``options`` are the loader's own (``--model-opt KEY=VALUE``).

    Raises:
        UnknownComponentError: a bare name that is neither a registered model nor an
            existing file or folder (with the closest registered name).
        CheckpointError: a path (``/`` or a suffix in it) with nothing there, or a
            checkpoint that cannot be loaded.
        OptionError: a bad option, device or dtype.
        PluginError: the model does not meet :class:`~crystalforge.contracts.LanguageModel`.
    """
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        check_contract("model", name_or_path, type(name_or_path).__name__, "(given object)")
        return name_or_path
    registry = _manager(plugin_manager).registry("model")
    name = DEFAULT_MODEL
    text = "" if name_or_path is None else os.fspath(name_or_path)
    if text and isinstance(name_or_path, str) and text in registry:
        name = text
    elif text:
        path = Path(text).expanduser()
        if not path.exists():
            if "/" in text or os.sep in text or path.suffix:  # meant as a path
                raise CheckpointError(f"checkpoint not found: {path} (nor is it a registered model: "
                                      f"{', '.join(registry.names()) or 'none'})")
            message = _unknown_message("model", text, registry.names())
            raise UnknownComponentError(message.replace(f"'{text}'.", f"'{text}' (nor a checkpoint file or folder).", 1))
        if "path" in options:
            raise OptionError(f"model '{text}' is a checkpoint path: do not also pass a 'path' option")
        options = {**options, "path": str(Path(text).expanduser())}
    component = registry.get(name)
    declared = {option.name for option in component.options}
    for key, value in (("device", resolve_device(device)), ("dtype", dtype)):
        if key in options:
            continue
        if key in declared:
            options[key] = value
        elif value is not None and not (key == "device" and device in (None, "", "auto")):
            logger.info("model '%s' takes no %s option; %s=%s ignored", name, key, key, value)
    return component.create(**options)


def check_model_fits_tokenizer(model: Any, tokenizer: Any) -> None:
    """Raise when the tokenizer's ids do not fit the model's vocabulary.

    Raises:
        CheckpointError: ``tokenizer.vocab_size`` exceeds ``model.config.vocab_size``.
    """
    model_vocab = int(model.config.vocab_size)
    if tokenizer.vocab_size > model_vocab:
        raise CheckpointError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model knows only {model_vocab}: "
            "use the tokenizer the model was trained with (--tokenizer)"
        )


def create_search(plugin_manager: Any = None, name: str = "top-k", **options: Any) -> Any:
    """Return the search strategy registered as ``name``, built with ``options``.

    Raises:
        UnknownComponentError: no such strategy. OptionError: a bad option.
        PluginError: the strategy does not meet :class:`~crystalforge.contracts.SearchStrategy`.
    """
    return _manager(plugin_manager).registry("search").create(name, **options)


def create_scorer(plugin_manager: Any = None, scorer: Any = None, **options: Any) -> Any:
    """Return an adapted scorer, or None.

    ``scorer`` is a registered name (built with ``options``), a scorer object (checked and
    adapted; ``options`` must be empty) or None/"" (no scoring). The result always has
    ``score``, ``score_many``, ``close``, ``lower_is_better`` and ``unit``.

    Raises:
        UnknownComponentError: no such scorer. OptionError: a bad option.
        PluginError: the scorer does not meet :class:`~crystalforge.contracts.Scorer`.
    """
    if scorer is None or scorer == "":
        if options:
            raise OptionError(f"scorer options {sorted(options)} given without a scorer")
        return None
    if isinstance(scorer, str):
        return _manager(plugin_manager).registry("scorer").create(scorer, **options)
    if options:
        raise OptionError("scorer options apply to a scorer name, not to a scorer object")
    check_contract("scorer", scorer, type(scorer).__name__, "(given object)")
    return adapt_scorer(scorer)


def validator_options(
    registry: Any, options: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Return validator options grouped by check, checked and converted.

    ``options`` maps ``"CHECK.KEY"`` to a value (``--validator-opt CHECK.KEY=VALUE``) or
    ``"CHECK"`` to a mapping of its options.

    Raises:
        OptionError: a key without ``CHECK.`` or an unknown option of a check.
        UnknownComponentError: an unknown check name.
    """
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in dict(options or {}).items():
        if isinstance(value, Mapping):
            check, values = str(key), dict(value)
        else:
            check, dot, option = str(key).partition(".")
            if not dot or not check or not option:
                raise OptionError(f"validator option '{key}' must be CHECK.KEY (e.g. bond_length.tolerance)")
            values = {option: value}
        grouped.setdefault(check, {}).update(values)
    return {check: registry.get(check).convert_options(values) for check, values in grouped.items()}


def create_validators(
    plugin_manager: Any = None,
    options: Mapping[str, Any] | None = None,
    require: Sequence[str] = (),
) -> list[tuple[str, Any, bool]]:
    """Return ``(name, validator or its build error, required)`` for every registered validator.

    ``options`` sets validator options (see :func:`validator_options`); ``require`` names
    checks that must pass for ``is_valid`` beyond those registered as required. A
    validator that cannot be built becomes its build error, so that one broken plugin
    fails its own check only (:func:`crystalforge.validation.report.run_checks`).

    Raises:
        UnknownComponentError: a name in ``require`` or ``options`` is not a validator.
        OptionError: an unknown option or a value of the wrong type.
    """
    registry = _manager(plugin_manager).registry("validator")
    for name in require:
        registry.get(name)  # unknown names raise, listing the known ones
    settings = validator_options(registry, options)
    built: list[tuple[str, Any, bool]] = []
    for component in registry:
        required = bool(component.metadata.get("required", False)) or component.name in require
        try:
            instance: Any = component.create(**settings.get(component.name, {}))
        except Exception as exc:  # noqa: BLE001 - a broken plugin fails its own check only
            instance = exc
        built.append((component.name, instance, required))
    return built


# -- kernel defaults for optional members --------------------------------------------------
class _ScorerAdapter:
    """A scorer with the contract's optional members filled in; everything else is forwarded."""

    def __init__(self, scorer: Any) -> None:
        self.wrapped = scorer

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet (copy, unpickling): do not recurse
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    @property
    def lower_is_better(self) -> bool:
        return bool(self.wrapped.lower_is_better)

    @property
    def unit(self) -> str:
        return str(getattr(self.wrapped, "unit", "") or "")

    def score(self, cif: str) -> float:
        return self.wrapped.score(cif)

    def score_many(self, cifs: Iterable[str]) -> list[float]:
        own = getattr(self.wrapped, "score_many", None)
        if callable(own):
            return list(own(cifs))
        return [self.wrapped.score(cif) for cif in cifs]

    def score_details(self, cifs: Iterable[str]) -> list[Any]:
        from .scoring.result import as_score_result

        own = getattr(self.wrapped, "score_details", None)
        values = own(cifs) if callable(own) else self.score_many(cifs)
        return [as_score_result(value) for value in values]

    def close(self) -> None:
        own = getattr(self.wrapped, "close", None)
        if callable(own):
            own()

    def __enter__(self) -> "_ScorerAdapter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"adapted({self.wrapped!r})"


def adapt_scorer(scorer: Any) -> Any:
    """Return ``scorer`` with ``unit``, ``score_many``, ``score_details`` and ``close`` guaranteed.

    A scorer that has all three (any subclass of :class:`Scorer` or of
    :class:`crystalforge.scoring.base.Scorer`) is returned unchanged; otherwise a thin
    adapter supplies the missing ones and forwards everything else. ``None`` stays None.
    """
    if scorer is None:
        return None
    if all(hasattr(scorer, member) for member in OPTIONAL["scorer"]):
        return scorer
    return _ScorerAdapter(scorer)


def adapt(kind: str, component: Any) -> Any:
    """Return ``component`` with the kernel's defaults for the optional members of ``kind``.

    Only scorers are wrapped (:func:`adapt_scorer`); the optional members of search
    strategies are read through :func:`search_artifacts` and :func:`accepts_indices`.
    """
    return adapt_scorer(component) if kind == "scorer" else component


def search_artifacts(strategy: Any) -> dict[str, Table]:
    """Return the strategy's extra tables by name (``{}`` when it has no ``artifacts``).

    Raises:
        PluginError: ``artifacts()`` returned something other than a mapping of tables.
    """
    method = getattr(strategy, "artifacts", None)
    if not callable(method):
        return {}
    tables = method()
    if not isinstance(tables, Mapping) or not all(isinstance(k, str) for k in tables):
        raise PluginError(f"{type(strategy).__name__}.artifacts() must return a mapping of name -> rows, "
                          f"got {type(tables).__name__}")
    return {name: list(rows) for name, rows in tables.items() if rows}


def accepts_indices(strategy: Any) -> bool:
    """Return whether the strategy's ``generate`` takes ``indices`` (per-sample seeding)."""
    try:
        return "indices" in inspect.signature(strategy.generate).parameters
    except (TypeError, ValueError):
        return False

