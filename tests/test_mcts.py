"""MCTS: selectors, tree builder, reward, KV-cache reuse, reproducibility, and end to end
through real processes (``crystalforge scorer serve`` + ``crystalforge run --search puct``)."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from conftest import PEROV_CSV, read_csv_slice
from crystalforge.errors import OptionError
from crystalforge.scoring.random import RandomScorer
from crystalforge.search.mcts import (PUCTSearch, TreeRun, UCTSearch, GreedyTreeSearch,
                                      best_evaluations, Evaluation)
from crystalforge.search.mcts.tree import (Node, RewardModel, child_priors, epsilon_greedy_select,
                                      puct_scores, puct_select, uct_scores, uct_select)


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from crystalforge.cif.tokenizer import default_tokenizer

    return default_tokenizer()


@pytest.fixture(scope="module")
def memorizing_model(tmp_path_factory, tokenizer):
    """A tiny GPT trained (2 s) to recite one real Perov-5 CIF: its rollouts are mostly
    valid, so validity, scoring and rewards are exercised for real. Returns (path, prompt)."""
    import crystalforge as cf
    from crystalforge.model.checkpoint import save_checkpoint
    from crystalforge.model.gpt import GPT, GPTConfig

    cif = cf.preprocess_cif(read_csv_slice(PEROV_CSV, 0, 1)[0][1])
    ids = tokenizer.encode(cif)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=48, block_size=384))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    for _ in range(150):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("memorizing") / "ckpt.pt"
    save_checkpoint(path, model.eval())
    return path, cif.split("\n")[0] + "\n"


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    from crystalforge.model.checkpoint import load_model
    from crystalforge.testing import write_tiny_model

    return load_model(write_tiny_model(tmp_path_factory.mktemp("tiny") / "ckpt.pt", block_size=256))


def load(path):
    from crystalforge.model.checkpoint import load_model

    return load_model(path)


# -- selectors on hand-built trees ----------------------------------------------------------
def hand_tree() -> Node:
    root = Node(visits=10, value_sum=3.0)
    a = root.add_child([1], 0.6)
    a.visits, a.value_sum = 6, 1.2  # q 0.2
    b = root.add_child([2], 0.3)
    b.visits, b.value_sum = 3, 1.5  # q 0.5
    root.add_child([3], 0.1)  # unvisited
    return root


def test_puct_formula():
    root = hand_tree()
    scores = puct_scores(root, c=5.0)
    s = math.sqrt(10)
    assert scores == pytest.approx([0.2 + 5 * 0.6 * s / 7, 0.5 + 5 * 0.3 * s / 4, 0 + 5 * 0.1 * s / 1])
    assert puct_select(root, c=5.0) is root.children[1]
    assert puct_select(root, c=20.0) is root.children[2]  # exploration wins for the unvisited child
    assert puct_select(root, c=0.0) is root.children[1]  # pure exploitation


def test_uct_formula_unvisited_first():
    root = hand_tree()
    scores = uct_scores(root, c=2.0)
    assert scores[:2] == pytest.approx([0.2 + 2 * math.sqrt(math.log(10) / 6),
                                        0.5 + 2 * math.sqrt(math.log(10) / 3)])
    assert scores[2] == math.inf and uct_select(root, 2.0) is root.children[2]
    root.children[2].visits, root.children[2].value_sum = 1, -1.0
    assert uct_select(root, 2.0) is root.children[1]


def test_epsilon_greedy():
    root = hand_tree()
    # greedy: best mean reward; the unvisited child counts with its parent's mean (0.3)
    assert epsilon_greedy_select(root, 0.0, lambda: 0.0) is root.children[1]
    draws = iter([0.05, 0.99])  # explore (0.05 < 0.1), then pick the last child
    assert epsilon_greedy_select(root, 0.1, lambda: next(draws)) is root.children[2]


def test_backpropagate_updates_the_path():
    root = hand_tree()
    leaf = root.children[1].add_child([7, 8], 1.0)
    leaf.backpropagate(1.0)
    assert (leaf.visits, root.children[1].visits, root.visits) == (1, 4, 11)
    assert root.value_sum == 4.0 and leaf.path_tokens() == [2, 7, 8] and leaf.length == 3


def test_max_backup_values_the_best_reward_below_a_node():
    root = Node()
    steady = root.add_child([1], 0.5)
    lucky = root.add_child([2], 0.5)
    for reward in (0.6, 0.6, 0.6, 0.6):
        steady.add_child([3], 1.0).backpropagate(reward)
    for reward in (0.0, 0.0, 0.0, 0.95):  # mostly invalid, but one candidate better than any other
        lucky.add_child([4], 1.0).backpropagate(reward)
    assert (steady.best, lucky.best, root.best) == (0.6, 0.95, 0.95)
    assert lucky.value() == pytest.approx(0.2375) and lucky.value(1.0) == 0.95
    assert lucky.value(0.5) == pytest.approx(0.5 * 0.2375 + 0.5 * 0.95)
    assert Node().value(1.0) == 0.0  # unvisited
    # mean backup prefers the steady branch, max backup the one that produced the best candidate
    assert puct_select(root, c=0.1) is steady and puct_select(root, c=0.1, max_backup=1.0) is lucky
    assert uct_select(root, c=0.1) is steady and uct_select(root, c=0.1, max_backup=1.0) is lucky
    assert epsilon_greedy_select(root, 0.0, lambda: 0.5) is steady
    assert epsilon_greedy_select(root, 0.0, lambda: 0.5, max_backup=1.0) is lucky
    # the virtual loss of a pending visit lowers the mean but not the best
    lucky.visits += 1
    assert lucky.value() < 0.2375 and lucky.value(1.0) == 0.95


def test_max_backup_option_reaches_the_selector(plugin_manager):
    registry = plugin_manager.registry("search")
    assert registry.create("puct").max_backup == 0.0
    assert registry.create("uct", max_backup="1").max_backup == 1.0
    with pytest.raises(OptionError, match="max_backup"):
        registry.create("puct", max_backup="1.5")
    root = Node()
    steady, lucky = root.add_child([1], 0.5), root.add_child([2], 0.5)
    steady.visits, steady.value_sum, steady.best = 4, 2.4, 0.6
    lucky.visits, lucky.value_sum, lucky.best = 4, 0.95, 0.95
    root.visits = 8
    for name in ("puct", "uct", "mcts-greedy"):
        extra = {"epsilon": "0"} if name == "mcts-greedy" else {"c": "0.1"}
        mean = registry.create(name, **extra)
        best = registry.create(name, max_backup="1", **extra)
        assert mean.select_child(root, lambda: 0.5) is steady, name
        assert best.select_child(root, lambda: 0.5) is lucky, name


# -- tree builder ---------------------------------------------------------------------------
def test_child_priors_top_width_normalised():
    probs = [0.0, 0.5, 0.2, 0.2, 0.1]
    children = child_priors(probs, width=3)
    assert [t for t, _ in children] == [1, 2, 3]
    assert [p for _, p in children] == pytest.approx([0.5 / 0.9, 0.2 / 0.9, 0.2 / 0.9])
    assert [t for t, _ in child_priors(probs, width=10)] == [1, 2, 3, 4]  # zero-probability token dropped


def test_child_priors_no_branching_above_cutoff():
    assert child_priors([0.02, 0.97, 0.01], width=3, branch_cutoff=0.95) == [(1, 1.0)]
    assert len(child_priors([0.02, 0.97, 0.01], width=3, branch_cutoff=0.99)) == 3


def test_space_group_position_branches_wider(random_model, tokenizer):
    prompt = "data_Ca1Ti1O3\n_symmetry_space_group_name_H-M "
    for sg_width, expected in ((0, 4), (25, 25)):
        strategy = PUCTSearch(width=4, space_group_width=sg_width, branch_cutoff=1.0)
        run = TreeRun(strategy, random_model, tokenizer, prompt, torch.Generator().manual_seed(0),
                      None, None, "cpu")
        run.expand(run.root, run.root_state.logits)
        assert len(run.root.children) == expected


def test_bypass_chains_absorbs_forced_tokens(memorizing_model, tokenizer):
    path, prompt = memorizing_model
    model = load(path)
    shapes = {}
    for bypass in (True, False):
        strategy = PUCTSearch(num_simulations=6, bypass_chains=bypass, branch_cutoff=0.9, max_new_tokens=400)
        run = TreeRun(strategy, model, tokenizer, prompt, torch.Generator().manual_seed(0), None, None, "cpu")
        run.run()
        nodes, stack = [], [run.root]
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(node.children)
        shapes[bypass] = nodes
    # with bypass some edge holds a long forced chain; without, every edge is one token
    assert max(len(n.tokens) for n in shapes[True]) > 5
    assert max(len(n.tokens) for n in shapes[False]) == 1
    # without bypass, forced positions have a single child of prior 1
    assert any(len(n.children) == 1 and n.children[0].prior == 1.0 for n in shapes[False])


def test_node_state_extends_cache_and_matches_full_forward(random_model, tokenizer):
    strategy = PUCTSearch(num_simulations=5, cache_nodes=2, bypass_chains=False, max_new_tokens=60)
    run = TreeRun(strategy, random_model, tokenizer, "data_Na1Cl1\n", torch.Generator().manual_seed(1),
                  None, None, "cpu")
    run.run()
    node = run.root
    while node.children:
        node = max(node.children, key=lambda c: c.visits)
    run.states.clear()  # force a rebuild from the root's cache
    logits = run.state(node).logits
    ids = torch.tensor([run.prompt_ids + node.path_tokens()])
    with torch.no_grad():
        full, _ = random_model(ids)
    assert torch.allclose(logits[0], full[0, -1], atol=1e-4)
    assert len(run.states) <= 2


# -- reward ---------------------------------------------------------------------------------
def test_reward_direction_follows_the_scorer():
    for lower, better, worse in ((True, -5.0, -1.0), (False, 5.0, 1.0)):
        model = RewardModel(k=2.0, lower_is_better=lower)
        for value in (-5.0, -3.0, -1.0, 1.0, 3.0, 5.0):
            model.observe(value)
        good = model.reward(True, better)
        bad = model.reward(True, worse)
        assert 0 < bad < good < 1


def test_reward_gives_invalid_candidates_nothing():
    model = RewardModel()
    for value in (-5.0, -3.0, -1.0):
        model.observe(value)
    assert model.reward(False, math.nan) == 0.0  # unparsable or invalid
    assert model.reward(False, -100.0) == 0.0  # an invalid candidate's score never counts
    assert model.reward(True, math.nan) == 0.5  # valid, scorer failed: neutral
    assert model.reward(True, None, has_scorer=False) == 1.0
    # valid rewards stay in (0, 1) however far the score lies from the mean: c keeps its scale
    assert 0 < model.reward(True, 1e6) < model.reward(True, -3.0) < model.reward(True, -1e6) <= 1


def test_best_evaluations_order():
    e = [Evaluation("a", 1, True, False, 0.5, math.nan, 0, -0.5),
         Evaluation("b", 1, True, True, 1.0, -2.0, 1, 0.6),
         Evaluation("c", 1, True, True, 1.0, -3.0, 2, 0.7),
         Evaluation("d", 1, True, True, 1.0, math.nan, 3, 0.5)]
    assert [x.text for x in best_evaluations(e, 3, lower_is_better=True)] == ["c", "b", "d"]
    assert [x.text for x in best_evaluations(e, 2, lower_is_better=False)] == ["b", "c"]


# -- the strategy ---------------------------------------------------------------------------
def test_registered_with_options(plugin_manager):
    registry = plugin_manager.registry("search")
    puct = registry.create("puct", width="3", c="2.5", bypass_chains="false")
    assert isinstance(puct, PUCTSearch) and puct.width == 3 and puct.c == 2.5 and not puct.bypass_chains
    assert PUCTSearch().c == 5.0 and PUCTSearch().width == 10 and PUCTSearch().num_simulations == 200
    assert isinstance(registry.create("uct"), UCTSearch)
    assert registry.create("mcts-greedy", epsilon="0.3").epsilon == 0.3
    assert isinstance(registry.create("mcts-greedy"), GreedyTreeSearch)
    with pytest.raises(OptionError, match="width"):
        registry.create("puct", width="0")


@pytest.mark.parametrize("name", ["puct", "uct", "mcts-greedy"])
def test_search_finds_scored_candidates_and_writes_results(name, plugin_manager, memorizing_model,
                                                          tokenizer, tmp_path):
    path, prompt = memorizing_model
    results = tmp_path / "results.csv"
    strategy = plugin_manager.registry("search").create(
        name, num_simulations=12, n_rollouts=2, top_k=5, results_path=str(results))
    out = strategy.generate(load(path), tokenizer, [prompt], 3, generator=torch.Generator().manual_seed(0),
                            scorer=RandomScorer(), progress=False)
    samples = out[0]
    assert 1 <= len(samples) <= 3
    best = samples[0]
    assert best.extra["is_valid"] and 0 <= best.extra["score"] < 1 and 0 < best.extra["reward"] < 1
    assert set(best.extra) >= {"score", "reward", "is_valid", "simulation", "bond_length_score"}
    assert best.text.startswith(prompt)
    with open(results, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert 12 <= len(rows) <= 24 and rows[0]["cif"].startswith(prompt)
    assert any(r["is_valid"] == "True" for r in rows)


@pytest.mark.parametrize("cls", [PUCTSearch, UCTSearch, GreedyTreeSearch])
def test_reproducible_under_a_seed(cls, memorizing_model, tokenizer):
    path, prompt = memorizing_model
    model = load(path)

    def run(seed):
        strategy = cls(num_simulations=8, top_k=5, batch_leaves=2)
        strategy.generate(model, tokenizer, [prompt], 2, generator=torch.Generator().manual_seed(seed),
                          scorer=RandomScorer(), progress=False)
        return [(r["cif"], r["reward"]) for r in strategy.results]

    assert run(3) == run(3)


def test_n_best_overrides_n(random_model, tokenizer):
    strategy = UCTSearch(num_simulations=6, max_new_tokens=40, n_best=4)
    out = strategy.generate(random_model, tokenizer, ["data_Na1Cl1\n", "data_K1Br1\n"], 1,
                            generator=torch.Generator().manual_seed(0), progress=False)
    assert len(out) == 2 and all(len(s) == 4 for s in out)
    assert {r["prompt"] for r in strategy.results} == {0, 1}
    assert all(s.extra["reward"] == 0.0 for s in out[0])  # random weights: nothing parses, no reward


def test_runner_reuses_tree_scores_and_writes_results(memorizing_model, plugin_manager, tmp_path):
    """The run folder gets results.csv by itself, and candidates are not scored twice."""
    from crystalforge.generation.pipeline import make_pipeline
    from crystalforge.generation.prompts import make_specs
    from crystalforge.generation.runfolder import run_to_folder

    class CountingScorer(RandomScorer):
        calls = 0

        def score(self, cif):
            CountingScorer.calls += 1
            return super().score(cif)

    path, prompt = memorizing_model
    pipeline = make_pipeline(model=str(path), search="puct", scorer=CountingScorer(),
                             search_options={"num_simulations": 8, "top_k": 5}, seed=0,
                             plugin_manager=plugin_manager, progress=False)
    specs = make_specs(_formula(prompt))
    result = run_to_folder(pipeline, specs, 2, tmp_path / "out", settings={"search": "puct"})
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        rollouts = list(csv.DictReader(handle))
    # the tree scores each distinct text once; the runner must add no calls of its own
    scored_in_tree = {r["cif"] for r in rollouts if r["score"] not in ("", "nan")}
    assert rollouts and CountingScorer.calls == len(scored_in_tree)
    assert any(row["score"] not in (None, "", "nan") for row in result.rows)


# -- end to end with real processes ---------------------------------------------------------
def _server(script_args: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, *script_args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stderr.readline()
    match = re.search(r"tcp://127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"scorer server did not start: {line!r}")
    return proc, int(match.group(1))


def _run(model_path, prompt_formula, port, out, timeout="5"):
    return subprocess.run(
        [sys.executable, "-m", "crystalforge", "run", prompt_formula, "--model", str(model_path),
         "-n", "3", "--search", "puct", "-O", "num_simulations=16", "-O", "top_k=5",
         "--scorer", "zmq",
         "--scorer-opt", f"port={port}", "--scorer-opt", f"timeout={timeout}",
         "--scorer-opt", "max_failures=3", "--out", str(out), "--no-progress", "--device", "cpu"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _formula(prompt: str) -> str:
    return prompt.strip().removeprefix("data_")


@pytest.mark.slow
def test_run_puct_against_scorer_serve_process(memorizing_model, tmp_path):
    path, prompt = memorizing_model
    server, port = _server(["-m", "crystalforge", "scorer", "serve", "--scorer", "random", "--port", "0"])
    try:
        result = _run(path, _formula(prompt), port, tmp_path / "out")
        assert result.returncode == 0, result.stderr
    finally:
        server.terminate()
        assert server.wait(10) == 0
    assert "Stopped after" in server.stderr.read()
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scored = [r for r in rows if r["score"] not in ("nan", "")]
    assert scored and all(0 <= float(r["score"]) < 1 for r in scored)
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) >= 1 and summary[0]["is_valid"] == "True"
    assert len(list((tmp_path / "out").glob("*.cif"))) == len(summary)


DYING_SERVER = """
import os, sys
from crystalforge.scoring.server import ScorerServer
from crystalforge.scoring.random import RandomScorer

