"""The Python API ``crystalforge.generate``, candidates, exporters and prompt specs."""

from __future__ import annotations

import io
import math
import tarfile

import pytest

import crystalforge as cf
from crystalforge.cif.postprocess import postprocess_cif
from crystalforge.cif.preprocess import preprocess_cif
from crystalforge.errors import CIFError, CompositionError, SpaceGroupError, UnknownComponentError
from crystalforge.generation.candidate import Candidate
from crystalforge.generation.prompts import candidate_stem, make_specs, read_prompts
from crystalforge.generation.ranking import rank_candidates

FAST = {"max_new_tokens": 60}


def test_generate_returns_candidates_and_never_raises_on_garbage(cf_tiny_model, plugin_manager):
    candidates = cf.generate(["CaTiO3", "NaCl"], spacegroup="Pm-3m", n=3, model=str(cf_tiny_model),
                             search_options=FAST, plugin_manager=plugin_manager, seed=4)
    assert [c.name for c in candidates] == [candidate_stem(f, "Pm-3m", i)
                                            for f in ("Ca1Ti1O3", "Na1Cl1") for i in range(3)]
    for c in candidates:
        assert isinstance(c, cf.Candidate)
        assert c.raw.startswith(cf.make_prompt(c.composition, "Pm-3m"))
        assert c.report is not None and not c.is_valid  # random weights: garbage, recorded not raised
        assert c.structure is None and c.structure_error
        assert 0 < c.n_tokens <= 60
        row = c.to_row()
        assert row["spacegroup_asked"] == "Pm-3m" and row["is_valid"] is False
        assert "formula_consistency" in row and "bond_length" in row
    again = cf.generate(["CaTiO3", "NaCl"], spacegroup="Pm-3m", n=3, model=str(cf_tiny_model), batch_size=2,
                        search_options=FAST, plugin_manager=plugin_manager, seed=4)
    assert [c.raw for c in again] == [c.raw for c in candidates]  # batch size does not change output


def test_generate_with_scorer_and_loaded_model(cf_tiny_model, plugin_manager):
    model = cf.load_model(cf_tiny_model)
    # cells Fm-3m can hold (Z=4): a reduced NaCl would be shared among Z=4 and 8 (tests/test_reach.py)
    candidates = cf.generate(["Na4Cl4", "K4Br4"], spacegroup="Fm-3m", n=2, model=model, scorer="random",
                             search="greedy", search_options=FAST, plugin_manager=plugin_manager, validate=False)
    assert len(candidates) == 4 and all(c.report is None for c in candidates)
    for c in candidates:  # scored when post-processing worked, nan (never scored) otherwise
        assert isinstance(c.score, float) and math.isnan(c.score) == (c.cif is None)
    assert any(c.cif is not None for c in candidates)
    assert candidates[0].raw == candidates[1].raw  # greedy


def test_bad_inputs_fail_before_loading_the_model(tmp_path, plugin_manager):
    missing_model = str(tmp_path / "no-such-ckpt.pt")
    with pytest.raises(CompositionError):
        cf.generate("CaXx3", model=missing_model, plugin_manager=plugin_manager)
    with pytest.raises(SpaceGroupError):
        cf.generate("CaTiO3", spacegroup="Pq-9", model=missing_model, plugin_manager=plugin_manager)
    with pytest.raises(UnknownComponentError, match="Did you mean 'top-k'"):
        cf.generate("CaTiO3", search="top-kk", model=missing_model, plugin_manager=plugin_manager)


def _real_candidate(raw: str) -> Candidate:
    text = preprocess_cif(raw)
    cif = postprocess_cif(text)
    return Candidate(composition="X", formula="X", spacegroup=None, index=0, raw=text, cif=cif,
                     report=cf.validate(cif), score=0.5)


def test_candidate_exporters_on_a_real_structure(perov_raw):
    candidate = _real_candidate(perov_raw[0][1])
    structure = candidate.structure
    assert structure is not None and candidate.structure_error is None
    poscar = candidate.to_poscar()
    assert poscar.splitlines()[0] == candidate.name and str(len(structure)) in poscar
    xyz = candidate.to_extxyz()
    assert xyz.splitlines()[0].strip() == str(len(structure)) and "Lattice=" in xyz
    atoms = candidate.to_ase()
    assert len(atoms) == len(structure) and all(atoms.pbc)
    assert atoms.info["score"] == 0.5
    assert candidate.spacegroup_found and candidate.volume and candidate.volume > 0


def test_exporters_raise_cif_error_without_structure():
    broken = Candidate(composition="NaCl", formula="Na1Cl1", spacegroup=None, index=2, raw="data_Na1Cl1\nxx",
                       postprocess_error="no space group")
    assert broken.structure is None and "no space group" in broken.structure_error
    assert broken.text == broken.raw and broken.spacegroup_found is None and broken.volume is None
    with pytest.raises(CIFError, match="Na1Cl1_any_2"):
        broken.to_poscar()


