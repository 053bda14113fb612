"""``crystalforge.generate`` takes what a pymatgen user has: strings, ``Composition``,
``Structure``, element counts, lists mixing them, one space group or one per composition;
bad input fails with the CLI's one-line message. Also ``Candidate``'s repr, the Z column,
the progress bar's running valid count and the ``prompt -o`` / ``run --prompts`` round trip."""

from __future__ import annotations

import csv
import io

import pytest
from click.testing import CliRunner
from pymatgen.core import Composition, Lattice, Structure

import crystalforge as cf
from crystalforge import hookimpl
from crystalforge.cli import cli
from crystalforge.errors import CompositionError, CrystalforgeError, SpaceGroupError
from crystalforge.generation.api import _specs_of_inputs
from crystalforge.generation.inputs import FROM_STRUCTURE, composition_targets

FAST = {"max_new_tokens": 20}


def perovskite(a: float = 3.9) -> Structure:
    """Cubic CaTiO3 (one formula unit, Pm-3m)."""
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(a), ["Ca", "Ti", "O"],
                                     [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]])


def rocksalt_primitive() -> Structure:
    """NaCl's primitive cell: one Na, one Cl; its conventional Fm-3m cell holds four of each."""
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()


def test_every_input_kind_becomes_the_formula_the_cli_would_get():
    doubled = perovskite().copy()
    doubled.make_supercell([2, 1, 1])
    targets = composition_targets(
        ["SrTiO3", Composition("BaZrO3"), perovskite(), doubled, {"Ca": 1, "Ti": 1, "O": 3}, Composition("C8")],
        spacegroup="Pm-3m")
    assert targets == [("SrTiO3", "Pm-3m"), ("BaZrO3", "Pm-3m"), ("CaTiO3", "Pm-3m"), ("Ca2Ti2O6", "Pm-3m"),
                       ("CaTiO3", "Pm-3m"), ("C8", "Pm-3m")]
    # one item that is iterable (Composition, Structure, dict) is still one composition
    assert composition_targets(Composition("SrTiO3")) == [("SrTiO3", None)]
    assert composition_targets({"Sr": 2, "Ti": 2, "O": 6}) == [("Sr2Ti2O6", None)]


def test_a_space_group_per_composition_and_from_the_structure():
    assert composition_targets(["CaTiO3", Composition("SrTiO3")], ["Pm-3m", 221]) == [
        ("CaTiO3", "Pm-3m"), ("SrTiO3", 221)]
    assert composition_targets(["CaTiO3", "C"], ("Pm-3m", None)) == [("CaTiO3", "Pm-3m"), ("C", None)]
    # the structure's own group, and the formula of the cell a CIF of it would hold
    assert composition_targets(perovskite(), FROM_STRUCTURE) == [("CaTiO3", 221)]
    assert composition_targets([rocksalt_primitive()], [FROM_STRUCTURE]) == [("Na4Cl4", 225)]
    specs = _specs_of_inputs([perovskite(), "SrTiO3"], [FROM_STRUCTURE, "P4mm"], None)
    assert [(s.formula, s.spacegroup) for s in specs] == [("Ca1Ti1O3", "Pm-3m"), ("Sr1Ti1O3", "P4mm")]