class DiesAfterTwo(RandomScorer):
    calls = 0
    def score(self, cif):
        type(self).calls += 1
        if type(self).calls > 2:
            os._exit(17)  # the server process dies mid-run, reply never sent
        return super().score(cif)

server = ScorerServer(DiesAfterTwo(), port=0)
server.start()
print(f"Serving on tcp://127.0.0.1:{server.port}", file=sys.stderr, flush=True)
server._thread.join()
"""


@pytest.mark.slow
def test_run_finishes_when_the_server_dies_halfway(memorizing_model, tmp_path):
    path, prompt = memorizing_model
    server, port = _server(["-c", DYING_SERVER])
    try:
        start = time.monotonic()
        result = _run(path, _formula(prompt), port, tmp_path / "out", timeout="1")
        elapsed = time.monotonic() - start
        assert result.returncode == 0, result.stderr
        assert server.wait(10) == 17  # it really died
    finally:
        if server.poll() is None:
            server.kill()
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    valid = [r for r in rows if r["is_valid"] == "True"]
    scored = [r for r in valid if r["score"] != "nan"]
    failed = [r for r in valid if r["score"] == "nan"]
    # rollouts repeating an already judged CIF reuse its score: count distinct CIFs
    assert len({r["cif"] for r in scored}) == 2, "expected two scores before the server died"
    assert failed, "expected failures recorded as nan after the server died"
    assert all(float(r["reward"]) == 0.5 for r in failed)
    assert "did not answer" in result.stderr
    assert elapsed < 120  # 3 timeouts of 1 s then the client stops asking (never asserted tighter)


def test_batched_rollouts_of_leaves_at_different_depths_match_one_by_one(random_model, tokenizer):
    from crystalforge.search.decode import greedy_pick

    strategy = PUCTSearch(num_simulations=4, bypass_chains=False, max_new_tokens=50)
    run = TreeRun(strategy, random_model, tokenizer, "data_Na1Cl1\n", torch.Generator().manual_seed(2),
                  None, None, "cpu")
    run.run()
    run.pick = greedy_pick  # deterministic picks: batched and single runs must agree
    shallow = run.root.children[0]
    deep = next(n for n in run.root.children if n.children).children[0]
    leaves = []
    for node in (shallow, deep):
        leaves.append((run.state(node), 2))
    assert leaves[0][0].cache.length != leaves[1][0].cache.length
    together = run.rollout_many(leaves)
    alone = [run.rollout(state, n) for state, n in leaves]
    assert together == alone
    assert all(len(ids) <= run.budget - len(run.prompt_ids) for group in together for ids, _ in group)


def test_batch_leaves_runs_every_simulation(memorizing_model, tokenizer):
    path, prompt = memorizing_model
    strategy = PUCTSearch(num_simulations=10, batch_leaves=4, top_k=5)
    out = strategy.generate(load(path), tokenizer, [prompt], 2, generator=torch.Generator().manual_seed(0),
                            scorer=RandomScorer(), progress=False)
    simulations = {r["simulation"] for r in strategy.results}
    assert simulations <= set(range(10)) and len(simulations) >= 5
    assert out[0][0].extra["is_valid"]


# -- reward, constraints and batching in real runs --------------------------------------------
class VolumeScorer:
    """A real, deterministic 'energy': the cell volume per atom of the parsed CIF (lower is better)."""

    lower_is_better = True

    def __init__(self):
        self.scored: list[str] = []

    def score(self, cif):
        from pymatgen.core import Structure

        self.scored.append(cif)
        structure = Structure.from_str(cif, fmt="cif")
        return structure.volume / len(structure)


def test_invalid_rollouts_get_no_reward_and_valid_ones_rank_by_score(memorizing_model, tokenizer):
    path, prompt = memorizing_model
    scorer = VolumeScorer()
    strategy = PUCTSearch(num_simulations=16, top_k=10, batch_leaves=4)
    run = TreeRun(strategy, load(path), tokenizer, prompt, torch.Generator().manual_seed(0), scorer, None, "cpu")
    evaluations = run.run()
    invalid = [e for e in evaluations if not e.is_valid]
    valid = [e for e in evaluations if e.is_valid]
    assert invalid and len(valid) >= 2, "the run must produce both kinds for the test to mean anything"
    assert all(e.reward == 0.0 and math.isnan(e.score) for e in invalid)
    assert all(row["reward"] == 0.0 for row in run.rows if not row["is_valid"])
    assert len(scorer.scored) == len({e.text for e in valid})  # the scorer saw valid candidates only, once each
    # under the final statistics, reward order is score order (lower volume, higher reward), all in (0, 1)
    final = sorted(valid, key=lambda e: e.score)
    rewards = [run.rewards.reward(True, e.score) for e in final]
    assert all(0 < r < 1 for r in rewards) and rewards == sorted(rewards, reverse=True)
    best = best_evaluations(evaluations, len(evaluations), lower_is_better=True)
    assert [e.text for e in best[: len(valid)]] == [e.text for e in final]


def _tree_nodes(root):
    nodes, stack = [], [root]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.children)
    return nodes


def _disallowed_edges(run, processor):
    """Count tree tokens the sampling strategies' masks forbid at their position."""
    bad = 0
    for node in _tree_nodes(run.root):
        if node is run.root:
            continue
        before = run.prompt_ids + node.parent.path_tokens()
        bound = processor.start([before])
        for token in node.tokens:
            allowed = torch.isfinite(bound(torch.zeros(1, run.model.config.vocab_size)))[0]
            bad += not bool(allowed[token])
            bound.advance([token])
    return bad


