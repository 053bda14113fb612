"""De novo generation: ``--unconditional`` and ``--system`` (prompt ``data_`` alone), their
masks (chemical system, data_ line grammar, --max-atoms, the formula the model writes),
naming, errors, and the API and CLI agreeing."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

import crystalforge as cf
from crystalforge.cif.composition import parse_system
from crystalforge.cif.extract import extract_data_formula, parse_composition
from crystalforge.cif.preprocess import preprocess_cif
from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.errors import CompositionError, OptionError
from crystalforge.evaluation.metrics import parse_structure
from crystalforge.model.gpt import GPT, GPTConfig
from crystalforge.search.decode import make_picker, sample_batch
from crystalforge.search.logits import CIFConstraints, TokenClasses, make_processor
from crystalforge.search.sampling import TopKSampling
from cli_helpers import invoke

TOK = default_tokenizer()
CLASSES = TokenClasses.from_tokenizer(TOK)
ELEMENT_IDS = set(CLASSES.elements)
FAST = ["-O", "max_new_tokens=60"]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(3)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256)).eval()


def element_symbols(text: str) -> set[str]:
    """Element tokens of a text, as the tokenizer reads it."""
    return {TOK.itos[i] for i in TOK.encode(text) if i in ELEMENT_IDS}


def allowed_after(processor, ids: list[int]) -> set[str]:
    bound = processor.start([ids])
    allowed = torch.isfinite(bound(torch.zeros(1, TOK.vocab_size)))[0]
    return {TOK.itos[i] for i in range(TOK.vocab_size) if allowed[i]}


# -- chemical systems ------------------------------------------------------------------
def test_parse_system_reads_elements_in_order():
    assert parse_system("Li-Fe-P-O") == ("Li", "Fe", "P", "O")
    assert parse_system(" C ") == ("C",)


@pytest.mark.parametrize("text, message", [
    ("Li-Xx", "unknown element 'Xx'"),
    ("Li--O", "empty element between '-'"),
    ("", "empty chemical system"),
    ("li-fe", "did you mean Li?"),
    ("Li-O-Li", "names Li more than once"),
    ("Li-Og", "no token for Og"),
])
def test_bad_system_is_one_line_error(text, message):
    with pytest.raises(CompositionError, match=re.escape(message)) as info:
        parse_system(text)
    assert "\n" not in str(info.value)
    with pytest.raises(CompositionError, match=re.escape(message)):  # the API says the same, before any model
        cf.generate(system=text, model="/nonexistent/ckpt.pt")


@pytest.mark.parametrize("args, message", [
    (["--system", "Li-Xx"], "Error: chemical system 'Li-Xx' names an unknown element 'Xx'"),
    (["--system", "Li--O"], "Error: malformed chemical system 'Li--O'"),
    (["--system", ""], "Error: empty chemical system"),
    (["--unconditional", "CaTiO3"], "takes no composition"),
    (["--unconditional", "--system", "Li-O"], "exclude each other"),
    (["--unconditional", "-s", "Pm-3m"], "leaves the space group and Z to the model"),
    (["CaTiO3", "--max-atoms", "10"], "max_atoms bounds de novo generation only"),
    (["--unconditional", "--max-atoms", "0"], "max_atoms must be a whole number of at least 1"),
    (["--system", "Li-O", "-O", "elements=Na-Cl"], "disagrees with the de novo target"),
])
def test_cli_bad_de_novo_input_is_one_line_exit_1(plugin_manager, tmp_path, args, message):
    result = invoke(plugin_manager, ["run", *args, "--model", str(tmp_path / "missing.pt"),
                                     "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_elements_option_is_checked_when_the_strategy_is_built():
    with pytest.raises(OptionError, match="Option 'elements': chemical system 'Li-Xx'"):
        TopKSampling(elements="Li-Xx")


# -- masks ---------------------------------------------------------------------------------
def test_system_mask_forbids_other_elements_everywhere_even_without_constraints():
    for constrain in ("none", "all"):
        processor = make_processor(constrain, TOK, "Li-Fe-P-O")
        for prompt in ("data_", "data_Li1Fe1P1O4\nloop_\n_atom_type_symbol\n"):
            elements = allowed_after(processor, TOK.encode(prompt)) & {TOK.itos[i] for i in ELEMENT_IDS}
            assert elements and elements <= {"Li", "Fe", "P", "O"}, (constrain, prompt, elements)


def test_data_line_grammar_counts_order_and_atom_budget():
    processor = make_processor("all", TOK, max_atoms=6)
    allowed = allowed_after(processor, TOK.encode("data_"))
    assert "Ca" in allowed and "O" in allowed and "\n" not in allowed and "1" not in allowed
    assert allowed_after(processor, TOK.encode("data_Ca")) == {str(d) for d in range(1, 7)}
    after_ti = allowed_after(processor, TOK.encode("data_Ca1Ti1"))
    assert "O" in after_ti and "\n" in after_ti
    assert not after_ti & set("0123456789")  # Ti10 and up: more than the 6 atoms
    assert allowed_after(processor, TOK.encode("data_Ti")) >= {"1", "6"}
    assert "Ca" not in after_ti and "Ti" not in after_ti  # once each
    assert "Li" not in after_ti  # Li is less electronegative than Ti: the formula's order
    full = allowed_after(processor, TOK.encode("data_Ca1Ti1O4"))
    assert full == {"\n"}  # six atoms: no digit, no element can follow


def test_formula_the_model_writes_sets_composition_and_stoichiometry():
    composition = CIFConstraints(TOK, composition=True, grammar=False).start([TOK.encode("data_")])
    for token in TOK.encode("Ca1Ti1O3\n"):
        composition.advance([token])
    allowed = torch.isfinite(composition(torch.zeros(1, TOK.vocab_size)))[0]
    assert {TOK.itos[i] for i in ELEMENT_IDS if allowed[i]} == {"Ca", "Ti", "O"}
    processor = CIFConstraints(TOK, composition=True, grammar=True, stoichiometry=True)
    bound = processor.start([TOK.encode("data_")])
    for token in TOK.encode("Ca1Ti1O3\n"):
        bound.advance([token])
    # the formula lines are forced as for a prompt that named the formula
    for token in TOK.encode("loop_\n_atom_type_symbol\n_atom_type_electronegativity\n_atom_type_radius\n"
                            "_atom_type_ionic_radius\nCa 1.0000 1.9700 1.1400\nTi 1.5400 1.4000 0.7450\n"
                            "O 3.4400 0.6000 1.2600\n_symmetry_space_group_name_H-M Pm-3m\n"
                            "_cell_length_a 3.9\n_cell_length_b 3.9\n_cell_length_c 3.9\n_cell_angle_alpha 90\n"
                            "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_Int_Tables_number 221\n"
                            "_chemical_formula_structural"):
        bound.advance([token])
    forced = []
    for _ in range(len(TOK.encode(" CaTiO3\n"))):
        logits = bound(torch.zeros(1, TOK.vocab_size))
        (choices,) = torch.isfinite(logits[0]).nonzero(as_tuple=True)
        assert len(choices) == 1
        forced.append(int(choices[0]))
        bound.advance(forced[-1:])
    assert TOK.decode(forced) == " CaTiO3\n"


def test_masks_never_block_real_cifs_written_from_data_(perov_raw, carbon_raw):
    for _, raw in perov_raw[:6] + carbon_raw[:3]:
        cif = preprocess_cif(raw)
        formula = parse_composition(extract_data_formula(cif))
        system = "-".join(str(e) for e in formula.elements)
        processor = make_processor("all", TOK, system, int(formula.num_atoms))
        ids = TOK.encode(cif)
        bound = processor.start([ids[:1]])
        for token in ids[1:]:
            logits = bound(torch.zeros(1, TOK.vocab_size))
            assert torch.isfinite(logits[0, token]), (TOK.itos[token], cif[:80])
            bound.advance([token])


def test_seeded_system_run_never_writes_other_elements(model):
    # the token ids themselves: re-reading random text can glue a space-group token's
    # letters into an element symbol (Pm-3m), which no real CIF has
    system = {"Ca", "Ti", "O"}
    for constrain in ("none", "all"):
        rows = sample_batch(model, [TOK.encode("data_")], repeats=12, max_new_tokens=120,
                            pick_next=make_picker(top_k=40), generator=torch.Generator().manual_seed(5),
                            newline_id=TOK.newline_id, processor=make_processor(constrain, TOK, "Ca-Ti-O"))
        written = {TOK.itos[i] for ids, _ in rows for i in ids if i in ELEMENT_IDS}
        assert written and written <= system, (constrain, written)
    strategy = TopKSampling(elements="Ca-Ti-O", max_new_tokens=120, top_k=40)  # the strategy passes it on
    (samples,) = strategy.generate(model, TOK, ["data_"], 6, generator=torch.Generator().manual_seed(5),
                                   progress=False)
    assert set().union(*(element_symbols(s.text.split("\n", 1)[0]) for s in samples)) <= system


def test_max_atoms_bounds_the_formula_written(model):
    strategy = TopKSampling(max_atoms=8, max_new_tokens=30, top_k=50)
    (samples,) = strategy.generate(model, TOK, ["data_"], 12, generator=torch.Generator().manual_seed(2),
                                   progress=False)
    totals = []
    for sample in samples:
        line = sample.text.split("\n", 1)[0]
        if "\n" in sample.text:  # the data_ line was finished
            totals.append(sum(int(n) for n in re.findall(r"\d+", line)))
    assert totals and all(1 <= total <= 8 for total in totals), totals


# -- runs ------------------------------------------------------------------------------------
def test_cli_and_api_agree_on_a_system_run(cf_tiny_model, plugin_manager, tmp_path):
    common = dict(n=3, seed=4, model=str(cf_tiny_model), device="cpu", batch_size=2,
                  search_options={"max_new_tokens": 60})
    api = cf.generate(system="Na-Cl", out=tmp_path / "api", plugin_manager=plugin_manager, **common)
    result = invoke(plugin_manager, ["run", "--system", "Na-Cl", "-n", "3", "--seed", "4", "--model",
                                     str(cf_tiny_model), "--device", "cpu", "--batch-size", "2", "--no-progress",
                                     "--out", str(tmp_path / "cli"), *FAST])
    assert result.exit_code == 0, result.output
    assert "de novo: " in result.output and "crystalforge vun " in result.output
    api_files = {p.name: p.read_text() for p in (tmp_path / "api").glob("*.cif")}
    cli_files = {p.name: p.read_text() for p in (tmp_path / "cli").glob("*.cif")}
    assert api_files == cli_files and len(api_files) == 3
    for name, text in api_files.items():
        assert name.startswith("Na-Cl_")  # <system>_<index>_<formula written>_<space group>
        assert element_symbols(text.split("\n", 1)[0]) <= {"Na", "Cl"}  # random weights: the ids test is above
    with open(tmp_path / "cli" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["composition"] for r in rows} == {"Na-Cl"} and len(rows) == 3
    assert {r["file"] for r in rows} == set(cli_files)
    assert sorted(c.name for c in api) == ["Na-Cl_0", "Na-Cl_1", "Na-Cl_2"]
    # resuming keeps all three (names are stable whatever formula was written)
    again = invoke(plugin_manager, ["run", "--system", "Na-Cl", "-n", "3", "--seed", "4", "--model",
                                    str(cf_tiny_model), "--device", "cpu", "--batch-size", "2", "--no-progress",
                                    "--out", str(tmp_path / "cli"), *FAST])
    assert "(0 generated, 3 kept from before)" in again.output
    as_json = invoke(plugin_manager, ["run", "--system", "Na-Cl", "-n", "3", "--seed", "4", "--model",
                                      str(cf_tiny_model), "--device", "cpu", "--out", str(tmp_path / "cli"), "--json",
                                      "--max-atoms", "40", *FAST])
    assert as_json.exit_code == 1 and "max_atoms" in as_json.output  # another bound: another run, not this folder
    as_json = invoke(plugin_manager, ["run", "--system", "Na-Cl", "-n", "3", "--seed", "4", "--model",
                                      str(cf_tiny_model), "--device", "cpu", "--out", str(tmp_path / "cli"), "--json",
                                      *FAST])
    report = json.loads(as_json.output)["denovo"]
    assert report["candidates"] == 3 and report["over_max_atoms"] is None


def test_vun_reads_a_de_novo_run_folder(cf_tiny_model, plugin_manager, tmp_path):
    out = tmp_path / "run"
    cf.generate(unconditional=True, n=2, model=str(cf_tiny_model), device="cpu", out=out,
                plugin_manager=plugin_manager, search_options={"max_new_tokens": 40})
    result = invoke(plugin_manager, ["vun", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert '"n_generated": 2' in result.output  # unparsable candidates still counted


@pytest.mark.slow
def test_embedded_model_unconditional_writes_parseable_cifs(tmp_path):
    result = cf.generate(unconditional=True, n=4, seed=0, device="cpu", out=tmp_path)
    files = sorted(tmp_path.glob("unconditional_*.cif"))
    assert len(files) == 4
    parsed = 0
    for candidate in result:
        assert candidate.raw.startswith("data_")
        assert candidate.formula and candidate.stem.startswith(f"{candidate.name}_{candidate.formula}_")
        if candidate.structure is not None:
            parsed += 1
    assert parsed >= 3


@pytest.mark.slow
def test_embedded_model_system_run_keeps_to_the_system(tmp_path):
    result = cf.generate(system="Ca-Ti-O", n=4, seed=1, device="cpu", search="top-p")
    for candidate in result:
        assert element_symbols(candidate.raw) <= {"Ca", "Ti", "O"}
        structure = candidate.structure
        if structure is not None:
            assert {str(e) for e in structure.composition.elements} <= {"Ca", "Ti", "O"}


@pytest.mark.parametrize("search, options", [
    ("top-k", {}), ("top-p", {}), ("random", {}), ("greedy", {}),
    ("puct", {"num_simulations": 2, "width": 3}),
])
def test_every_search_keeps_to_the_system(cf_tiny_model, plugin_manager, search, options):
    result = cf.generate(system="Na-Cl", n=2, search=search, model=str(cf_tiny_model), device="cpu",
                         plugin_manager=plugin_manager, max_atoms=6,
                         search_options={"max_new_tokens": 40, **options})
    assert result
    for candidate in result:
        formula_line = candidate.raw.split("\n", 1)[0]
        assert formula_line.startswith("data_")
        assert element_symbols(formula_line) <= {"Na", "Cl"}, formula_line
        if "\n" in candidate.raw:  # the formula was finished: at most 6 atoms
            assert sum(int(n) for n in re.findall(r"\d+", formula_line)) <= 6, formula_line
