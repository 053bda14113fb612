"""Contract tests: a third-party package's component of every kind is created through the
registry functions and called, and a component missing a member is refused in one line.

The package is real files on ``sys.path`` (``plugin_fixtures.write_bar_package``), found by
``importlib.metadata`` like an installed distribution.
"""

from __future__ import annotations

import importlib
import json
import math
import types

import pytest
import torch
from click.testing import CliRunner
from plugin_fixtures import bar_plugin  # noqa: F401 - fixture

import crystalforge as cf
from crystalforge import components, contracts
from crystalforge.cli import cli
from crystalforge.components import (
    create_model,
    create_scorer,
    create_search,
    create_tokenizer,
    create_validators,
)
from crystalforge.errors import CheckpointError, OptionError, PluginError, UnknownComponentError
from crystalforge.plugins import make_plugin_manager
from crystalforge.testing import sample_cifs, write_tiny_model
from crystalforge.validation.report import run_checks


def _calls():
    return importlib.import_module("bar_plugin").CALLS


@pytest.fixture
def cif() -> str:
    """A real post-processed CIF (Cd1Cu1N3, 5 atoms)."""
    from crystalforge.cif.postprocess import postprocess_cif

    return postprocess_cif(sample_cifs()[0][1])


@pytest.fixture
def pm(bar_plugin):  # noqa: F811
    manager = make_plugin_manager()
    info = {i.name: i for i in manager.plugin_infos()}["bar"]
    assert info.status == "ok", info.error
    assert info.version == "0.1" and info.source.startswith("bar-plugin")
    return manager


# -- the contracts themselves ---------------------------------------------------------------
def test_required_members_are_what_the_kernel_calls():
    assert set(contracts.required_members("tokenizer")) == {
        "itos", "stoi", "newline_id", "vocab_hash", "vocab_size", "tokenize", "encode", "decode"}
    assert set(contracts.required_members("model")) == {
        "config", "config.block_size", "config.vocab_size", "parameters", "forward", "new_cache", "forward_cached"}
    assert contracts.required_members("search") == ("generate",)
    assert set(contracts.required_members("scorer")) == {"lower_is_better", "score"}
    assert contracts.required_members("validator") == ("check",)


def test_contracts_are_exported_at_top_level():
    for name in ("Tokenizer", "LanguageModel", "KVCache", "SearchStrategy", "Scorer", "Validator",
                 "Sample", "CheckResult", "ValidationContext", "ValidityReport", "Option"):
        assert getattr(cf, name) is getattr(contracts, name, None) or name == "Option", name
    assert cf.Sample is importlib.import_module("crystalforge.search.base").Sample


def test_builtins_meet_their_contracts(plugin_manager):
    from crystalforge.model.gpt import GPT, GPTConfig

    assert contracts.missing_member("tokenizer", create_tokenizer(plugin_manager)) is None
    assert contracts.missing_member("model", GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))) is None
    for name in plugin_manager.registry("search").names():
        assert contracts.missing_member("search", create_search(plugin_manager, name)) is None
    assert create_scorer(plugin_manager, "random").unit == ""
    for name, instance, _ in create_validators(plugin_manager):
        assert not isinstance(instance, Exception), (name, instance)


def _plugin(hook_name: str, name: str, factory):
    module = types.ModuleType(f"plugin_{hook_name}")

    def hook(register):
        register(name, factory)

    hook.__name__ = hook_name
    setattr(module, hook_name, cf.hookimpl(hook))
    return module


def test_missing_member_is_named_in_one_line(plugin_manager):
    class NoScore:
        lower_is_better = True

    class NoBlockSize(torch.nn.Module):
        config = types.SimpleNamespace(vocab_size=371)

        def forward(self, idx, targets=None): ...
        def new_cache(self, batch_size, max_len=None): ...
        def forward_cached(self, idx, cache, pad_mask=None): ...

    class NotCallable:
        check = "yes"

    plugin_manager.register(_plugin("register_scorers", "foo", NoScore), name="bar")
    plugin_manager.register(_plugin("register_models", "tiny", NoBlockSize), name="baz")
    plugin_manager.register(_plugin("register_validators", "odd", NotCallable), name="qux")
    with pytest.raises(PluginError) as excinfo:
        create_scorer(plugin_manager, "foo")
    assert str(excinfo.value) == "scorer 'foo' from plugin 'bar' lacks required member 'score'"
    with pytest.raises(PluginError, match="^model 'tiny' from plugin 'baz' lacks required member 'config.block_size'$"):
        create_model(plugin_manager, "tiny")
    # a validator that breaks its contract fails its own check, naming the member
    built = {name: instance for name, instance, _ in create_validators(plugin_manager)}
    report = run_checks("data_x\n", list((n, i, False) for n, i in built.items()))
    assert report.checks["odd"].passed is False
    assert "lacks required member 'check'" in report.checks["odd"].message
    assert report.checks["cell_sanity"].message != report.checks["odd"].message