@pytest.mark.parametrize("constrain", ["composition", "all"])
def test_every_tree_token_passes_the_sampling_masks(random_model, tokenizer, constrain):
    from crystalforge.search.logits import make_processor

    processor = make_processor(constrain, tokenizer)  # what top-k sampling builds for this option
    counts = {}
    for option in ("none", constrain):
        strategy = PUCTSearch(num_simulations=12, width=8, top_k=8, branch_cutoff=1.0, max_new_tokens=30,
                              batch_leaves=3, constrain=option)
        run = TreeRun(strategy, random_model, tokenizer, "data_Na1Cl1\n", torch.Generator().manual_seed(0),
                      None, None, "cpu")
        run.run()
        assert len(_tree_nodes(run.root)) > 12
        counts[option] = _disallowed_edges(run, processor)
    assert counts["none"] > 0  # random weights do propose forbidden tokens: the check can fail
    assert counts[constrain] == 0


def test_tree_branches_no_wider_than_top_k(random_model, tokenizer):
    strategy = PUCTSearch(num_simulations=6, width=10, top_k=3, branch_cutoff=1.0, max_new_tokens=20)
    run = TreeRun(strategy, random_model, tokenizer, "data_Na1Cl1\n", torch.Generator().manual_seed(0),
                  None, None, "cpu")
    run.run()
    widths = [len(n.children) for n in _tree_nodes(run.root) if n.expanded]
    assert widths and max(widths) == 3


