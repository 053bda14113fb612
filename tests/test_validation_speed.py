"""The fast paths of validation give the answers of the slow, original ones.

- :class:`~crystalforge.validation.neighbours.NeighbourFinder` gives exactly the neighbour
  set of pymatgen's ``CrystalNN().get_nn_info`` (the original CrystaLLM's bond check runs
  it) on real benchmark structures, a generated candidate, an oxidation-decorated
  structure and a sparse cell whose first small tessellation is not enough;
- the structure parsed from the shared ``CifParser`` equals ``Structure.from_str``;
- oxidation-state-decorated CIFs go through ``preprocess_cif`` and the bond check.
"""

from __future__ import annotations

import gzip
import json
import warnings

import numpy as np

from conftest import CARBON_CSV, PEROV_CSV, TEST_DATA, read_csv_slice


def _structures(path, start, count):
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(cif, fmt="cif") for _, cif in read_csv_slice(path, start, count)]


def _crystalnn(structure, index):
    from pymatgen.analysis.local_env import CrystalNN

    return sorted((n["site_index"], tuple(np.round(n["site"].frac_coords, 6)))
                  for n in CrystalNN().get_nn_info(structure, index))


def _ours(finder, index):
    return sorted((j, tuple(np.round(coords, 6))) for j, coords in finder.neighbours(index))


def _assert_same_neighbours(structure, expect_fallback=False, monkeypatch=None):
    from crystalforge.validation import neighbours

    calls = []
    if monkeypatch is not None:
        original = neighbours._crystalnn_fallback
        monkeypatch.setattr(neighbours, "_crystalnn_fallback",
                            lambda s, i: calls.append(i) or original(s, i))
    finder = neighbours.NeighbourFinder(structure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index in range(len(structure)):
            assert _ours(finder, index) == _crystalnn(structure, index), (structure.formula, index)
    if monkeypatch is not None:
        assert bool(calls) == expect_fallback, calls


def test_neighbours_equal_crystalnn_on_real_structures(monkeypatch):
    # real Perov-5 and Carbon-24 cells (ionic and covalent, 5 to 24 sites), no fallback used
    for structure in _structures(PEROV_CSV, 0, 4) + _structures(CARBON_CSV, 0, 3):
        _assert_same_neighbours(structure, expect_fallback=False, monkeypatch=monkeypatch)


def test_neighbours_equal_crystalnn_on_generated_candidates():
    from pymatgen.core import Structure

    with gzip.open(TEST_DATA / "crystallm_golden_validity_generated.jsonl.gz", "rt") as handle:
        records = [r for r in map(json.loads, handle) if "_meta" not in r]
    # a few candidates the model wrote, valid ones and ones CrystaLLM calls invalid
    chosen = [r for r in records if r["bond_score"] is not None][:2]
    chosen += [r for r in records if r["bond_score"] is not None and r["bond_score"] < 1][:2]
    assert len(chosen) == 4
    for record in chosen:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(record["cif"], fmt="cif")
        _assert_same_neighbours(structure)


def test_sparse_cell_widens_the_tessellation(monkeypatch):
    from pymatgen.core import Lattice, Structure

    from crystalforge.validation import neighbours

    # two far-apart atoms in a long cell: the first small sphere cannot bound the cell
    structure = Structure(Lattice.orthorhombic(2.5, 3.0, 9.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.3]])
    sizes = []
    original = neighbours.NeighbourFinder._cell

    def spy(self, index):
        cell = original(self, index)
        sizes.append(None if cell is None else len(cell[0]))
        return cell

    monkeypatch.setattr(neighbours.NeighbourFinder, "_cell", spy)
    _assert_same_neighbours(structure)
    assert sizes and all(size is not None for size in sizes)


def test_oxidation_decorated_sites_use_crystalnn_itself(monkeypatch):
    structure = _structures(PEROV_CSV, 0, 1)[0]
    structure.add_oxidation_state_by_guess()
    _assert_same_neighbours(structure, expect_fallback=True, monkeypatch=monkeypatch)


def test_shared_parser_gives_the_structure_from_str():
    from pymatgen.core import Structure

    from crystalforge.cif.postprocess import postprocess_cif
    from crystalforge.cif.preprocess import preprocess_cif
    from crystalforge.validation.report import ValidationContext

    for _, raw in read_csv_slice(PEROV_CSV, 10, 2) + read_csv_slice(CARBON_CSV, 10, 2):
        cif = postprocess_cif(preprocess_cif(raw))
        context = ValidationContext(cif)
        context.cif_parser().as_dict()  # the field checks read it first, as in a report
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = Structure.from_str(cif, fmt="cif")
        assert context.structure == expected
        assert np.array_equal(context.structure.frac_coords, expected.frac_coords)
        assert np.array_equal(context.structure.lattice.matrix, expected.lattice.matrix)


