"""``--unique`` groups real equivalent structures; a scorer's changed (relaxed) structure is
written beside the generated one. Generation is replayed from real structures by a search
strategy plugin, so the grouping sees crystals, not a tiny model's noise."""

from __future__ import annotations

import csv
import json
from typing import ClassVar

import attrs
import pytest
from click.testing import CliRunner

from crystalforge import hookimpl
from crystalforge.cli import cli
from crystalforge.contracts import Sample

from test_resume_scorer import ShrinkPlugin


@attrs.define
class ReplayStrategy:
    """Returns ``texts[index]`` for every prompt: a search strategy whose output is known."""

    texts: ClassVar[list[str]] = []

    def generate(self, model, tokenizer, prompts, n, *, generator, device="cpu", batch_size=32, scorer=None,
                 validate=None, progress=True, indices=None):
        indices = indices or [range(n)] * len(prompts)
        return [[Sample(self.texts[i], n_tokens=1) for i in wanted] for wanted in indices]


class ReplayPlugin:
    @staticmethod
    @hookimpl
    def register_search_strategies(register):
        register("replay", ReplayStrategy)


def _variant(cif: str, shift=(0.13, 0.27, 0.05)) -> str:
    """Return the structure of ``cif`` with its sites in reverse order and its origin shifted."""
    from pymatgen.core import Structure

    from crystalforge.generation.export import to_cif

    structure = Structure.from_str(cif, fmt="cif")
    moved = Structure.from_sites([structure[i] for i in reversed(range(len(structure)))])
    moved.translate_sites(list(range(len(moved))), shift)
    return to_cif(moved)


@pytest.fixture
def replayed(cf_sample_cifs_postprocessed, plugin_manager, monkeypatch):
    """Five texts: CdCuN, carbon A, CdCuN moved, carbon B (another carbon), carbon A moved."""
    cifs = dict(cf_sample_cifs_postprocessed)
    cdcun, carbon_a, carbon_b = (cifs["perov5-18517-Cd1Cu1N3"], cifs["carbon24-C-148264-7891-51-C16"],
                                 cifs["carbon24-C-170366-7168-49-C12"])
    texts = [cdcun, carbon_a, _variant(cdcun), carbon_b, _variant(carbon_a, (0.5, 0.1, 0.3))]
    assert len(set(texts)) == 5
    monkeypatch.setattr(ReplayStrategy, "texts", texts)
    plugin_manager.register(ReplayPlugin, name="replay-plugin")
    return texts


def _check_groups(group_of: dict[int, int], rank_of: dict[int, int]) -> None:
    assert group_of[0] == group_of[2]  # same structure, other site order and origin
    assert group_of[1] == group_of[4]
    assert group_of[1] != group_of[3]  # another carbon polymorph
    assert len({group_of[0], group_of[1], group_of[3]}) == 3
    # groups count up from the best-ranked candidate; its group's representative is its best member
    firsts = sorted((min(rank_of[i] for i in group_of if group_of[i] == g), g) for g in set(group_of.values()))
    assert [g for _, g in firsts] == [1, 2, 3]


def test_run_unique_groups_real_structures(replayed, cf_tiny_model, plugin_manager, tmp_path):
    out = tmp_path / "out"
    args = ["run", "C", "-n", "5", "--search", "replay", "--model", str(cf_tiny_model), "--out", str(out),
            "--device", "cpu", "--no-progress", "--unique"]
    table = CliRunner().invoke(cli, args, obj={"plugin_manager": plugin_manager})
    assert table.exit_code == 0, table.output
    assert "5 candidates in 3 groups" in table.output and "group" in table.output.splitlines()[0]
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    index = {row["name"]: int(row["index"]) for row in rows}
    _check_groups({index[r["name"]]: int(r["group"]) for r in rows}, {index[r["name"]]: int(r["rank"]) for r in rows})

    data = json.loads(CliRunner().invoke(cli, [*args, "--json"], obj={"plugin_manager": plugin_manager}).output)
    assert data["generated"] == 0 and [g["group"] for g in data["groups"]] == [1, 2, 3]
    assert sorted(g["size"] for g in data["groups"]) == [1, 2, 2]
    for group in data["groups"]:
        members = [r for r in data["rows"] if r["group"] == group["group"]]
        assert group["representative"] == min(members, key=lambda r: r["rank"])["name"]
        assert group["members"] == [r["name"] for r in sorted(members, key=lambda r: r["rank"])]
    without = CliRunner().invoke(cli, args[:-1], obj={"plugin_manager": plugin_manager})
    assert "group" not in next(csv.reader(open(out / "summary.csv"))) and " groups " not in without.output


