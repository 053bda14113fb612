"""Whole CIFs past the context window: the KV-cache engine slides over the last
``block_size`` tokens exactly as a full-recompute loop does, and only generated newlines
end a CIF."""

from __future__ import annotations


import pytest
import torch

from crystalforge.cif.prompt import make_prompt
from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.model.gpt import GPT, GPTConfig
from crystalforge.search.decode import greedy_pick, make_picker, sample_batch
from crystalforge.search.logits import make_processor

TOK = default_tokenizer()
NL = TOK.newline_id
BLOCK = 64


@pytest.fixture(scope="module")
def random_model() -> GPT:
    torch.manual_seed(1)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK)).eval()


def reference(model: GPT, prompt_ids: list[int], steps: int, pick, uniforms: torch.Tensor,
              processor=None) -> tuple[list[int], bool]:
    """One row, no cache: crop to the last block_size tokens, full forward, pick."""
    ids, out = list(prompt_ids), []
    bound = processor.start([prompt_ids]) if processor is not None else None
    with torch.no_grad():
        for step in range(steps):
            logits, _ = model(torch.tensor([ids[-model.config.block_size:]]))
            logits = logits[:, -1, :]
            if bound is not None:
                logits = bound(logits)
            token = int(pick(logits, uniforms[step:step + 1])[0])
            ids.append(token)
            out.append(token)
            if bound is not None:
                bound.advance([token])
            if len(out) >= 2 and out[-2] == NL and token == NL:
                return out, True
    return out, False


def _seeds(n: int, base: int = 7) -> list[int]:
    return [base + r for r in range(n)]


@pytest.mark.parametrize("constrain", ["none", "all"])
def test_top_k_sliding_equals_full_recompute_with_left_padding(random_model, constrain):
    # prompts of different lengths in one batch: rows are left-padded, and each slides on its own
    prompts = [TOK.encode(make_prompt("CaTiO3")), TOK.encode("data_Na1Cl1\n_cell_length_a 5.6\n")]
    steps, repeats = 120, 2
    pick = make_picker(top_k=10)
    processor = make_processor(constrain, TOK)
    seeds = _seeds(len(prompts) * repeats)
    rows = sample_batch(random_model, prompts, repeats=repeats, max_new_tokens=steps, pick_next=pick,
                        generator=[torch.Generator().manual_seed(s) for s in seeds], newline_id=NL,
                        processor=processor)
    assert max(len(p) + len(r.ids) for p, r in zip([p for p in prompts for _ in range(repeats)], rows)) > BLOCK
    for r, row in enumerate(rows):
        uniforms = torch.rand(steps, generator=torch.Generator().manual_seed(seeds[r]))
        expected = reference(random_model, prompts[r // repeats], steps, pick, uniforms, processor)
        assert (row.ids, row.finished) == expected


def test_greedy_sliding_equals_full_recompute(random_model):
    prompts = [TOK.encode(make_prompt("NaCl")), TOK.encode(make_prompt("SrTiO3"))]
    rows = sample_batch(random_model, prompts, max_new_tokens=200, pick_next=greedy_pick,
                        stop_on_double_newline=False)
    for prompt, row in zip(prompts, rows):
        assert len(row.ids) == 200 and not row.finished  # far past the 64-token window
        expected, _ = reference(random_model, prompt, 200, greedy_pick, torch.zeros(200))
        assert row.ids == expected


def test_a_block_64_model_writes_finished_cifs_longer_than_its_window(random_model, perov_raw):
    # A random-weight model does not write CIFs by itself, so the picker recites a real one;
    # it only takes tokens the model's constrained logits allow, so the grammar and
    # stoichiometry masks follow the row past the window. The engine must go on past
    # 64 tokens and stop exactly at the CIF's end marker.
    import crystalforge as cf

    cif = cf.preprocess_cif(perov_raw[0][1])
    ids = TOK.encode(cif)
    prompt = ids[: ids.index(NL) + 1]
    target = ids[len(prompt):]
    step = {"n": 0}

    def recite(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        token = target[step["n"]]
        assert torch.isfinite(logits[0, token]), f"the masks refused token {step['n']} of a real CIF"
        step["n"] += 1
        return torch.tensor([token])

    rows = sample_batch(random_model, [prompt], max_new_tokens=5 * len(ids), pick_next=recite, newline_id=NL,
                        processor=make_processor("all", TOK))
    assert rows[0].finished and rows[0].ids == target
    assert len(ids) > 4 * BLOCK
    assert cf.postprocess_cif(TOK.decode(ids)).count("_atom_site_occupancy") == 1


def test_a_first_generated_newline_does_not_end_a_sample(random_model):
    newline_first = lambda logits, u: torch.full((logits.size(0),), NL, dtype=torch.long)  # noqa: E731
    rows = sample_batch(random_model, [TOK.encode("data_NaCl\n")], max_new_tokens=10, pick_next=newline_first)
    assert rows[0].ids == [NL, NL] and rows[0].finished  # two generated newlines end it, one does not


def test_generated_prefix_newline_counts_for_continuations(random_model):
    # MCTS continues a node whose edge (generated) ends with a newline: one more newline ends it
    ids = TOK.encode("data_NaCl\n")
    cache = random_model.new_cache(1, max_len=BLOCK)
    with torch.no_grad():
        last = random_model.forward_cached(torch.tensor([ids]), cache)[:, -1, :]
    newline = lambda logits, u: torch.full((logits.size(0),), NL, dtype=torch.long)  # noqa: E731
    rows = sample_batch(random_model, [ids], max_new_tokens=10, pick_next=newline, cache=cache,
                        last_logits=last, generated=[1])
    assert rows[0].ids == [NL] and rows[0].finished


def test_max_new_tokens_per_prompt(random_model):
    prompts = [TOK.encode("data_NaCl\n"), TOK.encode("data_KBr\n")]
    rows = sample_batch(random_model, prompts, max_new_tokens=[5, 90], pick_next=greedy_pick,
                        stop_on_double_newline=False)
    assert [len(r.ids) for r in rows] == [5, 90]


def test_mcts_node_states_and_rollouts_slide_past_the_window(random_model):
    from crystalforge.search.mcts import PUCTSearch, TreeRun

    strategy = PUCTSearch(num_simulations=2, n_rollouts=2, bypass_chains=False, max_new_tokens=150, constrain="none")
    run = TreeRun(strategy, random_model, TOK, "data_Na1Cl1\n", torch.Generator().manual_seed(3), None, None, "cpu")
    # a node deeper than the window: its state is the window of its prefix, prefilled again
    edge = TOK.encode("_cell_length_a 5.6\n_cell_length_b 5.6\n_cell_length_c 5.6\n" * 5)
    assert len(run.prompt_ids) + len(edge) > BLOCK
    deep = run.root.add_child(edge, 1.0)
    state = run.state(deep)
    with torch.no_grad():
        full, _ = random_model(torch.tensor([(run.prompt_ids + edge)[-BLOCK:]]))
    assert torch.allclose(state.logits[0], full[0, -1], atol=1e-4)
    # its rollouts go on past the window, up to max_new_tokens in all
    (rows,) = run.rollout_many([(state, 2)])
    for ids, finished in rows:
        assert len(edge) + len(ids) == 150 or finished
    assert max(len(ids) for ids, _ in rows) > 0
