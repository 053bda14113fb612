"""Tests of the CSP benchmark (match rate, RMSE) on real Perov-5 and Carbon-24 structures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from pymatgen.io.cif import CifWriter

from crystalforge.cif.io import write_cifs
from crystalforge.cif.postprocess import postprocess_cif
from crystalforge.cif.preprocess import preprocess_cif
from crystalforge.cli import cli
from crystalforge.evaluation.benchmark import (
    load_generated,
    load_references,
    make_prompts,
    reference_prompt,
    run_benchmark,
    split_generated_name,
)
from crystalforge.evaluation.metrics import match_reference, parse_structure, summarize_matches
from crystalforge.evaluation.smact_check import smact_valid
from crystalforge.errors import OptionError

from conftest import CARBON_CSV, PEROV_CSV, read_csv_slice


@pytest.fixture(scope="module")
def references():
    """12 real references that pass the SMACT test (8 Perov-5, 4 Carbon-24)."""
    perov = [(rid, cif) for rid, cif in read_csv_slice(PEROV_CSV, 0, 12)
             if smact_valid(parse_structure(cif).composition)][:8]
    return perov + read_csv_slice(CARBON_CSV, 0, 4)


def _stretched(cif: str, factor: float) -> str:
    """Stretch the a axis by ``factor`` (StructureMatcher normalizes volume, so isotropic scaling would match)."""
    structure = parse_structure(cif)
    structure.apply_strain([factor - 1.0, 0.0, 0.0])
    return str(CifWriter(structure))


def _isotropic(cif: str, factor: float) -> str:
    structure = parse_structure(cif)
    structure.scale_lattice(structure.volume * factor**3)
    return str(CifWriter(structure))


def _displaced(cif: str, amount: float, seed: int = 0) -> str:
    structure = parse_structure(cif)
    rng = np.random.default_rng(seed)
    for index in range(len(structure)):
        structure.translate_sites([index], rng.normal(0, amount, 3), frac_coords=False, to_unit_cell=True)
    return str(CifWriter(structure))


def test_self_match_gives_rate_one_and_rmse_zero(tmp_path, references):
    write_cifs(tmp_path / "refs", references)
    result = run_benchmark(tmp_path / "refs", generated=tmp_path / "refs", n=1, progress=False)
    metrics = result.metrics
    assert metrics["n_references"] == len(references)
    assert metrics["match_rate"] == metrics["match_rate_n1"] == 1.0
    assert metrics["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["validity_rate"] == 1.0


def test_perturbed_copies_score_lower(tmp_path, references):
    write_cifs(tmp_path / "refs", references)
    scaled = [(rid, _stretched(cif, 2.0)) for rid, cif in references]
    # isotropic scaling still matches: the matcher normalizes volume (CDVAE's convention)
    write_cifs(tmp_path / "iso", [(rid, _isotropic(cif, 1.5)) for rid, cif in references[:3]])
    assert run_benchmark(tmp_path / "refs", generated=tmp_path / "iso", n=1, limit=None,
                         progress=False).metrics["matched"] == 3
    write_cifs(tmp_path / "scaled", scaled)
    # a few layered carbon cells still match after the stretch (another lattice choice fits)
    assert run_benchmark(tmp_path / "refs", generated=tmp_path / "scaled", n=1, progress=False).metrics["match_rate"] < 0.3
    shaken = [(rid, _displaced(cif, 0.08)) for rid, cif in references]
    write_cifs(tmp_path / "shaken", shaken)
    metrics = run_benchmark(tmp_path / "refs", generated=tmp_path / "shaken", n=1, progress=False).metrics
    assert metrics["match_rate"] > 0.5
    assert metrics["rmse"] > 0.005


def test_n1_uses_first_candidate_full_n_any(references):
    rid, cif = references[0]
    bad = _stretched(cif, 2.0)
    outcome = match_reference(rid, cif, [bad, _displaced(cif, 0.05), cif])
    assert not outcome.matched_first and outcome.rms_first is None
    assert outcome.matched and outcome.best_index == 2 and outcome.rms_best == pytest.approx(0, abs=1e-6)
    summary = summarize_matches([outcome])
    assert summary["match_rate_n1"] == 0.0 and summary["match_rate"] == 1.0 and summary["n"] == 3


def test_ineligible_candidate_never_matches(references):
    rid, cif = references[0]
    structure = parse_structure(cif)
    structure.translate_sites([1], structure[0].frac_coords - structure[1].frac_coords + 0.005)
    outcome = match_reference(rid, cif, [str(CifWriter(structure)), "not a cif"])
    assert outcome.n_eligible == 0 and not outcome.matched and outcome.n_valid == 0


def test_unreadable_reference_is_unmatched():
    outcome = match_reference("x", "", ["also nothing"])
    assert outcome.error.startswith("reference") and not outcome.matched


def test_layouts_of_generated_cifs(tmp_path, references):
    assert split_generated_name("mp-1/003") == "mp-1"
    assert split_generated_name("mp-1__3") == "mp-1"
    assert split_generated_name("mp-1") == "mp-1"
    rid, cif = references[0]
    write_cifs(tmp_path / "g", [(f"{rid}/000", cif), (f"{rid}/001", "x"), (f"{references[1][0]}__0", cif)])
    loaded = load_generated(tmp_path / "g")
    assert len(loaded[rid]) == 2 and loaded[rid][0] == cif and len(loaded[references[1][0]]) == 1


def test_limit_and_seed_pick_a_reproducible_subset(tmp_path, references):
    write_cifs(tmp_path / "refs.tar.gz", references)
    first = load_references(tmp_path / "refs.tar.gz", limit=5, seed=3)
    again = load_references(tmp_path / "refs.tar.gz", limit=5, seed=3)
    other = load_references(tmp_path / "refs.tar.gz", limit=5, seed=4)
    assert first == again and len(first) == 5 and first != other


def test_reference_prompt_composition_and_space_group(references):
    prompt = reference_prompt(*references[0])
    assert prompt.error == "" and prompt.space_group
    assert prompt.prompt.startswith(f"data_{prompt.composition}\n")
    assert prompt.prompt.rstrip("\n").endswith(prompt.space_group)
    bare = reference_prompt(*references[0], with_space_group=False)
    assert bare.space_group is None and bare.prompt == f"data_{bare.composition}\n"


def test_benchmark_reproducible_from_saved_output(tmp_path, references):
    write_cifs(tmp_path / "refs", references[:4])
    shaken = [(f"{rid}/000", _displaced(cif, 0.05, seed=1)) for rid, cif in references[:4]]
    write_cifs(tmp_path / "gen", shaken)
    out = tmp_path / "out"
    first = run_benchmark(tmp_path / "refs", generated=tmp_path / "gen", n=1, out=out, progress=False)
    saved = json.loads((out / "report.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(first.metrics))
    again = run_benchmark(out / "references.tar.gz", generated=tmp_path / "gen", n=1, progress=False)
    assert again.metrics == first.metrics
    assert (out / "matches.csv").read_text().count("\n") == 5


def test_cli_benchmark_generated_json_and_table(tmp_path, references, plugin_manager):
    write_cifs(tmp_path / "refs", references[:3])
    runner = CliRunner()
    result = runner.invoke(cli, ["benchmark", str(tmp_path / "refs"), "--generated", str(tmp_path / "refs"),
                                 "-n", "1", "--json"], obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["match_rate"] == 1.0
    table = runner.invoke(cli, ["benchmark", str(tmp_path / "refs"), "--generated", str(tmp_path / "refs"),
                                "--quiet"], obj={"plugin_manager": plugin_manager})
    assert table.exit_code == 0 and "match rate" in table.output
    assert "n=1 " in table.output  # one saved candidate each: the full n is 1, not the default 20


def test_cli_benchmark_bad_input_one_line(tmp_path, references, plugin_manager):
    write_cifs(tmp_path / "refs", references[:2])
    write_cifs(tmp_path / "other", [("unrelated", references[0][1])])
    cases = [
        (["benchmark", str(tmp_path / "missing.csv")], "No such file or folder"),
        (["benchmark", str(tmp_path / "refs"), "--generated", str(tmp_path / "other")], "no generated CIF is named"),
        (["benchmark", str(tmp_path / "refs"), "-n", "0"], "-n must be at least 1"),
        (["benchmark", str(tmp_path / "refs"), "--limit", "0", "--generated", str(tmp_path / "refs")], "--limit"),
        (["benchmark", str(tmp_path / "refs"), "--search", "top-kk"], "Did you mean 'top-k'"),
        (["benchmark", str(tmp_path / "refs"), "--search-opt", "nonsense"], "key=value"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, args, obj={"plugin_manager": plugin_manager})
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_canonical_references_are_read_as_whole_structures(tmp_path, references):
    """A test.tar.gz of `data prepare` holds canonical CIFs (one site per orbit, operators
    collapsed to x,y,z): read as they are they are the asymmetric unit, which gave wrong
    prompts (Y1Si1O1 P4/mmm for cubic YSiO3) and wrong references to match against."""
    canonical = [(rid, preprocess_cif(cif)) for rid, cif in references]
    collapsed = [rid for (rid, cif), (_, text) in zip(references, canonical)
                 if len(parse_structure(text)) < len(parse_structure(postprocess_cif(text)))]
    assert len(collapsed) >= 4  # most real references have an orbit of more than one site
    write_cifs(tmp_path / "canonical.tar.gz", canonical)
    write_cifs(tmp_path / "raw", references)  # the real structures as the candidates
    metrics = run_benchmark(tmp_path / "canonical.tar.gz", generated=tmp_path / "raw", n=1, progress=False).metrics
    assert metrics["match_rate"] == 1.0 and metrics["rmse"] < 0.01  # symprec 0.1 idealizes positions a little
    # raw generations (canonical form, not post-processed) are candidates of the same structure
    again = run_benchmark(tmp_path / "raw", generated=tmp_path / "canonical.tar.gz", n=1, progress=False).metrics
    assert again["match_rate"] == 1.0
    by_id = dict(references)
    for rid, text in canonical:
        from_canonical, from_raw = reference_prompt(rid, text), reference_prompt(rid, by_id[rid])
        assert (from_canonical.composition, from_canonical.space_group) == \
               (from_raw.composition, from_raw.space_group), rid


def test_csp_convention_is_the_default(tmp_path, references):
    prompts = make_prompts(references[:3], progress=False)
    assert all(p.space_group is None and p.prompt == f"data_{p.composition}\n" for p in prompts)
    assert run_benchmark.__kwdefaults__["with_space_group"] is False
    # the reference's own cell instead of the canonical (conventional) one
    carbon = [(rid, cif) for rid, cif in references if "C" == parse_structure(cif).composition.reduced_formula]
    cells = make_prompts(carbon, formula="cell", progress=False)
    assert [p.composition for p in cells] == [parse_structure(cif).composition.formula.replace(" ", "")
                                              for _, cif in carbon]
    with pytest.raises(OptionError, match="unknown prompt formula"):
        run_benchmark(tmp_path, formula="primitive", progress=False)


@pytest.mark.slow
def test_benchmark_generates_with_a_tiny_model_and_reproduces(tmp_path, references, cf_tiny_model, plugin_manager):
    """End to end: prompts -> crystalforge.generate -> saved CIFs -> same numbers from the saved CIFs."""
    write_cifs(tmp_path / "refs", references[:2])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["benchmark", str(tmp_path / "refs"), "--model", str(cf_tiny_model), "-n", "2",
                                      "--search-opt", "max_new_tokens=40", "--out", str(out), "--json"],
                                obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["metrics"]["n_candidates"] == 4 and report["settings"]["search"] == "top-k"
    assert len(list((out / "generated").rglob("*.cif"))) == 4
    assert (out / "prompts.csv").read_text().count("data_") == 2
    again = run_benchmark(out / "references.tar.gz", generated=out / "generated", n=2, progress=False)
    assert again.metrics == report["metrics"]
