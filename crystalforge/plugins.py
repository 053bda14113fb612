"""Build the plugin manager: built-in plugins first, then each entry point on its own.

A third-party plugin that fails to import or to register is unregistered, its components
are removed, and the failure is recorded (``crystalforge plugins`` shows it as ``error``);
the rest keeps working. ``CRYSTALFORGE_STRICT_PLUGINS=1`` makes such failures fatal (for
CI), and ``CRYSTALFORGE_BLOCK_PLUGINS=name1,name2`` keeps plugins from loading at all,
built-ins included. Hooks are called through pluggy (one plugin at a time, so a failure
is that plugin's alone), and ``CRYSTALFORGE_TRACE_HOOKS=1`` logs every call with its
plugin, arguments and outcome (:func:`trace_hooks`).
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib import metadata as importlib_metadata
from typing import Any, Callable, Mapping, Sequence

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import KINDS, Registry
from .util import truthy

logger = logging.getLogger(__name__)
hook_logger = logging.getLogger("crystalforge.hooks")

ENTRY_POINT_GROUP = "crystalforge"
STRICT_ENV = "CRYSTALFORGE_STRICT_PLUGINS"
BLOCK_ENV = "CRYSTALFORGE_BLOCK_PLUGINS"
TRACE_ENV = "CRYSTALFORGE_TRACE_HOOKS"

#: Built-in plugins, registered through the very same hooks as third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "crystalforge.builtins.tokenizers",
    "crystalforge.builtins.models",
    "crystalforge.builtins.search",
    "crystalforge.builtins.scorers",
    "crystalforge.builtins.validators",
)


@attrs.define
class PluginInfo:
    """What ``crystalforge plugins`` shows for one plugin."""

    name: str
    version: str | None
    status: str  # "ok" | "error" | "blocked"
    builtin: bool
    source: str
    error: str | None = None
    provides: dict[str, list[str]] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _env_flag(name: str) -> bool:
    return truthy(os.environ.get(name, ""))


def _blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


class CrystalforgePluginManager(pluggy.PluginManager):
    """A pluggy manager that also keeps one :class:`Registry` per plugin kind."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] | None = None

    # -- registries ---------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        """Return the registry of ``kind`` (one of :data:`crystalforge.registry.KINDS`)."""
        if kind not in KINDS:
            raise PluginError(f"Unknown plugin kind '{kind}'. Kinds: {', '.join(KINDS)}")
        if self._registries is None:
            self._registries = self._collect()
        return self._registries[kind]

    def invalidate(self) -> None:
        """Forget collected registries (call after registering or unregistering plugins)."""
        self._registries = None

    def register(self, plugin: Any, name: str | None = None) -> str | None:  # type: ignore[override]
        result = super().register(plugin, name)
        self.invalidate()
        if result is not None and result not in self.infos:
            self.infos[result] = PluginInfo(
                name=result, version=None, status="ok", builtin=False, source="in-process"
            )
        return result

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:  # type: ignore[override]
        result = super().unregister(plugin=plugin, name=name)
        self.invalidate()
        return result

    def _collect(self) -> dict[str, Registry]:
        """Call every registration hook through pluggy, plugin by plugin, tagging what each registers.

        Each plugin's implementations are called through pluggy's hook execution (as a
        subset caller would, without needing hashable plugin objects), so hook monitoring
        (``CRYSTALFORGE_TRACE_HOOKS``) sees every call. A plugin whose hook
        raises (or registers a duplicate) has everything it registered so far removed, is
        unregistered and recorded as ``error``; in strict mode the error propagates.
        """
        registries = {kind: Registry(kind) for kind in KINDS}
        # registration order: built-ins first, so a later plugin reusing a name is the one
        # blamed and dropped
        plugins = [(name, plugin) for name, plugin in self.list_name_plugin() if plugin is not None]
        for plugin_name, plugin in plugins:
            try:
                for kind, hook_name in KINDS.items():
                    impls = [i for i in getattr(self.hook, hook_name).get_hookimpls() if i.plugin is plugin]
                    if impls:
                        register = RegisterCallback(registries[kind], plugin_name)
                        self._hookexec(hook_name, impls, {"register": register}, False)
            except Exception as exc:
                for registry in registries.values():
                    registry.remove_plugin(plugin_name)
                message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PluginError) else str(exc)
                if _env_flag(STRICT_ENV):
                    raise PluginError(f"Plugin '{plugin_name}' failed to register: {message}") from exc
                logger.warning("plugin %s failed to register: %s", plugin_name, message)
                self._record_failure(plugin_name, message)
                super().unregister(name=plugin_name)
        for name, info in self.infos.items():
            if info.status == "ok":
                info.provides = {
                    kind: [c.name for c in registries[kind] if c.plugin == name]
                    for kind in KINDS
                    if any(c.plugin == name for c in registries[kind])
                }
        return registries

    def _record_failure(self, name: str, message: str) -> None:
        info = self.infos.get(name)
        if info is None:
            info = PluginInfo(name=name, version=None, status="error", builtin=False, source="?")
            self.infos[name] = info
        info.status = "error"
        info.error = message
        info.provides = {}

    # -- loading ------------------------------------------------------------------
    def load_builtins(self, blocked: set[str]) -> None:
        from . import __version__

        for module_name in DEFAULT_PLUGINS:
            short = module_name.rsplit(".", 1)[-1]
            name = f"crystalforge.{short}"
            if name in blocked or short in blocked:
                self.infos[name] = PluginInfo(
                    name=name, version=__version__, status="blocked", builtin=True, source=module_name
                )
                continue
            module = importlib.import_module(module_name)
            super().register(module, name=name)
            self.infos[name] = PluginInfo(
                name=name, version=__version__, status="ok", builtin=True, source=module_name
            )
        self.invalidate()

    def load_entry_points(self, blocked: set[str]) -> None:
        """Load every ``crystalforge`` entry point on its own, recording failures."""
        strict = _env_flag(STRICT_ENV)
        seen: set[str] = set()
        for dist in importlib_metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                    continue
                seen.add(ep.name)
                version = dist.metadata["version"] if dist.metadata else None
                source = f"{dist.metadata['name'] if dist.metadata else '?'} ({ep.value})"
                info = PluginInfo(name=ep.name, version=version, status="ok", builtin=False, source=source)
                self.infos[ep.name] = info
                if ep.name in blocked:
                    info.status = "blocked"
                    continue
                try:
                    plugin = ep.load()
                    super().register(plugin, name=ep.name)
                except Exception as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    if self.get_plugin(ep.name) is not None:
                        super().unregister(name=ep.name)
                    if strict:
                        raise PluginError(f"Plugin '{ep.name}' failed to load: {message}") from exc
                    logger.warning("plugin %s failed to load: %s", ep.name, message)
                    info.status = "error"
                    info.error = message
        self.invalidate()

    def plugin_infos(self) -> list[PluginInfo]:
        """Return every known plugin (loaded, failed or blocked) with what it provides."""
        self.registry("tokenizer")  # make sure registration ran and failures are recorded
        return sorted(self.infos.values(), key=lambda i: (not i.builtin, i.name))