def test_leaves_of_one_iteration_roll_out_in_one_batch(tmp_path, tokenizer):
    """batch_leaves=4: the four rollouts of an iteration take one decoding pass of four rows."""
    from crystalforge.model.checkpoint import load_model
    from crystalforge.testing import write_tiny_model

    steps = 25
    calls = {}
    for batch_leaves in (1, 4):
        model = load_model(write_tiny_model(tmp_path / f"m{batch_leaves}.pt", block_size=256))
        rows: list[int] = []
        original = model.forward_cached

        def counted(idx, *args, _original=original, _rows=rows, **kwargs):
            _rows.append(idx.size(0))
            return _original(idx, *args, **kwargs)

        model.forward_cached = counted
        strategy = PUCTSearch(num_simulations=4, batch_leaves=batch_leaves, bypass_chains=False,
                              branch_cutoff=1.0, max_new_tokens=steps, constrain="none")
        run = TreeRun(strategy, model, tokenizer, "data_Na1Cl1\n", torch.Generator().manual_seed(0),
                      None, None, "cpu")
        rows.clear()  # the prompt's prefill is not part of a simulation
        run.run()
        assert len({r["simulation"] for r in run.rows}) == 4
        calls[batch_leaves] = list(rows)
    # one leaf at a time: about 4 x steps calls of one row; four together: one pass of 4-row steps
    assert max(calls[1]) == 1 and len(calls[1]) > 3 * (steps - 1)
    assert max(calls[4]) == 4 and len(calls[4]) <= 4 + steps
