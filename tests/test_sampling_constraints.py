"""Logits processors: composition and CIF-grammar masks (sound on real CIFs, effective on noise)."""

from __future__ import annotations

import pytest
import torch

from crystalforge.cif.preprocess import preprocess_cif
from crystalforge.cif.prompt import make_prompt
from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.model.gpt import GPT, GPTConfig
from crystalforge.errors import OptionError
from crystalforge.search.logits import CIFConstraints, Stoichiometry, TokenClasses, make_processor, parse_constraints
from crystalforge.search.decode import make_picker, sample_batch
from crystalforge.search.sampling import RandomSampling

TOK = default_tokenizer()
CLASSES = TokenClasses.from_tokenizer(TOK)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(1)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256)).eval()


def _walk(processor: CIFConstraints, cif: str, prompt_lines: int) -> list[str]:
    """Feed a real CIF through the processor; return the real tokens it would have masked."""
    ids = TOK.encode(cif)
    cut = 0
    for _ in range(prompt_lines):
        cut = ids.index(TOK.newline_id, cut) + 1
    bound = processor.start([ids[:cut]])
    masked = []
    for token in ids[cut:]:
        logits = bound(torch.zeros(1, TOK.vocab_size))
        if not torch.isfinite(logits[0, token]):
            masked.append(TOK.itos[token])
        bound.advance([token])
    return masked


@pytest.mark.parametrize("prompt_lines", [1, 14])
@pytest.mark.parametrize("stoichiometry", [False, True], ids=["both", "all"])
def test_masks_never_block_real_cifs(perov_raw, carbon_raw, prompt_lines, stoichiometry):
    processor = CIFConstraints(TOK, composition=True, grammar=True, stoichiometry=stoichiometry)
    for _, raw in perov_raw[:8] + carbon_raw[:4]:
        cif = preprocess_cif(raw)
        lines = prompt_lines if prompt_lines == 1 else cif.splitlines().index(
            next(line for line in cif.splitlines() if line.startswith("_symmetry_space_group_name_H-M"))) + 1
        assert _walk(processor, cif, lines) == [], cif


def test_composition_mask_allows_only_prompt_elements():
    bound = CIFConstraints(TOK, composition=True, grammar=False).start([TOK.encode("data_Ca1Ti1O3\n")])
    allowed = torch.isfinite(bound(torch.zeros(1, TOK.vocab_size)))[0]
    elements = {TOK.itos[i] for i in CLASSES.elements if allowed[i]}
    assert elements == {"Ca", "Ti", "O"}
    assert allowed[TOK.stoi["_cell_length_a"]] and allowed[TOK.stoi["Pm-3m_sg"]]


def test_grammar_after_numeric_key_and_space_group_key():
    prompt = make_prompt("NaCl", "Fm-3m")
    bound = CIFConstraints(TOK, composition=False, grammar=True).start([TOK.encode(prompt)])

    def allowed_tokens() -> set[str]:
        logits = bound(torch.zeros(1, TOK.vocab_size))[0]
        return {TOK.itos[i] for i in range(TOK.vocab_size) if torch.isfinite(logits[i])}

    at_line_start = allowed_tokens()
    assert "\n" not in at_line_start and "_cell_length_a" in at_line_start and "Na" not in at_line_start
    bound.advance([TOK.stoi["_cell_length_a"]])
    assert allowed_tokens() == {" "}
    bound.advance([TOK.stoi[" "]])
    assert allowed_tokens() == set("0123456789")
    bound.advance([TOK.stoi["5"]])
    assert allowed_tokens() == set("0123456789.\n")
    bound.advance([TOK.stoi["."]])
    assert allowed_tokens() == set("0123456789\n")  # one number, one decimal point
    for token in ["6", "\n", "_symmetry_space_group_name_H-M"]:
        bound.advance([TOK.stoi[token]])
    assert allowed_tokens() == {" "} | {t for t in TOK.itos if t.endswith("_sg")}