def test_rank_candidates_valid_first_then_score(perov_raw):
    good = _real_candidate(perov_raw[1][1])
    assert good.is_valid, good.report.summary()
    bad = [Candidate(composition="A", formula="A", spacegroup=None, index=i, raw="", score=s)
           for i, s in enumerate([0.9, float("nan"), 0.1])]
    ranked = rank_candidates([*bad, good], lower_is_better=True)
    assert ranked[0] is good and [c.index for c in ranked[1:]] == [2, 0, 1]
    assert [c.index for c in rank_candidates(bad, lower_is_better=False)] == [0, 2, 1]


def test_specs_accept_reduced_and_cell_formulas_and_drop_duplicates():
    # Ca8Ti8O24 (Z=8) fits Pm-3m's sites; Ca2Ti2O6 cannot (1a and 1b hold one atom each)
    specs = make_specs(["CaTiO3", "Ca8Ti8O24", "CaTiO3"], spacegroup=221)
    assert [s.key for s in specs] == ["Ca1Ti1O3_Pm-3m", "Ca8Ti8O24_Pm-3m"]
    assert make_specs("C", "P6/mmm")[0].key == "C1_P6_mmm"


def test_read_prompts_text_folder_and_tar(tmp_path):
    listing = tmp_path / "prompts.txt"
    listing.write_text("# screening\nCaTiO3 Pm-3m\n\nNaCl   # any group\nK4Br4 225\n")
    specs = read_prompts(listing)
    assert [(s.formula, s.spacegroup) for s in specs] == [("Ca1Ti1O3", "Pm-3m"), ("Na1Cl1", None),
                                                          ("K4Br4", "Fm-3m")]
    bad = tmp_path / "bad.txt"
    bad.write_text("CaTiO3\nNaQq\n")
    with pytest.raises(CompositionError, match="bad.txt line 2"):
        read_prompts(bad)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "mp-1.txt").write_text(cf.make_prompt("SrTiO3", "Pm-3m"))
    (folder / "mp-2.txt").write_text("data_Na2Cl2\n")
    specs = read_prompts(folder)
    assert [(s.key, s.spacegroup) for s in specs] == [("mp-1", "Pm-3m"), ("mp-2", None)]
    assert specs[0].prompt == cf.make_prompt("SrTiO3", "Pm-3m")
    archive = tmp_path / "prompts.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"data_K1Br1\n"
        info = tarfile.TarInfo("prompts/kbr.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert [s.key for s in read_prompts(archive)] == ["kbr"]


class EchoSearch:
    """A strategy without per-index seeding (like a tree search): returns fixed texts."""

    def __init__(self, count: int = 10):
        self.count = count
        self.calls: list[tuple[int, int]] = []

    def generate(self, model, tokenizer, prompts, n, *, generator, device="cpu", batch_size=32, scorer=None,
                 validate=None, progress=True):
        from crystalforge.search.base import Sample

        self.calls.append((len(prompts), n))
        assert validate is not None and validate(prompts[0]).is_valid is False
        return [[Sample(text=p + "_cell_length_a 4.0\n\n", n_tokens=5, extra={"reward": k})
                 for k in range(min(n, self.count))] for p in prompts]


def test_strategies_without_indices_get_one_prompt_at_a_time(cf_tiny_model, plugin_manager):
    from crystalforge import hookimpl

    echo = EchoSearch(count=2)

    class Plugin:
        @staticmethod
        @hookimpl
        def register_search_strategies(register):
            register("echo", lambda: echo)

    plugin_manager.register(Plugin, name="echo-plugin")
    candidates = cf.generate(["NaCl", "KBr"], n=3, search="echo", model=str(cf_tiny_model),
                             plugin_manager=plugin_manager)
    assert echo.calls == [(1, 3), (1, 3)]
    assert [(c.formula, c.index) for c in candidates] == [("Na1Cl1", 0), ("Na1Cl1", 1), ("K1Br1", 0), ("K1Br1", 1)]
    assert candidates[1].extra == {"reward": 1}
    assert candidates[0].postprocess_error  # no space group line: recorded, not raised


def test_validation_workers_give_the_same_reports(cf_tiny_model, plugin_manager, perov_raw):
    from crystalforge.generation.pipeline import make_pipeline

    pipeline = make_pipeline(model=str(cf_tiny_model), plugin_manager=plugin_manager, workers=2)
    made = [_real_candidate(raw) for _, raw in perov_raw[:3]]
    for c in made:
        c.report = None
    pipeline._validate_all(made)
    assert [c.report.to_dict() for c in made] == [cf.validate(c.cif, plugin_manager=plugin_manager).to_dict()
                                                  for c in made]
    assert any(c.is_valid for c in made)