def test_unreadable_text_fails_the_checks_with_a_reason():
    from crystalforge.validation.report import ValidationContext

    for text in ("data_x\n_cell_length_a nan\n", "", "not a cif at all"):
        context = ValidationContext(text)
        assert context.structure is None and context.parse_error


def _oxidised_cif(tmp_path):
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    structure = _structures(PEROV_CSV, 0, 1)[0]
    structure.add_oxidation_state_by_guess()
    assert all(getattr(s, "oxi_state", None) is not None for s in structure.composition)
    path = tmp_path / "oxidised.cif"
    path.write_text(str(CifWriter(structure)))
    text = path.read_text()
    assert "_atom_type_oxidation_number" in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return text, Structure.from_str(text, fmt="cif")


def test_preprocess_accepts_oxidation_states(tmp_path):
    from crystalforge.cif.extract import extract_formula
    from crystalforge.cif.preprocess import preprocess_cif

    text, structure = _oxidised_cif(tmp_path)
    out = preprocess_cif(text)
    assert out.startswith("data_") and out.endswith("\n\n")
    assert "_atom_type_oxidation_number" in out
    elements = {e.symbol for e in structure.composition.element_composition}
    assert all(symbol in extract_formula(out) for symbol in elements)
    # the oxidation numbers CifWriter wrote are in the atom-properties block
    for specie in structure.composition:
        assert f"{specie.oxi_state:.4f}" in out


def test_unknown_species_still_refused():
    from pymatgen.core import DummySpecies, Element, Species

    from crystalforge.cif.preprocess import unknown_species

    assert unknown_species([Element("Ca"), Species("O", -2), Species("Ti", 4)]) == []
    assert unknown_species([Element("Ca"), DummySpecies("X")]) == ["X"]


def test_bond_check_judges_oxidation_decorated_cifs(tmp_path):
    from crystalforge.plugins import make_plugin_manager
    from crystalforge.validation.report import validate

    text, _ = _oxidised_cif(tmp_path)
    report = validate(text, plugin_manager=make_plugin_manager(entry_points=False))
    bond = report.checks["bond_length"]
    assert "unknown element" not in bond.message
    assert bond.score is not None and 0 < bond.score <= 1


# --- validation spread over the CPUs ----------------------------------------------------

def test_auto_workers_uses_every_cpu_for_enough_work(monkeypatch):
    from crystalforge import parallel

    monkeypatch.setattr(parallel, "default_workers", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert parallel.auto_workers(1000) == 8
    assert parallel.auto_workers(12) == 12 // parallel.MIN_ITEMS_PER_WORKER
    assert parallel.auto_workers(3) == 1 and parallel.auto_workers(0) == 1
    assert parallel.auto_workers(1000, 3) == 3 and parallel.auto_workers(2, 5) == 2  # as asked, capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four torchrun ranks on this node share the CPUs
    assert parallel.auto_workers(1000) == 2


class _PidCheck:
    """A validator that says which process ran it."""

    name = "pid"

    def check(self, cif, context):
        import os

        from crystalforge.validation.report import CheckResult

        return CheckResult("pid", True, None, str(os.getpid()), False)


def _pids(count, workers, monkeypatch):
    import os

    from crystalforge import parallel
    from crystalforge.generation.candidate import Candidate
    from crystalforge.generation.pipeline import Pipeline

    monkeypatch.setattr(parallel, "default_workers", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    pipeline = Pipeline(model=None, tokenizer=None, strategy=None, checks=[("pid", _PidCheck(), True)],
                        workers=workers)
    candidates = [Candidate(composition="C", formula="C1", spacegroup=None, index=i, raw=f"data_C{i}\n")
                  for i in range(count)]
    pipeline._validate_all(candidates)
    pids = {int(c.report.checks["pid"].message) for c in candidates}
    return pids, os.getpid()


def test_run_validates_on_all_cpus_by_default_and_small_batches_in_process(monkeypatch):
    pids, own = _pids(3, None, monkeypatch)  # too little work to start a process for
    assert pids == {own}
    pids, own = _pids(16, None, monkeypatch)  # enough for both CPUs
    assert own not in pids and len(pids) == 2
    pids, own = _pids(16, 1, monkeypatch)  # --workers 1: in-process, as asked
    assert pids == {own}
