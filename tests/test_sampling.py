"""Sampling strategies and the batched KV-cache decoding engine, on a tiny real GPT."""

from __future__ import annotations

import pytest
import torch

from crystalforge.cif.prompt import make_prompt
from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.errors import OptionError, SequenceTooLongError
from crystalforge.model.gpt import GPT, GPTConfig
from crystalforge.search.decode import (
    filter_top_k,
    filter_top_p,
    greedy_pick,
    make_picker,
    sample_batch,
    sample_from_logits,
)
from crystalforge.search.sampling import GreedyDecoding, RandomSampling, TopKSampling, TopPSampling, sample_seed

TOK = default_tokenizer()
NL = TOK.newline_id


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256)).eval()


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    # different lengths: left padding is exercised
    return [make_prompt("CaTiO3", "Pm-3m"), make_prompt("NaCl"), make_prompt("C", "P6/mmm")]


def reference_greedy(model: GPT, prompt_ids: list[int], steps: int) -> list[int]:
    """One sequence, full forward pass per token, no cache: what the engine must match."""
    ids = list(prompt_ids)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(torch.tensor([ids]))
            token = int(torch.argmax(logits[0, -1]))
            ids.append(token)
            out.append(token)
            if token == NL and len(out) >= 2 and out[-2] == NL:  # generated newlines only
                break
    return out


# -- pickers ------------------------------------------------------------------------
def test_top_k_keeps_k_tokens():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]])
    kept = torch.isfinite(filter_top_k(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_top_p(probs.log(), 0.7)).tolist()
    assert kept == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(probs.log(), 0.1)).tolist() == [[True, False, False, False]]


def test_inverse_cdf_never_draws_zero_probability_tokens():
    logits = torch.tensor([[float("-inf"), 0.0, float("-inf"), 0.0]]).repeat(64, 1)
    uniforms = torch.linspace(0, 0.999999, 64)
    picked = sample_from_logits(logits, uniforms)
    assert set(picked.tolist()) == {1, 3}
    assert greedy_pick(torch.tensor([[1.0, 5.0, 5.0]])).tolist() == [1]


def test_picker_rejects_bad_settings():
    with pytest.raises(ValueError):
        make_picker(top_p=0.0)
    with pytest.raises(ValueError):
        make_picker(temperature=-1)


# -- engine -------------------------------------------------------------------------
def test_batched_greedy_equals_uncached_reference(model, prompts):
    encoded = [TOK.encode(p) for p in prompts]
    rows = sample_batch(model, encoded, max_new_tokens=40, pick_next=greedy_pick, repeats=2)
    assert len(rows) == 6
    for k, ids in enumerate(encoded):
        expected = reference_greedy(model, ids, 40)
        assert rows[2 * k].ids == expected
        assert rows[2 * k + 1].ids == expected  # expanded copies of one prefill


