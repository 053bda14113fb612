"""Named components per plugin kind, each tagged with the plugin that registered it.

A plugin's registration hook receives a ``register`` callback and calls it once per
component::

    register("zmq", ZMQScorer)                      # class: options read from its fields
    register("chgnet", "my_pkg.scorer:CHGNet")       # lazy "module:attr", imported on use

Options are typed and carry defaults. For attrs classes and dataclasses they are read
from the fields (type annotation, default, ``metadata={"help": ...}``); any factory may
also pass ``options=[Option(...), ...]`` explicitly.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import typing
from typing import Any, Callable, Iterator, Mapping

import attrs

from .errors import OptionError, PluginError, UnknownComponentError
from .util import TRUE_WORDS

#: The plugin kinds, in the order the CLI lists them, and their hook names.
KINDS: dict[str, str] = {
    "tokenizer": "register_tokenizers",
    "model": "register_models",
    "search": "register_search_strategies",
    "scorer": "register_scorers",
    "validator": "register_validators",
}

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


@attrs.frozen
class Option:
    """One typed option of a component: name, type, default and a short help text."""

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple | None = None

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type, getattr(self.type, "__name__", str(self.type)))

    def convert(self, value: Any) -> Any:
        """Return ``value`` converted to this option's type.

        Strings (from the CLI or YAML) are parsed; ``None`` stays ``None``.

        Raises:
            OptionError: the value cannot be read as the option's type or is not a choice.
        """
        if value is None:
            return None
        try:
            if self.type is bool and isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in TRUE_WORDS:
                    value = True
                elif lowered in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError(value)
            elif self.type in (int, float, str) and not isinstance(value, self.type):
                if self.type is int and isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                if isinstance(value, bool) and self.type is not str:
                    raise ValueError(value)
                value = self.type(value)
        except (TypeError, ValueError):
            raise OptionError(
                f"Option '{self.name}' expects {self.type_name}, got {value!r}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise OptionError(
                f"Option '{self.name}' must be one of {', '.join(map(str, self.choices))}; "
                f"got {value!r}"
            )
        return value

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type_name, "default": self.default, "help": self.help}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


def _resolve_type(annotation: Any) -> type:
    """Map an annotation (possibly a string or Optional[X]) to bool/int/float/str."""
    if isinstance(annotation, str):
        text = annotation.replace(" ", "").replace("|None", "").replace("Optional[", "").rstrip("]")
        return {"bool": bool, "int": int, "float": float, "str": str}.get(text, str)
    origin = typing.get_origin(annotation)
    if origin is not None:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _resolve_type(args[0])
        return str
    if annotation in (bool, int, float, str):
        return annotation
    return str


def options_of(factory: Any) -> tuple[Option, ...]:
    """Return the typed options of a component factory (attrs class or dataclass fields).

    Fields whose name starts with an underscore, or whose metadata sets
    ``{"option": False}``, are not options.
    """
    fields: list[tuple[str, Any, Any, Mapping]] = []
    if inspect.isclass(factory) and attrs.has(factory):
        for field in attrs.fields(factory):
            if field.default is attrs.NOTHING:
                default = None
            elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                default = field.default.factory()  # type: ignore[union-attr]
            else:
                default = field.default
            fields.append((field.name, field.type, default, field.metadata))
    elif inspect.isclass(factory) and dataclasses.is_dataclass(factory):
        for field in dataclasses.fields(factory):
            if field.default is not dataclasses.MISSING:
                default = field.default
            elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = field.default_factory()  # type: ignore[misc]
            else:
                default = None
            fields.append((field.name, field.type, default, field.metadata))
    options = []
    for name, annotation, default, metadata in fields:
        if name.startswith("_") or not metadata.get("option", True):
            continue
        choices = metadata.get("choices")
        options.append(
            Option(
                name=name,
                type=_resolve_type(annotation),
                default=default,
                help=metadata.get("help", ""),
                choices=tuple(choices) if choices else None,
            )
        )
    return tuple(options)


def _import_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@attrs.define
class Component:
    """A registered component: its kind, name, factory and the plugin that supplied it."""

    kind: str
    name: str
    plugin: str
    _factory: Any = attrs.field(alias="factory")
    description: str = ""
    _options: tuple[Option, ...] | None = attrs.field(default=None, alias="options")
    metadata: dict[str, Any] = attrs.field(factory=dict)

    @property
    def factory(self) -> Callable[..., Any]:
        """The callable that builds the component (a lazy ``module:attr`` is imported here)."""
        if isinstance(self._factory, str):
            try:
                self._factory = _import_path(self._factory)
            except Exception as exc:  # a broken lazy path is the plugin's fault
                raise PluginError(
                    f"Plugin '{self.plugin}': cannot import {self.kind} '{self.name}' "
                    f"({self._factory}): {exc}"
                ) from exc
        return self._factory

    @property
    def options(self) -> tuple[Option, ...]:
        if self._options is None:
            self._options = options_of(self.factory)
        return self._options

    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        known = [o.name for o in self.options]
        raise OptionError(_unknown_message(f"option for {self.kind} '{self.name}'", name, known))

    def convert_options(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``values`` checked against the declared options and converted to their types.

        Raises:
            OptionError: an unknown option or a value of the wrong type.
        """
        return {key: self.option(key).convert(value) for key, value in values.items()}

    def create(self, **options: Any) -> Any:
        """Build the component with ``options`` (strings are converted to the option types).

        The result is checked against its kind's contract (:mod:`crystalforge.contracts`)
        and gets the kernel's defaults for optional members (a scorer without
        ``score_many`` or ``close`` is adapted).

        Raises:
            OptionError: an unknown option or a value of the wrong type.
            PluginError: the built object lacks a required member of its contract.
        """
        from .components import adapt
        from .contracts import check_contract

        component = self.factory(**self.convert_options(options))
        check_contract(self.kind, component, self.name, self.plugin)
        return adapt(self.kind, component)

    def summary(self) -> str:
        if self.description:
            return self.description
        doc = inspect.getdoc(self._factory) if not isinstance(self._factory, str) else None
        return (doc or "").strip().splitlines()[0] if doc else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "description": self.summary(),
            "options": [o.to_dict() for o in self.options],
            **({"metadata": self.metadata} if self.metadata else {}),
        }


