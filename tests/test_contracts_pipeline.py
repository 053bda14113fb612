"""Contract tests end to end: the third-party package's components are *called* by
``crystalforge.generate`` and by ``crystalforge run``, each chosen by name.

The package is the one of ``plugin_fixtures`` (real files with a ``.dist-info`` on
``sys.path``). ``bar-model`` with ``source=default`` carries the embedded model's weights,
so greedy decoding writes a real CIF that post-processes, validates and gets scored.
"""

from __future__ import annotations

import csv
import importlib

import pytest
from click.testing import CliRunner
from plugin_fixtures import bar_plugin  # noqa: F401 - fixture

import crystalforge as cf
from crystalforge.cli import cli
from crystalforge.components import create_model
from crystalforge.plugins import make_plugin_manager

SEARCH_OPTIONS = {"max_new_tokens": 400, "greedy": True}


def _calls():
    return importlib.import_module("bar_plugin").CALLS


@pytest.mark.slow
def test_generate_scores_with_a_scorer_written_to_the_contract(bar_plugin):  # noqa: F811
    """A scorer with only ``score`` and ``lower_is_better`` works in the pipeline (kernel defaults)."""
    pm = make_plugin_manager()
    model = create_model(pm, "bar-model", source="default", device="cpu")
    (candidate,) = cf.generate("CaTiO3", spacegroup="Pm-3m", n=1, model=model, search="bar-search",
                               search_options=SEARCH_OPTIONS, scorer="bar-scorer", plugin_manager=pm)
    assert candidate.cif is not None, candidate.postprocess_error
    assert candidate.score == float(len(candidate.cif))
    assert candidate.report.checks["bar-check"].passed
    assert candidate.extra.get("strategy") == "bar"
    calls = _calls()
    assert calls["search.generate"] == 1 and calls["model.forward_cached"] > 10
    assert calls["scorer.score"] == 1 and calls["validator.check"] == 1


@pytest.mark.slow
def test_generate_uses_every_third_party_kind_by_name(bar_plugin):  # noqa: F811
    pm = make_plugin_manager()
    (candidate,) = cf.generate(
        "CaTiO3", spacegroup="Pm-3m", n=1, model="bar-model", model_options={"source": "default"},
        tokenizer="bar-tokenizer", search="bar-search", search_options=SEARCH_OPTIONS, scorer="bar-scorer",
        validator_options={"bar-check.max_length": 10}, plugin_manager=pm, device="cpu",
    )
    assert candidate.cif is not None, candidate.postprocess_error
    assert candidate.score == float(len(candidate.cif))
    check = candidate.report.checks["bar-check"]
    assert not check.passed and check.message.endswith("> 10")
    calls = _calls()
    for what in ("tokenizer.encode", "model.forward_cached", "search.generate", "scorer.score",
                 "validator.check"):
        assert calls[what] >= 1, what


@pytest.mark.slow
def test_run_uses_every_third_party_kind_by_name(bar_plugin, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "run", "CaTiO3", "--spacegroup", "Pm-3m", "-n", "1", "--device", "cpu", "--seed", "0",
        "--model", "bar-model", "--model-opt", "source=default", "--tokenizer", "bar-tokenizer",
        "--search", "bar-search", "-O", "greedy=true", "-O", "max_new_tokens=400",
        "--scorer", "bar-scorer", "--validator-opt", "bar-check.max_length=10",
        "--out", str(out), "--no-progress", "--json",
    ])
    assert result.exit_code == 0, result.output
    calls = _calls()
    for what in ("tokenizer.encode", "model.forward_cached", "search.generate", "scorer.score",
                 "validator.check"):
        assert calls[what] >= 1, what
    with open(out / "summary.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["bar-check"] == "False" and float(row["score"]) > 0
    # the strategy's artifacts() table is written beside the candidates
    with open(out / "bar_log.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == [{"prompt": "0", "samples": "1"}]