def test_api_unique(replayed, cf_tiny_model, plugin_manager):
    from crystalforge import generate

    candidates = generate("C", n=5, search="replay", model=str(cf_tiny_model), device="cpu",
                          plugin_manager=plugin_manager, unique=True)
    _check_groups({c.index: c.group for c in candidates}, {c.index: rank for rank, c in enumerate(candidates, 1)})
    plain = generate("C", n=1, search="replay", model=str(cf_tiny_model), device="cpu", plugin_manager=plugin_manager)
    assert plain[0].group is None and "group" not in plain[0].to_row()


def test_relaxed_structure_is_written_beside_the_generated_one(replayed, cf_tiny_model, plugin_manager, tmp_path):
    from pymatgen.core import Structure

    plugin_manager.register(ShrinkPlugin, name="shrink-plugin")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "C", "-n", "2", "--search", "replay", "--model", str(cf_tiny_model),
                                      "--out", str(out), "--device", "cpu", "--scorer", "shrink", "--json"],
                                obj={"plugin_manager": plugin_manager})
    data = json.loads(result.output)
    for row in data["rows"]:
        generated = Structure.from_file(out / row["file"])
        relaxed = Structure.from_file(out / row["relaxed_file"])
        assert row["relaxed_file"] == row["file"].replace(".cif", "_relaxed.cif")
        assert relaxed.volume == pytest.approx(generated.volume * 0.99, rel=1e-3)
        assert row["score_extras"]["volume_after"] == pytest.approx(relaxed.volume / len(relaxed), rel=1e-3)
        assert row["score_unit"] == "A^3/atom"
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"volume_before", "volume_after", "relaxed_file"} <= set(rows[0])
    assert all(float(r["volume_before"]) > float(r["volume_after"]) == pytest.approx(float(r["score"])) for r in rows)


@pytest.mark.slow
def test_chgnet_relax_writes_the_relaxed_cell_and_both_energies(replayed, cf_tiny_model, plugin_manager, tmp_path,
                                                                monkeypatch):
    pytest.importorskip("chgnet")
    import crystalforge_chgnet
    from pymatgen.core import Structure

    monkeypatch.setattr(ReplayStrategy, "texts", replayed[:1])  # one 5-atom cell
    plugin_manager.register(crystalforge_chgnet, name="chgnet")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "C", "-n", "1", "--search", "replay", "--model", str(cf_tiny_model),
                                      "--out", str(out), "--device", "cpu", "--no-progress", "--scorer", "chgnet",
                                      "--scorer-opt", "relax=true", "--scorer-opt", "relax_steps=5"],
                                obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 0, result.output
    assert "score (eV/atom)" in result.output.splitlines()[0]
    with open(out / "summary.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["score_unit"] == "eV/atom" and float(row["score"]) == pytest.approx(float(row["energy_relaxed"]))
    assert float(row["energy_relaxed"]) <= float(row["energy_unrelaxed"]) + 1e-3 < 0
    relaxed, generated = Structure.from_file(out / row["relaxed_file"]), Structure.from_file(out / row["file"])
    assert relaxed.composition == generated.composition and row["relaxed_file"] == "C1_any_0_relaxed.cif"
    assert json.loads((out / "manifest.json").read_text())["score_unit"] == "eV/atom"


def test_declared_units(plugin_manager):
    from crystalforge.components import create_scorer

    assert create_scorer(plugin_manager, "random").unit == ""  # unitless
    zmq = create_scorer(plugin_manager, "zmq", probe_timeout="0")
    assert zmq.unit == ""  # the protocol carries no unit: unknown unless the user says
    alignn = create_scorer(plugin_manager, "zmq", unit="eV/atom", probe_timeout="0")
    assert alignn.unit == "eV/atom"
    zmq.close()
    alignn.close()