# -- one test per kind: the third-party component is created and called ----------------------
def test_contract_tokenizer(pm):
    tokenizer = create_tokenizer(pm, "bar-tokenizer")
    assert type(tokenizer).__name__ == "BarTokenizer"
    text = "data_Ca1Ti1O3\n_symmetry_space_group_name_H-M Pm-3m\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert cf.load_tokenizer("bar-tokenizer", plugin_manager=pm).newline_id == tokenizer.newline_id
    assert _calls()["tokenizer.encode"] == 1 and _calls()["tokenizer.decode"] == 1


def test_load_tokenizer_goes_through_the_registry(monkeypatch):
    assert cf.load_tokenizer().vocab_size == 371
    monkeypatch.setenv("CRYSTALFORGE_BLOCK_PLUGINS", "crystalforge.tokenizers")
    with pytest.raises(UnknownComponentError, match="Unknown tokenizer 'crystallm'"):
        cf.load_tokenizer()


def test_contract_model(pm):
    model = create_model(pm, "bar-model", device="cpu", width="8")
    assert type(model).__name__ == "BarModel" and model.config.n_embd == 8
    cache = model.new_cache(2, max_len=4)
    logits = model.forward_cached(torch.tensor([[1, 2], [3, 4]]), cache)
    assert logits.shape == (2, 2, 371) and cache.length == 2
    assert cache.select([1]).batch_size == 1 and cache.clone().length == 2
    assert _calls()["model.forward_cached"] == 1


def test_create_model_name_path_or_default(pm, tmp_path):
    path = write_tiny_model(tmp_path / "ckpt.pt", n_layer=1, n_embd=16, block_size=64)
    from_file = create_model(pm, path, device="cpu")
    from_dir = create_model(pm, str(tmp_path), device="cpu", dtype="bfloat16")
    assert from_file.config.block_size == 64 and from_dir.dtype == torch.bfloat16
    default = create_model(pm, None, device="auto")
    assert default.config.vocab_size == 371 and not default.training
    assert create_model(pm, default) is default  # a built model is only checked
    with pytest.raises(UnknownComponentError) as excinfo:
        create_model(pm, "bar-modle")
    assert str(excinfo.value) == ("Unknown model 'bar-modle' (nor a checkpoint file or folder). "
                                  "Available: bar-model, gpt. Did you mean 'bar-model'?")
    with pytest.raises(CheckpointError, match="^checkpoint not found: .*missing.pt "
                                              r"\(nor is it a registered model: bar-model, gpt\)$"):
        create_model(pm, str(tmp_path / "missing.pt"))
    with pytest.raises(OptionError, match="Unknown option for model 'bar-model' 'widht'"):
        create_model(pm, "bar-model", widht=8)


def test_contract_search(pm):
    model = create_model(pm, "bar-model", device="cpu")
    tokenizer = create_tokenizer(pm, "bar-tokenizer")
    strategy = create_search(pm, "bar-search", max_new_tokens="6")
    assert components.accepts_indices(strategy) is False
    samples = strategy.generate(model, tokenizer, ["data_Ca1Ti1O3\n", "data_C4\n"], 2,
                                generator=torch.Generator().manual_seed(0))
    assert [len(s) for s in samples] == [2, 2]
    assert all(isinstance(s, cf.Sample) and s.text.startswith("data_") and 0 < s.n_tokens <= 6
               for row in samples for s in row)
    assert _calls()["search.generate"] == 1 and _calls()["model.forward_cached"] >= 4
    assert components.search_artifacts(strategy) == {
        "bar_log": [{"prompt": 0, "samples": 2}, {"prompt": 1, "samples": 2}]}
    top_k = create_search(pm, "top-k")
    assert components.search_artifacts(top_k) == {} and components.accepts_indices(top_k)


def test_contract_scorer(pm, cif):
    scorer = create_scorer(pm, "bar-scorer", offset="0.5")
    assert scorer.lower_is_better is True and scorer.unit == "" and scorer.offset == 0.5
    # score_many and close come from the kernel; score_many calls the plugin's score
    assert scorer.score_many([cif, "ab"]) == [len(cif) + 0.5, 2.5]
    assert _calls()["scorer.score"] == 2
    with scorer as same:
        assert same.score("abc") == 3.5
    scorer.close()  # a second close is fine
    assert create_scorer(pm, None) is None
    bare = importlib.import_module("bar_plugin").BarScorer()
    assert create_scorer(pm, bare).score_many(["x"]) == [1.0]
    with pytest.raises(OptionError, match="without a scorer"):
        create_scorer(pm, None, offset=1)