@pytest.mark.parametrize("composition, spacegroup, error, fragment", [
    (["CaTiO3", "SrTiO3"], ["Pm-3m"], SpaceGroupError, "1 value(s) for 2 composition(s)"),
    ("CaTiO3", FROM_STRUCTURE, SpaceGroupError, "composition 1 is 'CaTiO3'"),
    ([perovskite(), 42], None, CompositionError, "composition 2 is 42"),
    ({"Ca": "one"}, None, CompositionError, "expected element symbol -> count"),
    ({}, None, CompositionError, "no composition given"),
])
def test_bad_inputs_name_the_problem(composition, spacegroup, error, fragment):
    with pytest.raises(error) as caught:
        cf.generate(composition, spacegroup=spacegroup, n=1)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("api_input, cli_args", [
    ({"Xq": 2, "O": 3}, ["Xq2O3"]),
    (Composition({"Ca": 0.5, "Ti": 1, "O": 3}), ["Ca0.5TiO3"]),
    ({"Ca": 1, "Ti": 1, "O": 3}, ["CaTiO3", "-s", "Pm-9m"]),
    (Composition("NaCl"), ["NaCl", "-s", "Fm-3m", "--z", "1"]),
])
def test_bad_input_raises_the_cli_message(api_input, cli_args, plugin_manager, tmp_path):
    spacegroup = cli_args[cli_args.index("-s") + 1] if "-s" in cli_args else None
    z = int(cli_args[cli_args.index("--z") + 1]) if "--z" in cli_args else None
    with pytest.raises(CrystalforgeError) as caught:
        cf.generate(api_input, spacegroup=spacegroup, z=z, n=1, plugin_manager=plugin_manager)
    result = CliRunner().invoke(cli, ["run", *cli_args, "-n", "1", "--out", str(tmp_path / "o"), "--no-progress"],
                                obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"Error: {caught.value}"


def test_generate_takes_pymatgen_objects_end_to_end(cf_tiny_model, plugin_manager):
    candidates = cf.generate([Composition("SrTiO3"), perovskite()], spacegroup=["Pm-3m", FROM_STRUCTURE], n=1,
                             model=str(cf_tiny_model), search_options=FAST, plugin_manager=plugin_manager,
                             device="cpu")
    assert sorted((c.composition, c.formula, c.spacegroup, c.z) for c in candidates) == [
        ("CaTiO3", "Ca1Ti1O3", "Pm-3m", 1), ("SrTiO3", "Sr1Ti1O3", "Pm-3m", 1)]
    for candidate in candidates:
        assert candidate.raw.startswith(f"data_{candidate.formula}\n")


def real_candidate(cif: str, **fields) -> cf.Candidate:
    candidate = cf.Candidate(composition="CdCuN3", formula="Cd1Cu1N3", spacegroup="Pm-3m", index=0, raw=cif,
                             cif=cf.postprocess_cif(cif), **fields)
    candidate.report = cf.validate(candidate.cif)
    return candidate


def test_candidate_repr_is_short_and_says_what_matters(cf_sample_cifs):
    (cif,) = [c for n, c in cf_sample_cifs if "Cd1Cu1N3" in n]
    candidate = real_candidate(cif, score=-1.23456)
    assert candidate.is_valid
    shown = repr(candidate)
    unit = getattr(candidate, "score_unit", None)
    assert shown == "<Candidate CdCuN3 Pm-3m Z=1 valid score=-1.235" + (f" {unit}" if unit else "") + ">"
    unscored = cf.Candidate(composition="Ca2Ti2O6", formula="Ca2Ti2O6", spacegroup=None, index=3,
                            raw="data_Ca2Ti2O6\nnot a cif")
    assert repr(unscored) == "<Candidate Ca2Ti2O6 any-sg Z=2 unchecked>"
    assert "\n" not in shown and len(shown) < 80


class ReplaySearch:
    """A search strategy plugin that replays real CIFs: index i gets ``texts[i % len]``."""

    def __init__(self, texts):
        self.texts = texts

    def generate(self, model, tokenizer, prompts, n, *, generator, device="cpu", batch_size=32, scorer=None,
                 validate=None, progress=True, indices=None):
        from crystalforge.search.base import Sample

        indices = indices or [list(range(n))] * len(prompts)
        return [[Sample(text=self.texts[i % len(self.texts)], n_tokens=1) for i in wanted] for wanted in indices]


def test_progress_bar_counts_every_valid_candidate_so_far(cf_tiny_model, plugin_manager, cf_sample_cifs):
    from tqdm import tqdm

    from crystalforge.generation.pipeline import make_pipeline
    from crystalforge.generation.prompts import make_specs

    good = next(c for n, c in cf_sample_cifs if "Cd1Cu1N3" in n)
    texts = [good, good, "data_Cd1Cu1N3\nnot a cif\n", "data_Cd1Cu1N3\nnot a cif\n"]
    replay = ReplaySearch(texts)

    class Plugin:
        @staticmethod
        @hookimpl
        def register_search_strategies(register):
            register("replay", lambda: replay)

    plugin_manager.register(Plugin, name="replay-plugin")
    pipeline = make_pipeline(model=str(cf_tiny_model), search="replay", plugin_manager=plugin_manager, batch_size=2)

    class RecordingBar(tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            shown.append(kwargs["valid"])
            super().set_postfix(ordered_dict, refresh, **kwargs)

    shown: list[int] = []
    bar = RecordingBar(total=8, file=io.StringIO())
    chunks = list(pipeline.run([(make_specs("CdCuN3")[0], range(8))], progress_bar=bar))
    per_chunk = [sum(c.is_valid for c in chunk) for chunk in chunks]
    assert per_chunk == [2, 0, 2, 0]  # batches of two: the last batch alone would show 0
    assert shown == [2, 2, 4, 4]
    assert "valid=4" in str(bar)


def test_prompt_file_is_accepted_by_run_prompts(cf_tiny_model, plugin_manager, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    obj = {"plugin_manager": plugin_manager}
    made = runner.invoke(cli, ["prompt", "CaTiO3", "-s", "Pm-3m", "-o", "p.txt"], obj=obj)
    assert made.exit_code == 0, made.output
    result = runner.invoke(cli, ["run", "--prompts", "p.txt", "-n", "2", "--model", str(cf_tiny_model),
                                 "--search-opt", "max_new_tokens=20", "--out", "out", "--no-progress"], obj=obj)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # named and asked like the composition the prompt was made from
    assert sorted(r["name"] for r in rows) == ["Ca1Ti1O3_Pm-3m_0", "Ca1Ti1O3_Pm-3m_1"]
    assert {(r["spacegroup_asked"], r["z"]) for r in rows} == {("Pm-3m", "1")}
    assert " Z " in result.output.splitlines()[0]  # the table's Z column
    for row in rows:
        text = (tmp_path / "out" / row["file"]).read_text()
        assert "_symmetry_space_group_name_H-M Pm-3m" in text or row["error"]
    # a hand-edited prompt file with an unknown space group fails with one line
    (tmp_path / "bad.txt").write_text("data_Ca1Ti1O3\n_symmetry_space_group_name_H-M Pm-9m\n")
    bad = runner.invoke(cli, ["run", "--prompts", "bad.txt", "-n", "1", "--model", str(cf_tiny_model),
                              "--out", "bad", "--no-progress"], obj=obj)
    assert bad.exit_code == 1 and bad.output.startswith("Error: bad.txt: ")
