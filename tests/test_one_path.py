"""One path: ``crystalforge run`` is a thin caller of ``crystalforge.generate``, and every
component is built through one function per kind (--model, --model-opt, --tokenizer,
--validator-opt)."""

from __future__ import annotations

from pathlib import Path

import pytest

import crystalforge as cf
from crystalforge.errors import OptionError, UnknownComponentError
from crystalforge.generation.components import make_model, make_validators
from crystalforge.util import format_table, parse_dotted_pairs, parse_pairs, truthy
from cli_helpers import invoke, read_summary

FAST = {"max_new_tokens": "40"}


def test_cli_summary_equals_the_ranked_api_result(cf_tiny_model, plugin_manager, tmp_path):
    out = tmp_path / "out"
    result = invoke(plugin_manager, ["run", "CaTiO3", "NaCl", "-s", "Pm-3m", "-n", "3", "--model", str(cf_tiny_model),
                                     "--out", str(out), "--scorer", "random", "--seed", "3", "--batch-size", "4",
                                     "--no-progress", "-O", "max_new_tokens=40"])
    assert result.exit_code == 0, result.output
    rows = read_summary(out)
    ranked = cf.generate(["CaTiO3", "NaCl"], spacegroup="Pm-3m", n=3, model=str(cf_tiny_model), scorer="random",
                         seed=3, batch_size=4, search_options=FAST, plugin_manager=plugin_manager)
    assert [r["name"] for r in rows] == [c.name for c in ranked]
    assert [float(r["score"]) for r in rows] == pytest.approx([c.score for c in ranked], rel=1e-5)
    assert [r["is_valid"] for r in rows] == [str(c.is_valid) for c in ranked]
    scores = [c.score for c in ranked]
    assert scores == sorted(scores)  # nothing valid; the random scorer is lower-is-better


def test_generate_writes_a_run_folder_from_a_prompts_file(cf_tiny_model, plugin_manager, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("NaCl Fm-3m\nKBr\n")
    result = cf.generate(prompts=prompts, n=2, model=str(cf_tiny_model), search_options=FAST, device="cpu",
                         dtype="float32", plugin_manager=plugin_manager, out=tmp_path / "run", seed=1)
    assert len(result) == 4 and result.run.generated == 4
    assert [r["name"] for r in read_summary(tmp_path / "run")] == [c.name for c in result]
    assert sorted(p.name for p in (tmp_path / "run").glob("*.cif")) == sorted(f"{c.name}.cif" for c in result)
    again = cf.generate(prompts=prompts, n=2, model=str(cf_tiny_model), search_options=FAST, device="cpu",
                        plugin_manager=plugin_manager, out=tmp_path / "run", seed=1)
    assert len(again) == 0 and again.run.resumed == 4  # resumed: nothing new to make


def test_model_by_registered_name_with_options(cf_tiny_model, plugin_manager, tmp_path):
    model = make_model("gpt", options={"path": str(cf_tiny_model)}, plugin_manager=plugin_manager)
    assert model.config.block_size == cf.load_model(cf_tiny_model).config.block_size
    # no name: the built-in loader ``gpt`` takes the options (here the checkpoint to read)
    default_loader = make_model(None, options={"path": str(cf_tiny_model)}, plugin_manager=plugin_manager)
    assert default_loader.config.block_size == model.config.block_size
    with pytest.raises(OptionError):
        make_model("gpt", options={"no_such_option": 1}, plugin_manager=plugin_manager)
    out = tmp_path / "o"
    result = invoke(plugin_manager, ["run", "NaCl", "-n", "1", "--model", "gpt", "--model-opt",
                                     f"path={cf_tiny_model}", "--tokenizer", "crystallm", "--out", str(out),
                                     "--no-progress", "-O", "max_new_tokens=20"])
    assert result.exit_code == 0, result.output
    assert len(read_summary(out)) == 1


def test_validator_options_reach_the_check(plugin_manager, perov_raw):
    strict = dict((n, i) for n, i, _ in make_validators(plugin_manager, options={"bond_length": {"tolerance": "0.001"}}))
    assert strict["bond_length"].tolerance == 0.001
    with pytest.raises(UnknownComponentError):
        make_validators(plugin_manager, options={"bond_lenght": {"tolerance": "0.1"}})
    with pytest.raises(OptionError):
        parse_dotted_pairs(("tolerance=0.1",), "--validator-opt")


def test_bad_tokenizer_and_validator_option_are_one_line(plugin_manager, tmp_path):
    for args in (["--tokenizer", "crystalm"], ["--validator-opt", "bond_length.tolerance=much"]):
        result = invoke(plugin_manager, ["run", "NaCl", "--model", str(tmp_path / "m.pt"), "--out",
                                         str(tmp_path / "o"), *args])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "o").exists()


def test_shared_text_helpers():
    assert parse_pairs(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    assert parse_dotted_pairs(["bond_length.tolerance=0.3"], "--validator-opt") == {"bond_length": {"tolerance": "0.3"}}
    assert [truthy(v) for v in ("True", "yes", "0", "", True, 0, "on")] == [True, True, False, False, True, False, True]
    assert format_table(("a", "bb"), [(1, float("nan")), ("xyz", 0.123456)]) == [
        "a    bb", "---  ------", "1    nan", "xyz  0.1235"]


def test_tree_search_candidates_are_validated_once(cf_tiny_model, plugin_manager):
    from collections import Counter

    from crystalforge import hookimpl
    from crystalforge.validation.report import CheckResult

    seen: Counter = Counter()

    class Counting:
        def check(self, cif, context):
            seen[cif] += 1
            return CheckResult("counting", True, None, "counted", False)

    class Plugin:
        @staticmethod
        @hookimpl
        def register_validators(register):
            register("counting", Counting)

    plugin_manager.register(Plugin, name="counting-plugin")
    candidates = cf.generate("NaCl", n=2, search="puct", model=str(cf_tiny_model), plugin_manager=plugin_manager,
                             search_options={"num_simulations": "4", "max_new_tokens": "30", "constrain": "none"},
                             device="cpu")
    assert candidates and all("counting" in c.report.checks for c in candidates)
    assert seen and max(seen.values()) == 1  # judged while searching, never again by the pipeline
