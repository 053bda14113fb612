"""Run folders never mix scorers: a changed scorer is refused, ``--rescore`` rescores the kept
candidates and the manifest names the scorer of the scores; scorer units, extras and
relaxed structures reach the table, summary.csv, JSON and the manifest."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import attrs
import pytest

from crystalforge import hookimpl
from crystalforge.contracts import ScoreResult
from cli_helpers import invoke, read_summary as summary

FAST = ["-O", "max_new_tokens=40"]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture
def base(cf_tiny_model, tmp_path):
    return ["run", "Na1Cl1", "-s", "Pm-3m", "-n", "3", "--model", str(cf_tiny_model), "--out", str(tmp_path / "out"),
            "--device", "cpu", "--no-progress", "--seed", "4", *FAST]


def test_changed_scorer_option_is_refused_then_rescored(plugin_manager, base, tmp_path):
    out = tmp_path / "out"
    first = invoke(plugin_manager, [*base, "--scorer", "random", "--scorer-opt", "seed=1", "--json"])
    assert first.exit_code == 0, first.output
    before = {r["name"]: r["score"] for r in json.loads(first.output)["rows"]}
    cifs = {p.name: p.read_text() for p in out.glob("*.cif")}

    refused = invoke(plugin_manager, [*base, "--scorer", "random", "--scorer-opt", "seed=2"])
    assert refused.exit_code == 1
    line = refused.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "scorer_options={'seed': 1}" in line and "--rescore" in line and "another --out" in line
    assert manifest(out)["settings"]["scorer_options"] == {"seed": 1}  # refused: nothing rewritten

    rescored = invoke(plugin_manager, [*base, "--scorer", "random", "--scorer-opt", "seed=2", "--rescore", "--json"])
    assert rescored.exit_code == 0, rescored.output
    data = json.loads(rescored.output)
    assert (data["generated"], data["resumed"], data["rescored"]) == (0, 3, 3)
    after = {r["name"]: r["score"] for r in data["rows"]}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    assert {p.name: p.read_text() for p in out.glob("*.cif")} == cifs  # the candidates are kept as they are
    assert {r["name"]: float(r["score"]) for r in summary(out)} == pytest.approx(after, rel=1e-5)
    record = manifest(out)
    assert record["settings"]["scorer_options"] == {"seed": 2}
    assert record["rescored"][0]["scorer"] == "random" and record["rescored"][0]["scorer_options"] == {"seed": 1}

    # the same settings again: resumed, nothing rescored, the new scores stay
    again = invoke(plugin_manager, [*base, "--scorer", "random", "--scorer-opt", "seed=2", "--json"])
    data = json.loads(again.output)
    assert (data["generated"], data["resumed"], data["rescored"]) == (0, 3, 0)
    assert {r["name"]: r["score"] for r in data["rows"]} == after
    assert len(manifest(out)["rescored"]) == 1


def test_another_scorer_name_and_dropping_the_scorer(plugin_manager, base, tmp_path):
    out = tmp_path / "out"
    assert invoke(plugin_manager, [*base, "--scorer", "random"]).exit_code == 0
    unscored = invoke(plugin_manager, base)
    assert unscored.exit_code == 1 and "scorer='random'" in unscored.output and "scorer=None" in unscored.output
    dropped = invoke(plugin_manager, [*base, "--rescore", "--json"])
    assert dropped.exit_code == 0, dropped.output
    assert all(row["score"] is None for row in json.loads(dropped.output)["rows"])
    assert manifest(out)["settings"]["scorer"] is None and all(r["score"] == "" for r in summary(out))


def test_rescore_does_not_excuse_other_settings(plugin_manager, base):
    assert invoke(plugin_manager, [*base, "--scorer", "random"]).exit_code == 0
    other = [a if a != "4" else "5" for a in base]  # another seed
    result = invoke(plugin_manager, [*other, "--scorer", "random", "--scorer-opt", "seed=3", "--rescore"])
    assert result.exit_code == 1
    assert "seed=4" in result.output and "--rescore changes only the scorer" in result.output
    require = invoke(plugin_manager, [*base, "--scorer", "random", "--require", "bond_length"])
    assert require.exit_code == 1 and "require=[]" in require.output


def test_rescore_needs_a_folder(cf_tiny_model):
    from crystalforge import generate
    from crystalforge.errors import OptionError

    with pytest.raises(OptionError, match="rescore needs a run folder"):
        generate("NaCl", n=1, model=str(cf_tiny_model), rescore=True)


def test_api_rescore_matches_the_cli(cf_tiny_model, plugin_manager, tmp_path):
    from crystalforge import generate
    from crystalforge.errors import ConfigError

    common = dict(n=2, model=str(cf_tiny_model), search_options={"max_new_tokens": 40}, device="cpu",
                  plugin_manager=plugin_manager, out=tmp_path / "api", seed=1)
    first = generate("KBr", spacegroup="Fm-3m", scorer="random", scorer_options={"seed": 5}, **common)
    with pytest.raises(ConfigError, match="--rescore"):
        generate("KBr", spacegroup="Fm-3m", scorer="random", scorer_options={"seed": 6}, **common)
    again = generate("KBr", spacegroup="Fm-3m", scorer="random", scorer_options={"seed": 6}, rescore=True, **common)
    assert again.run.rescored == 2 and len(again) == 0
    old = {row["name"]: row["score"] for row in first.run.rows}
    assert all(row["score"] != old[row["name"]] for row in again.run.rows)


# -- a scorer that declares a unit and gives extras and a changed structure -------------------
@attrs.define
class ShrinkScorer:
    """Scores the volume per atom of the cell shrunk by 1 % (a stand-in for a relaxation)."""

    lower_is_better = True
    unit = "A^3/atom"

    def score(self, cif: str) -> float:
        return self.score_details([cif])[0].value

    def score_details(self, cifs):
        from pymatgen.core import Structure

        results = []
        for cif in cifs:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    structure = Structure.from_str(cif, fmt="cif")
            except Exception:  # noqa: BLE001 - unreadable text scores nan
                results.append(ScoreResult(math.nan))
                continue
            before = structure.volume / len(structure)
            structure.scale_lattice(structure.volume * 0.99)
            after = structure.volume / len(structure)
            results.append(ScoreResult(after, {"volume_before": before, "volume_after": after}, structure))
        return results


class ShrinkPlugin:
    @staticmethod
    @hookimpl
    def register_scorers(register):
        register("shrink", ShrinkScorer)


def test_unit_extras_and_relaxed_structure_reach_every_output(plugin_manager, tmp_path, cf_sample_cifs):
    from pymatgen.core import Structure

    from crystalforge.components import create_scorer
    from crystalforge.generation.runfolder import rescore_rows

    plugin_manager.register(ShrinkPlugin, name="shrink-plugin")
    scorer = create_scorer(plugin_manager, "shrink")
    assert scorer.unit == "A^3/atom"
    # a folder of real structures (the generated ones of a tiny model rarely parse)
    out = tmp_path / "real"
    out.mkdir()
    rows = []
    for i, (name, cif) in enumerate(cf_sample_cifs[:2]):
        (out / f"s_{i}.cif").write_text(cif)
        rows.append({"name": f"s_{i}", "file": f"s_{i}.cif", "error": "", "score": 0.5})
    rows.append({"name": "s_bad", "file": "s_bad.cif", "error": "could not post-process", "score": 0.1})
    (out / "s_bad.cif").write_text("garbage")
    rescore_rows(out, rows, scorer, out / "candidates.rank0.jsonl")
    for row, (_, cif) in zip(rows, cf_sample_cifs[:2]):
        relaxed = Structure.from_file(out / row["relaxed_file"])
        original = Structure.from_str(cif, fmt="cif")
        assert row["relaxed_file"] == f"{row['name']}_relaxed.cif"
        assert relaxed.volume == pytest.approx(original.volume * 0.99, rel=1e-4)
        assert row["score"] == pytest.approx(row["score_extras"]["volume_after"])
        assert row["score_extras"]["volume_before"] > row["score_extras"]["volume_after"]
        assert row["score_unit"] == "A^3/atom"
    assert math.isnan(rows[2]["score"]) and rows[2]["relaxed_file"] == ""
    from crystalforge.generation.runfolder import read_rows, write_summary

    write_summary(out / "summary.csv", list(read_rows(out).values()))
    header = next(csv.reader(open(out / "summary.csv")))
    assert header.index("score") < header.index("score_unit") < header.index("volume_before") < header.index("file")
    assert "relaxed_file" in header


def test_run_shows_the_unit_and_writes_relaxed_files(cf_tiny_model, plugin_manager, tmp_path, monkeypatch):
    plugin_manager.register(ShrinkPlugin, name="shrink-plugin")
    out = tmp_path / "run"
    args = ["run", "Na1Cl1", "-s", "Pm-3m", "-n", "2", "--model", str(cf_tiny_model), "--out", str(out), "--device",
            "cpu", "--no-progress", "--scorer", "shrink", *FAST]
    table = invoke(plugin_manager, args)
    assert table.exit_code == 0, table.output
    assert "score (A^3/atom)" in table.output.splitlines()[0]
    assert manifest(out)["score_unit"] == "A^3/atom"
    assert {r["score_unit"] for r in summary(out)} == {"A^3/atom"}
    data = json.loads(invoke(plugin_manager, [*args, "--json"]).output)
    assert data["score_unit"] == "A^3/atom" and all(r["score_unit"] == "A^3/atom" for r in data["rows"])
    for row in data["rows"]:  # a scored candidate has its changed structure beside it, an unscored one none
        assert bool(row["relaxed_file"]) == (row["score"] is not None)
        if row["relaxed_file"]:
            assert (out / row["relaxed_file"]).is_file() and row["score_extras"]["volume_after"] == row["score"]
    other = [str(tmp_path / "r") if a == str(out) else "random" if a == "shrink" else a for a in args]
    random = invoke(plugin_manager, [*other, "--json"])
    data = json.loads(random.output)
    assert data["score_unit"] == "" and data["rows"][0]["score_unit"] == ""


def test_a_tree_search_folder_cannot_be_rescored(cf_tiny_model, plugin_manager, tmp_path):
    args = ["run", "Na1Cl1", "-s", "Pm-3m", "-n", "1", "--search", "puct", "-O", "num_simulations=2",
            "-O", "max_new_tokens=30", "--model", str(cf_tiny_model), "--out", str(tmp_path / "t"), "--device", "cpu",
            "--no-progress", "--scorer", "random"]
    assert invoke(plugin_manager, args).exit_code == 0
    result = invoke(plugin_manager, [*args, "--scorer-opt", "seed=7", "--rescore"])
    assert result.exit_code == 1 and "steered by the old scorer" in result.output
    assert manifest(tmp_path / "t")["settings"]["scorer_options"] == {}


def test_cli_strings_and_python_values_are_one_setting(cf_tiny_model, plugin_manager, tmp_path):
    from crystalforge import generate
    from crystalforge.generation.runfolder import _same_setting

    out = tmp_path / "mixed"
    generate("Na1Cl1", spacegroup="Pm-3m", n=2, model=str(cf_tiny_model), device="cpu", plugin_manager=plugin_manager,
             out=out, scorer="random", scorer_options={"seed": 5}, search_options={"max_new_tokens": 40})
    assert manifest(out)["settings"]["search_options"] == {"max_new_tokens": 40}
    result = invoke(plugin_manager, ["run", "Na1Cl1", "-s", "Pm-3m", "-n", "2", "--model", str(cf_tiny_model),
                                     "--out", str(out), "--device", "cpu", "--scorer", "random", "--scorer-opt",
                                     "seed=5", "-O", "max_new_tokens=40", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["resumed"] == 2
    # older manifests recorded the CLI's strings
    assert _same_setting({"top_k": "5", "relax": "true", "tolerance": "0.5"}, {"top_k": 5, "relax": True,
                                                                            "tolerance": 0.5})
    assert not _same_setting({"seed": "1"}, {"seed": 2}) and not _same_setting(None, "") and not _same_setting(
        {"a": 1}, {"a": 1, "b": 2})