def test_contract_validator(pm, cif):
    built = create_validators(pm, {"bar-check.max_length": "10"})
    check = {name: instance for name, instance, _ in built}["bar-check"]
    assert check.max_length == 10
    report = run_checks(cif, built)
    assert report.checks["bar-check"].passed is False
    assert report.checks["bar-check"].message == f"{len(cif)} characters > 10"
    assert _calls()["validator.check"] == 1
    loose = cf.validate(cif, plugin_manager=pm, options={"bar-check": {"max_length": 10**6}},
                        require=["bar-check"])
    assert loose.checks["bar-check"].passed and loose.checks["bar-check"].required
    assert loose.is_valid == all(r.passed for r in loose.checks.values() if r.required)


def test_validator_options_reach_builtin_checks(plugin_manager, cif):
    strict = create_validators(plugin_manager, {"bond_length.tolerance": "0.0001", "cell_sanity.max_length": 1.0})
    instances = {name: instance for name, instance, _ in strict}
    assert instances["bond_length"].tolerance == 0.0001 and instances["cell_sanity"].max_length == 1.0
    report = run_checks(cif, strict)
    assert not report.checks["bond_length"].passed and not report.checks["cell_sanity"].passed
    assert run_checks(cif, create_validators(plugin_manager)).checks["cell_sanity"].passed


def test_validator_option_errors(plugin_manager):
    with pytest.raises(OptionError, match="Unknown option for validator 'bond_length' 'tolerence'.*'tolerance'"):
        create_validators(plugin_manager, {"bond_length.tolerence": 0.3})
    with pytest.raises(UnknownComponentError, match="Unknown validator 'bond_lenght'.*Did you mean 'bond_length'"):
        create_validators(plugin_manager, {"bond_lenght.tolerance": 0.3})
    with pytest.raises(OptionError, match="must be CHECK.KEY"):
        create_validators(plugin_manager, {"tolerance": 0.3})
    with pytest.raises(OptionError, match="Option 'tolerance' expects float"):
        create_validators(plugin_manager, {"bond_length.tolerance": "wide"})


def test_list_validator_shows_settable_options(pm):
    result = CliRunner().invoke(cli, ["list", "validator"], obj=None)
    assert result.exit_code == 0, result.output
    assert "tolerance: float = 0.32" in result.output
    assert "max_length: int = 100000" in result.output  # the plugin's option, found by entry point
    data = json.loads(CliRunner().invoke(cli, ["list", "validator", "--json"]).output)
    bar = next(d for d in data if d["name"] == "bar-check")
    assert bar["plugin"] == "bar" and bar["options"][0]["name"] == "max_length"


def test_adapter_forwards_and_defaults():
    class Minimal:
        lower_is_better = False
        extra = 7

        def score(self, cif):
            return math.nan if not cif else 1.0

    adapted = components.adapt_scorer(Minimal())
    assert adapted.extra == 7 and adapted.lower_is_better is False
    assert math.isnan(adapted.score_many(["", "x"])[0])
    from crystalforge.scoring.random import RandomScorer

    builtin = RandomScorer()
    assert components.adapt_scorer(builtin) is builtin  # has every optional member already


def test_concepts_picture_names_real_modules():
    """The data-flow picture of docs/concepts.md names only modules and functions that exist."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    text = (repo / "docs" / "concepts.md").read_text(encoding="utf-8")
    picture = text.split("## From a composition to files", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    modules = re.findall(r"crystalforge/[\w/]+\.py", picture)
    assert len(modules) >= 10
    missing = [m for m in modules if not (repo / m).is_file()]
    assert not missing, f"docs/concepts.md names modules that do not exist: {missing}"
    for function in re.findall(r"\bcreate_\w+", picture):
        assert hasattr(components, function), function


def test_model_must_fit_the_tokenizer(plugin_manager):
    from crystalforge.components import check_model_fits_tokenizer
    from crystalforge.model.gpt import GPT, GPTConfig

    tokenizer = create_tokenizer(plugin_manager)
    small = GPT(GPTConfig(vocab_size=100, n_layer=1, n_head=1, n_embd=8, block_size=8))
    with pytest.raises(CheckpointError, match="the tokenizer has 371 tokens but the model knows only 100"):
        check_model_fits_tokenizer(small, tokenizer)
    check_model_fits_tokenizer(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8)), tokenizer)