class RegisterCallback:
    """The ``register`` callable one plugin receives for one kind: adds to that kind's registry."""

    def __init__(self, registry: Registry, plugin: str) -> None:
        self.registry = registry
        self.plugin = plugin

    def __call__(self, name: str, factory: Any, **kwargs: Any) -> Any:
        return self.registry.add(self.plugin, name, factory, **kwargs)

    def __repr__(self) -> str:
        return f"<register {self.registry.kind} for {self.plugin}>"


def trace_hooks(manager: pluggy.PluginManager) -> Callable[[], None]:
    """Log every hook call of ``manager`` (plugin and arguments) and its outcome; return an undo.

    Lines go to the ``crystalforge.hooks`` logger at WARNING, so they show on stderr
    without any logging set up (``CRYSTALFORGE_TRACE_HOOKS=1`` turns this on).
    """

    def before(hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        plugins = ", ".join(impl.plugin_name for impl in hook_impls) or "(no plugin)"
        arguments = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        hook_logger.warning("hook %s(%s) -> %s", hook_name, arguments, plugins)

    def after(outcome: Any, hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        plugins = ", ".join(impl.plugin_name for impl in hook_impls) or "(no plugin)"
        exception = outcome.exception
        result = f"raised {type(exception).__name__}: {exception}" if exception is not None else "ok"
        hook_logger.warning("hook %s done by %s: %s", hook_name, plugins, result)

    return manager.add_hookcall_monitoring(before, after)


def make_plugin_manager(entry_points: bool = True) -> CrystalforgePluginManager:
    """Return a fresh plugin manager with the built-ins and (optionally) entry points.

    Args:
        entry_points: also load third-party plugins from the ``crystalforge`` entry-point group.

    Raises:
        PluginError: only in strict mode (``CRYSTALFORGE_STRICT_PLUGINS=1``) when a
            plugin fails to load or register.
    """
    manager = CrystalforgePluginManager()
    if _env_flag(TRACE_ENV):
        trace_hooks(manager)
    blocked = _blocked_names()
    manager.load_builtins(blocked)
    if entry_points:
        manager.load_entry_points(blocked)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:  # a hookimpl with a misspelled hook name
        if _env_flag(STRICT_ENV):
            raise PluginError(f"Plugin '{exc.plugin}' is invalid: {exc}") from exc
        logger.warning("plugin hook check: %s", exc)
    return manager