def _stopping_picker(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Sample, but emit a newline a third of the time so rows end at different steps."""
    sampled = sample_from_logits(logits, (uniforms * 7.0) % 1.0)
    return torch.where(uniforms < 0.33, torch.full_like(sampled, NL), sampled)


def test_rows_stop_independently_and_match_single_row_decoding(model, prompts):
    encoded = [TOK.encode(p) for p in prompts]
    n = 4

    def generators(k_rows):
        return [torch.Generator().manual_seed(100 + r) for r in k_rows]

    batched = sample_batch(model, encoded, repeats=n, max_new_tokens=30, pick_next=_stopping_picker,
                           generator=generators(range(len(encoded) * n)))
    finished = [r for r in batched if r.finished]
    assert finished and len(finished) < len(batched), "some rows must end early while others go on"
    assert len({len(r.ids) for r in finished}) > 1
    for row in finished:
        assert row.ids[-1] == NL and (len(row.ids) == 1 or row.ids[-2] == NL)
        # nothing after the end marker
        assert all(not (a == NL and b == NL) for a, b in zip(row.ids[:-2], row.ids[1:-1]))
    for row in batched:
        if not row.finished:
            assert len(row.ids) == 30
    # one at a time, same per-row generators: identical output
    for r, row in enumerate(batched):
        alone = sample_batch(model, [encoded[r // n]], max_new_tokens=30, pick_next=_stopping_picker,
                             generator=generators([r]))[0]
        assert alone == row


def test_first_token_newline_after_prompt_newline_does_not_end_the_row(model):
    # only generated newlines count towards the end marker (the prompt's own does not)
    force_newline = lambda logits, u: torch.full((logits.size(0),), NL, dtype=torch.long)  # noqa: E731
    rows = sample_batch(model, [TOK.encode("data_NaCl\n")], max_new_tokens=10, pick_next=force_newline)
    assert rows[0].ids == [NL, NL] and rows[0].finished


def test_generation_goes_on_past_the_context_window(model):
    ids = TOK.encode(make_prompt("CaTiO3", "Pm-3m"))
    steps = model.config.block_size - len(ids) + 20
    rows = sample_batch(model, [ids], max_new_tokens=steps, pick_next=greedy_pick, stop_on_double_newline=False)
    assert len(rows[0].ids) == steps and not rows[0].finished  # the window slides; max_new_tokens bounds it
    with pytest.raises(SequenceTooLongError):
        sample_batch(model, [[1] * 300], max_new_tokens=5, pick_next=greedy_pick)


# -- strategies ---------------------------------------------------------------------
def _texts(samples):
    return [[s.text for s in row] for row in samples]


def test_same_seed_same_output_and_other_seed_differs(model, prompts):
    strategy = TopKSampling(max_new_tokens=40)
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    first = strategy.generate(model, TOK, prompts, 3, generator=gen(7), progress=False)
    again = strategy.generate(model, TOK, prompts, 3, generator=gen(7), progress=False)
    other = strategy.generate(model, TOK, prompts, 3, generator=gen(8), progress=False)
    assert _texts(first) == _texts(again)
    assert _texts(first) != _texts(other)
    assert all(s.text.startswith(p) for p, row in zip(prompts, first) for s in row)
    assert len({s.text for s in first[0]}) > 1  # samples differ from each other


@pytest.mark.parametrize("strategy", [RandomSampling(max_new_tokens=30), TopPSampling(max_new_tokens=30, top_p=0.8)])
def test_batched_equals_one_at_a_time(model, prompts, strategy):
    gen = torch.Generator().manual_seed(3)
    batched = strategy.generate(model, TOK, prompts, 3, generator=gen, batch_size=9, progress=False)
    single = strategy.generate(model, TOK, prompts, 3, generator=gen, batch_size=1, progress=False)
    assert _texts(batched) == _texts(single)


def test_indices_reproduce_the_same_samples(model, prompts):
    strategy = TopKSampling(max_new_tokens=30)
    gen = torch.Generator().manual_seed(5)
    full = strategy.generate(model, TOK, prompts[:1], 4, generator=gen, progress=False)
    part = strategy.generate(model, TOK, prompts[:1], 2, generator=gen, indices=[[3, 1]], progress=False)
    assert [s.text for s in part[0]] == [full[0][3].text, full[0][1].text]
    assert sample_seed(5, prompts[0], 1) != sample_seed(5, prompts[0], 2)


def test_greedy_samples_agree(model, prompts):
    # the reference decodes the raw model, so no masks here
    samples = GreedyDecoding(max_new_tokens=25, constrain="none").generate(model, TOK, prompts, 2, generator=None,
                                                                           progress=False)
    assert samples[0][0].text == samples[0][1].text
    expected = reference_greedy(model, TOK.encode(prompts[0]), 25)
    assert samples[0][0].text == prompts[0] + TOK.decode(expected)


def test_constraints_are_on_by_default(model, prompts):
    assert TopKSampling().constrain == GreedyDecoding().constrain == "all"
    masked = GreedyDecoding(max_new_tokens=25).generate(model, TOK, prompts[:1], 1, generator=None, progress=False)
    # random weights: the raw greedy text breaks the grammar at once, the masked one cannot
    first = masked[0][0].text[len(prompts[0]):].split("\n", 1)[0]
    assert first.split(" ", 1)[0] in TOK.stoi and first.split(" ", 1)[0].startswith(("_", "loop_"))


def test_options_come_from_the_registry(plugin_manager):
    registry = plugin_manager.registry("search")
    strategy = registry.create("top-k", top_k="5", temperature="0.7", constrain="both")
    assert isinstance(strategy, TopKSampling) and strategy.top_k == 5 and strategy.temperature == 0.7
    names = {o.name: o for o in registry.get("top-p").options}
    assert {"temperature", "top_p", "max_new_tokens", "constrain"} <= set(names)
    assert all(o.help for o in names.values())
    # a comma-separated list of masks, so no fixed choices: the help names them all
    assert all(name in names["constrain"].help for name in ("composition", "grammar", "stoichiometry", "all"))
    assert registry.create("top-p", constrain="composition,stoichiometry").constrain == "composition,stoichiometry"
    with pytest.raises(OptionError, match="constrain"):
        registry.create("top-k", constrain="grammar,everything")
    with pytest.raises(OptionError):
        registry.create("top-k", top_k="-1")
    with pytest.raises(OptionError):
        registry.create("top-p", top_p="1.5")
    with pytest.raises(OptionError):
        registry.create("random", constrain="everything")
    assert isinstance(registry.create("greedy"), GreedyDecoding)


def test_continuing_from_a_prefix_cache_equals_decoding_from_scratch(model, prompts):
    ids = TOK.encode(prompts[1])
    cache = model.new_cache(1, max_len=ids.__len__() + 30)
    with torch.no_grad():
        last = model.forward_cached(torch.tensor([ids]), cache)[:, -1, :]
    generators = lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)]  # noqa: E731
    pick = make_picker(top_k=5)
    fresh = sample_batch(model, [ids], repeats=3, max_new_tokens=30, pick_next=pick, generator=generators())
    before = cache.clone()
    continued = sample_batch(model, [ids], repeats=3, max_new_tokens=30, pick_next=pick, generator=generators(),
                             cache=cache, last_logits=last)
    assert continued == fresh
    assert cache.length == before.length and torch.equal(cache.keys, before.keys)  # expanded copy, not in place
