"""The plugin kernel: hooks, registries, entry-point loading, failure isolation, CLI listing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import types
from importlib import metadata

import attrs
import pytest
from click.testing import CliRunner

import crystalforge
from crystalforge import hookimpl
from crystalforge.cli import cli
from crystalforge.errors import OptionError, PluginError, UnknownComponentError
from crystalforge.hookspecs import PROJECT_NAME
from crystalforge.plugins import make_plugin_manager
from crystalforge.registry import KINDS, Option


@attrs.define
class EchoScorer:
    """Scores every CIF with a constant."""

    value: float = attrs.field(default=1.5, metadata={"help": "the constant score"})
    lower_is_better: bool = True

    def score(self, cif: str) -> float:
        return self.value


def _plugin(hook_name: str, component_name: str, factory=EchoScorer, **extra):
    """Build an in-process plugin object implementing one registration hook."""
    module = types.ModuleType(f"plugin_{hook_name}")

    def hook(register):
        register(component_name, factory, **extra)

    hook.__name__ = hook_name
    setattr(module, hook_name, hookimpl(hook))
    return module


# -- one test per hook: a third-party plugin's component appears, tagged -------------------
@pytest.mark.parametrize("kind,hook_name", list(KINDS.items()))
def test_each_hook_registers_tagged_component(plugin_manager, kind, hook_name):
    plugin_manager.register(_plugin(hook_name, f"my-{kind}"), name="thirdparty")
    component = plugin_manager.registry(kind).get(f"my-{kind}")
    assert component.plugin == "thirdparty"
    assert component.kind == kind


def test_hook_register_tokenizers(plugin_manager):
    plugin_manager.register(_plugin("register_tokenizers", "tok2"), name="p")
    assert "crystallm" in plugin_manager.registry("tokenizer")
    assert "tok2" in plugin_manager.registry("tokenizer")


def test_hook_register_models(plugin_manager):
    plugin_manager.register(_plugin("register_models", "m2"), name="p")
    assert {"gpt", "m2"} <= set(plugin_manager.registry("model").names())


def test_hook_register_search_strategies(plugin_manager):
    plugin_manager.register(_plugin("register_search_strategies", "beam"), name="p")
    names = plugin_manager.registry("search").names()
    assert {"random", "top-k", "top-p", "greedy", "puct", "uct", "mcts-greedy", "beam"} <= set(names)


def test_hook_register_scorers(plugin_manager):
    plugin_manager.register(_plugin("register_scorers", "echo"), name="p")
    scorer = plugin_manager.registry("scorer").create("echo", value="2.5")
    assert scorer.score("anything") == 2.5


def test_hook_register_validators(plugin_manager):
    plugin_manager.register(_plugin("register_validators", "mine", required=True), name="p")
    component = plugin_manager.registry("validator").get("mine")
    assert component.metadata["required"] is True
    assert plugin_manager.registry("validator").get("bond_length").metadata["required"] is True
    assert plugin_manager.registry("validator").get("cell_sanity").metadata["required"] is False


def test_builtins_are_ordinary_plugins(plugin_manager):
    infos = {i.name: i for i in plugin_manager.plugin_infos()}
    assert infos["crystalforge.scorers"].builtin
    assert infos["crystalforge.scorers"].provides == {"scorer": ["random", "zmq"]}
    assert plugin_manager.registry("scorer").get("zmq").plugin == "crystalforge.scorers"


# -- registry rules -----------------------------------------------------------------------
def test_duplicate_name_names_both_plugins(plugin_manager, monkeypatch):
    plugin_manager.register(_plugin("register_scorers", "random"), name="copycat")
    monkeypatch.setenv("CRYSTALFORGE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as excinfo:
        plugin_manager.registry("scorer")
    message = str(excinfo.value)
    assert "Duplicate scorer name 'random'" in message
    assert "plugin 'crystalforge.scorers'" in message and "plugin 'copycat'" in message


def test_duplicate_outside_strict_mode_drops_offender(plugin_manager):
    plugin_manager.register(_plugin("register_scorers", "random"), name="copycat")
    registry = plugin_manager.registry("scorer")
    assert registry.get("random").plugin == "crystalforge.scorers"
    info = {i.name: i for i in plugin_manager.plugin_infos()}["copycat"]
    assert info.status == "error"
    assert "Duplicate scorer name 'random'" in info.error
    assert "crystalforge.scorers" in info.error and "copycat" in info.error


def test_unknown_name_lists_known_and_closest(plugin_manager):
    with pytest.raises(UnknownComponentError) as excinfo:
        plugin_manager.registry("scorer").get("zqm")
    message = str(excinfo.value)
    assert "Unknown scorer 'zqm'" in message
    assert "Available: random, zmq" in message
    assert "Did you mean 'zmq'?" in message


def test_typed_options_with_defaults(plugin_manager):
    plugin_manager.register(_plugin("register_scorers", "echo"), name="p")
    component = plugin_manager.registry("scorer").get("echo")
    assert component.options == (
        Option("value", float, 1.5, "the constant score"),
        Option("lower_is_better", bool, True, ""),
    )
    assert component.create(value="3", lower_is_better="false").lower_is_better is False
    with pytest.raises(OptionError, match="Option 'value' expects float, got 'abc'"):
        component.create(value="abc")
    with pytest.raises(OptionError, match="Unknown option for scorer 'echo' 'valeu'.*Did you mean 'value'"):
        component.create(valeu=1)


def test_option_conversion_rules():
    assert Option("n", int).convert("12") == 12
    with pytest.raises(OptionError):
        Option("n", int).convert(1.5)
    with pytest.raises(OptionError):
        Option("flag", bool).convert("maybe")
    with pytest.raises(OptionError, match="must be one of a, b"):
        Option("mode", str, "a", choices=("a", "b")).convert("c")


def test_bad_factory_is_plugin_error(plugin_manager):
    plugin_manager.register(_plugin("register_scorers", "broken", factory=42), name="bad")
    plugin_manager.registry("scorer")
    info = {i.name: i for i in plugin_manager.plugin_infos()}["bad"]
    assert info.status == "error" and "neither callable" in info.error


# -- entry points: faked importlib.metadata distributions ----------------------------------
class FakeDistribution:
    def __init__(self, name: str, version: str, entry_points: list[metadata.EntryPoint]):
        self.metadata = {"name": name, "version": version}
        self.entry_points = entry_points


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Three fake installed distributions: a good plugin, one that fails on import, one on register."""
    (tmp_path / "good_cf_plugin.py").write_text(textwrap.dedent("""
        import crystalforge

        class Const:
            lower_is_better = True
            def score(self, cif):
                return 0.0

        @crystalforge.hookimpl
        def register_scorers(register):
            register("const", Const, description="always zero")
    """))
    (tmp_path / "broken_import_cf_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    (tmp_path / "broken_register_cf_plugin.py").write_text(textwrap.dedent("""
        import crystalforge

        @crystalforge.hookimpl
        def register_validators(register):
            raise RuntimeError('registration exploded')
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    dists = [
        FakeDistribution("cf-good", "1.2.3", [metadata.EntryPoint("good", "good_cf_plugin", PROJECT_NAME)]),
        FakeDistribution("cf-broken", "0.1", [metadata.EntryPoint("broken", "broken_import_cf_plugin", PROJECT_NAME)]),
        FakeDistribution("cf-reg", "0.2", [metadata.EntryPoint("badreg", "broken_register_cf_plugin", PROJECT_NAME)]),
        FakeDistribution("other", "9", [metadata.EntryPoint("x", "os", "console_scripts")]),
    ]
    monkeypatch.setattr("crystalforge.plugins.importlib_metadata.distributions", lambda: dists)
    monkeypatch.delenv("CRYSTALFORGE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("CRYSTALFORGE_BLOCK_PLUGINS", raising=False)
    yield
    for name in ("good_cf_plugin", "broken_import_cf_plugin", "broken_register_cf_plugin"):
        sys.modules.pop(name, None)


def test_entry_points_good_and_broken(fake_plugins):
    manager = make_plugin_manager()
    assert manager.registry("scorer").get("const").plugin == "good"
    infos = {i.name: i for i in manager.plugin_infos()}
    assert infos["good"].status == "ok" and infos["good"].version == "1.2.3"
    assert infos["good"].provides == {"scorer": ["const"]}
    assert infos["broken"].status == "error" and "needs libfoo" in infos["broken"].error
    assert infos["badreg"].status == "error" and "registration exploded" in infos["badreg"].error
    assert manager.get_plugin("broken") is None and manager.get_plugin("badreg") is None
    assert "x" not in infos  # other entry-point groups are ignored
    # the built-ins still work
    assert "bond_length" in manager.registry("validator")


def test_entry_points_strict_mode_is_fatal(fake_plugins, monkeypatch):
    monkeypatch.setenv("CRYSTALFORGE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="Plugin 'broken' failed to load: ImportError: needs libfoo"):
        make_plugin_manager()


def test_block_plugins_by_name(fake_plugins, monkeypatch):
    monkeypatch.setenv("CRYSTALFORGE_BLOCK_PLUGINS", "good, crystalforge.scorers")
    manager = make_plugin_manager()
    infos = {i.name: i for i in manager.plugin_infos()}
    assert infos["good"].status == "blocked"
    assert infos["crystalforge.scorers"].status == "blocked"
    assert manager.registry("scorer").names() == []


def test_cli_plugins_shows_errors_and_keeps_going(fake_plugins):
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "good" in result.output and "scorer: const" in result.output
    assert "error" in result.output and "needs libfoo" in result.output
    data = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)
    by_name = {d["name"]: d for d in data}
    assert by_name["broken"]["status"] == "error"
    assert by_name["good"]["provides"] == {"scorer": ["const"]}


# -- CLI skeleton -------------------------------------------------------------------------
def test_cli_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert crystalforge.__version__ in result.output


def test_cli_list_kind_json(monkeypatch):
    monkeypatch.setattr("crystalforge.plugins.importlib_metadata.distributions", lambda: [])
    result = CliRunner().invoke(cli, ["list", "tokenizer", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["name"] == "crystallm"


def test_cli_list_unknown_kind_is_usage_error():
    result = CliRunner().invoke(cli, ["list", "scorers"])
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_cli_library_error_is_one_line():
    # A library error raised inside a command: one line, exit 1, no traceback.
    @cli.command("explode-for-test")
    def explode():
        raise UnknownComponentError("Unknown scorer 'x'. Available: random, zmq.")

    try:
        result = CliRunner().invoke(cli, ["explode-for-test"])
        assert result.exit_code == 1
        assert result.output.strip() == "Error: Unknown scorer 'x'. Available: random, zmq."
        debug = CliRunner().invoke(cli, ["--debug", "explode-for-test"])
        assert isinstance(debug.exception, UnknownComponentError)
    finally:
        cli.commands.pop("explode-for-test", None)


def test_public_api_names_exist():
    for name in ("make_plugin_manager", "load_tokenizer", "preprocess_cif", "postprocess_cif",
                 "make_prompt", "validate", "load_model", "generate", "hookimpl"):
        assert name in dir(crystalforge)


# -- hooks go through pluggy: tracing, and isolation of a failing plugin ---------------------
def _partial_plugin():
    """A plugin that registers a scorer and a validator, then fails in its validator hook."""
    module = types.ModuleType("partial_plugin")

    @hookimpl
    def register_scorers(register):
        register("half", EchoScorer)

    @hookimpl
    def register_validators(register):
        register("half-check", EchoScorer)
        raise RuntimeError("validator hook exploded")

    module.register_scorers = register_scorers
    module.register_validators = register_validators
    return module


def test_failing_plugin_is_rolled_back_and_isolated(plugin_manager):
    plugin_manager.register(_partial_plugin(), name="partial")
    plugin_manager.register(_plugin("register_scorers", "echo"), name="fine")
    scorers = plugin_manager.registry("scorer")
    assert "half" not in scorers and "half-check" not in plugin_manager.registry("validator")
    assert scorers.get("echo").plugin == "fine" and "random" in scorers
    infos = {i.name: i for i in plugin_manager.plugin_infos()}
    assert infos["partial"].status == "error" and infos["partial"].provides == {}
    assert infos["partial"].error == "RuntimeError: validator hook exploded"
    assert infos["fine"].status == "ok" and infos["fine"].provides == {"scorer": ["echo"]}
    assert plugin_manager.get_plugin("partial") is None


def test_trace_hooks_logs_each_call_with_plugin_and_arguments(monkeypatch, caplog):
    monkeypatch.setenv("CRYSTALFORGE_TRACE_HOOKS", "1")
    monkeypatch.delenv("CRYSTALFORGE_BLOCK_PLUGINS", raising=False)
    monkeypatch.delenv("CRYSTALFORGE_STRICT_PLUGINS", raising=False)
    manager = make_plugin_manager(entry_points=False)
    manager.register(_plugin("register_scorers", "echo"), name="thirdparty")
    manager.register(_partial_plugin(), name="partial")
    with caplog.at_level(logging.WARNING, logger="crystalforge.hooks"):
        manager.registry("scorer")
    lines = [r.getMessage() for r in caplog.records if r.name == "crystalforge.hooks"]
    assert "hook register_scorers(register=<register scorer for thirdparty>) -> thirdparty" in lines
    assert ("hook register_scorers(register=<register scorer for crystalforge.scorers>) "
            "-> crystalforge.scorers") in lines
    assert "hook register_scorers done by thirdparty: ok" in lines
    assert "hook register_validators done by partial: raised RuntimeError: validator hook exploded" in lines
    assert manager.registry("scorer").get("echo").plugin == "thirdparty"  # tracing changes nothing else


def test_plugin_object_need_not_be_hashable(plugin_manager):
    # an in-process plugin may be any object with hook functions, e.g. a SimpleNamespace
    plugin_manager.register(types.SimpleNamespace(register_scorers=hookimpl(
        lambda register: register("echo", EchoScorer))), name="namespace")
    assert plugin_manager.registry("scorer").get("echo").plugin == "namespace"
    assert "random" in plugin_manager.registry("scorer")


def test_no_trace_without_the_switch(plugin_manager, monkeypatch, caplog):
    with caplog.at_level(logging.DEBUG, logger="crystalforge.hooks"):
        plugin_manager.registry("scorer")
    assert not [r for r in caplog.records if r.name == "crystalforge.hooks"]


def test_trace_hooks_prints_from_the_command_line(tmp_path):
    env = {**os.environ, "CRYSTALFORGE_TRACE_HOOKS": "1"}
    env.pop("CRYSTALFORGE_BLOCK_PLUGINS", None)
    result = subprocess.run([sys.executable, "-m", "crystalforge", "list", "scorer"], capture_output=True,
                            text=True, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("hook register_scorers(register=<register scorer for crystalforge.scorers>) "
            "-> crystalforge.scorers") in result.stderr
    assert "hook register_validators done by crystalforge.validators: ok" in result.stderr
    assert "random" in result.stdout