def test_constrained_generation_keeps_to_the_composition(model):
    prompts = [TOK.encode(make_prompt("NaCl", "Fm-3m")), TOK.encode(make_prompt("SrTiO3"))]
    allowed = [{TOK.stoi[e] for e in ("Na", "Cl")}, {TOK.stoi[e] for e in ("Sr", "Ti", "O")}]
    pick = make_picker(temperature=1.0)

    def foreign(processor) -> list[int]:
        generators = [torch.Generator().manual_seed(i) for i in range(8)]
        rows = sample_batch(model, prompts, repeats=4, max_new_tokens=120, pick_next=pick,
                            generator=generators, processor=processor)
        return [sum(t in CLASSES.elements and t not in allowed[r // 4] for t in row.ids)
                for r, row in enumerate(rows)]

    assert sum(foreign(None)) > 0  # random weights emit anything
    assert foreign(make_processor("composition", TOK)) == [0] * 8
    assert foreign(make_processor("both", TOK)) == [0] * 8


def test_strategy_option_applies_the_masks(model):
    prompt = make_prompt("NaCl", "Fm-3m")
    gen = torch.Generator().manual_seed(0)
    held = RandomSampling(max_new_tokens=60, constrain="grammar").generate(model, TOK, [prompt], 3, generator=gen,
                                                                           progress=False)
    for sample in held[0]:
        first_line = sample.text[len(prompt):].split("\n", 1)[0]
        assert first_line.split(" ", 1)[0] in TOK.stoi or first_line.startswith("loop_")


def test_make_processor_choices():
    assert make_processor("none", TOK) is None
    assert make_processor("grammar", TOK).composition is False
    assert make_processor("both", TOK).grammar is True
    assert make_processor("both", TOK).stoichiometry is False
    everything = make_processor("all", TOK)
    assert everything.composition and everything.grammar and everything.stoichiometry
    listed = make_processor("stoichiometry, composition", TOK)
    assert (listed.composition, listed.grammar, listed.stoichiometry) == (True, False, True)
    assert parse_constraints("grammar,both") == ("composition", "grammar")
    with pytest.raises(ValueError, match="stoichiometry"):
        make_processor("everything", TOK)


def test_bad_constrain_option_is_an_option_error():
    with pytest.raises(OptionError, match="constrain"):
        RandomSampling(constrain="composition,colour")


def test_atom_site_rows_follow_their_header():
    prompt = make_prompt("NaCl", "Fm-3m")
    header = "loop_\n_atom_site_type_symbol\n_atom_site_label\n_atom_site_symmetry_multiplicity\n" \
             "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\n"
    bound = CIFConstraints(TOK, composition=True, grammar=True).start([TOK.encode(prompt)])
    for token in TOK.encode(header):
        bound.advance([token])

    def allowed_tokens() -> set[str]:
        logits = bound(torch.zeros(1, TOK.vocab_size))[0]
        return {TOK.itos[i] for i in range(TOK.vocab_size) if torch.isfinite(logits[i])}

    start = allowed_tokens()  # more header keys, or the first row: no end, no other elements
    assert {"Na", "Cl", "_atom_site_fract_x"} <= start and "\n" not in start and "O" not in start
    expected = [("Na", {" "}), (" ", {"Na", "Cl"}), ("Na", set("0123456789")), ("0", set("0123456789 ")),
                (" ", set("0123456789")), ("4", set("0123456789 ")), (" ", set("0123456789-")),
                ("0", set("0123456789. ")), (".", set("0123456789 "))]
    for token, after in expected:
        bound.advance([TOK.stoi[token]])
        assert allowed_tokens() == after, token
    for token in TOK.tokenize("5000 0.5000 0.5000 1.0"):
        bound.advance([TOK.stoi[token]])
    assert allowed_tokens() == set("0123456789\n")  # the last field ends the line
    bound.advance([TOK.stoi["\n"]])
    assert allowed_tokens() == {"Na", "Cl", "\n"}  # another row, or the end of the CIF


def _allowed(bound) -> set[str]:
    logits = bound(torch.zeros(1, TOK.vocab_size))[0]
    return {TOK.itos[i] for i in range(TOK.vocab_size) if torch.isfinite(logits[i])}


def _feed(bound, text: str) -> None:
    for token in TOK.tokenize(text):
        bound.advance([TOK.stoi[token]])


def test_stoichiometry_of_a_prompt_is_what_cifwriter_writes():
    stoichiometry = Stoichiometry.from_prompt(TOK.encode(make_prompt("Sr2Ti2O6", "P4/mmm")), TOK)
    assert {TOK.itos[e]: n for e, n in stoichiometry.counts.items()} == {"Sr": 2, "Ti": 2, "O": 6}
    lines = {TOK.itos[k]: TOK.decode(list(v)) for k, v in stoichiometry.lines.items()}
    assert lines == {"_chemical_formula_structural": " SrTiO3\n",
                     "_chemical_formula_sum": " 'Sr2 Ti2 O6'\n", "_cell_formula_units_Z": " 2\n"}
    carbon = Stoichiometry.from_prompt(TOK.encode("data_C8\n"), TOK)
    assert {TOK.itos[k]: TOK.decode(list(v)) for k, v in carbon.lines.items()}["_chemical_formula_sum"] == " C8\n"
    assert Stoichiometry.from_prompt(TOK.encode("loop_\n"), TOK) is None


def test_stoichiometry_forces_formula_lines_and_balances_multiplicities():
    bound = CIFConstraints(TOK, composition=False, grammar=False, stoichiometry=True).start(
        [TOK.encode(make_prompt("C8", "P2/m"))])
    _feed(bound, "_cell_length_a 4.2066\n_chemical_formula_structural")
    forced = []
    for _ in range(3):
        (token,) = _allowed(bound)
        forced.append(token)
        bound.advance([TOK.stoi[token]])
    assert forced == [" ", "C", "\n"]
    _feed(bound, "_cell_formula_units_Z")
    assert _allowed(bound) == {" "}
    _feed(bound, " 8\nloop_\n_atom_site_type_symbol\n_atom_site_label\n_atom_site_symmetry_multiplicity\n"
                 "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\nC C0 ")
    assert _allowed(bound) == set("12345678")  # no leading zero, no more than 8 atoms
    _feed(bound, "4 0.1665 0.0000 0.4994 1.0\nC C1 ")
    assert _allowed(bound) == set("1234")  # 4 atoms left
    _feed(bound, "2")
    assert _allowed(bound) == {" "}
    _feed(bound, " 0.1424 0.0000 0.1866 1.0\n")
    assert "\n" not in _allowed(bound)  # 2 atoms still missing: the CIF may not end
    _feed(bound, "C C2 2 0.3341 0.5000 0.3800 1.0\n")
    assert _allowed(bound) == {"\n"}  # every atom placed: only the end of the CIF


def test_stoichiometry_constraint_makes_the_default_model_consistent():
    import crystalforge as cf

    candidates = cf.generate("SrTiO3", spacegroup="Pm-3m", n=6, search="top-k",
                             search_options={"temperature": 1.3, "constrain": "all"}, seed=3)
    for candidate in candidates:
        assert candidate.report.checks["formula_consistency"].passed, candidate.cif
        assert candidate.report.checks["site_multiplicity"].passed, candidate.cif