def _unknown_message(what: str, name: str, known: list[str]) -> str:
    message = f"Unknown {what} '{name}'. Available: {', '.join(sorted(known)) or '(none)'}."
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        message += f" Did you mean '{close[0]}'?"
    return message


class Registry:
    """The components of one plugin kind, by name."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}")
        self.kind = kind
        self._components: dict[str, Component] = {}

    def add(
        self,
        plugin: str,
        name: str,
        factory: Any,
        *,
        description: str = "",
        options: list[Option] | tuple[Option, ...] | None = None,
        **metadata: Any,
    ) -> Component:
        """Register ``factory`` under ``name`` for ``plugin``.

        Raises:
            PluginError: the name is taken by another plugin, or the arguments are malformed.
        """
        if not isinstance(name, str) or not name:
            raise PluginError(f"Plugin '{plugin}' registered a {self.kind} with an invalid name {name!r}")
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise PluginError(
                f"Plugin '{plugin}' registered {self.kind} '{name}' with a factory that is "
                f"neither callable nor a 'module:attr' path: {factory!r}"
            )
        if name in self._components:
            other = self._components[name].plugin
            raise PluginError(
                f"Duplicate {self.kind} name '{name}': registered by plugin '{other}' "
                f"and by plugin '{plugin}'"
            )
        component = Component(
            kind=self.kind,
            name=name,
            plugin=plugin,
            factory=factory,
            description=description,
            options=tuple(options) if options is not None else None,
            metadata=dict(metadata),
        )
        self._components[name] = component
        return component

    def remove_plugin(self, plugin: str) -> None:
        """Forget every component ``plugin`` registered (its registration failed part-way)."""
        self._components = {k: c for k, c in self._components.items() if c.plugin != plugin}

    def get(self, name: str) -> Component:
        """Return the component called ``name``.

        Raises:
            UnknownComponentError: listing the known names and the closest match.
        """
        try:
            return self._components[name]
        except KeyError:
            raise UnknownComponentError(_unknown_message(self.kind, name, self.names())) from None

    def create(self, name: str, **options: Any) -> Any:
        """Build component ``name`` with ``options``; see :meth:`Component.create`."""
        return self.get(name).create(**options)

    def names(self) -> list[str]:
        return sorted(self._components)

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def __iter__(self) -> Iterator[Component]:
        return iter(sorted(self._components.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._components)
