"""Monte Carlo tree search over token prefixes, steered by validity and a scorer.

Each simulation descends the tree with a selector (PUCT, UCT or epsilon-greedy) to a
leaf, evaluates the leaf's next-token distribution, expands it over the ``width`` most
likely tokens (priors = renormalised probabilities), completes the leaf ``n_rollouts``
times by sampling (one batch), validates and scores each completion, and
back-propagates the rewards.

Speed: a node's keys/values are never recomputed from the prompt. The deepest cached
ancestor's KV cache is cloned and extended by the node's edge tokens only (one prefill
call); caches of recently used nodes are kept (``cache_nodes``), the root's always. The
rollouts of a leaf share one batch expanded from the leaf's cache.

Context-sensitive tree builder: where the most likely token's probability exceeds
``branch_cutoff`` the node does not branch; with ``bypass_chains`` such forced tokens are
absorbed into the node's edge (no chains of only-children); at the space-group position
the node may branch wider (``space_group_width``).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Any, Callable, Sequence

import attrs
import torch
from tqdm.auto import tqdm

from ..errors import OptionError
from .base import Sample
from .decode import NEWLINE_ID, make_picker, sample_batch
from .decode import extend as extend_cache
from .decode import stack as stack_caches
from .logits import make_processor
from ..generation.ranking import scorer_lower_is_better
from .tree import (Node, RewardModel, child_priors, epsilon_greedy_select, puct_select,
                   uct_select)

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ("prompt", "simulation", "rollout", "n_tokens", "finished", "is_valid",
                  "bond_length_score", "score", "reward", "cif")
SPACE_GROUP_KEY = "_symmetry_space_group_name_H-M"


def _positive(instance, attribute, value) -> None:
    if value <= 0:
        raise OptionError(f"Option '{attribute.name}' must be positive, got {value}")


def _non_negative(instance, attribute, value) -> None:
    if value < 0:
        raise OptionError(f"Option '{attribute.name}' must be >= 0, got {value}")


def _check_constrain(instance, attribute, value) -> None:
    from .logits import parse_constraints

    try:
        parse_constraints(value)
    except ValueError as exc:
        raise OptionError(f"Option 'constrain': {exc}") from None


@attrs.define
class Evaluation:
    """What one completed candidate was worth."""

    text: str
    n_tokens: int
    finished: bool
    is_valid: bool
    bond_length_score: float | None
    score: float
    simulation: int
    reward: float = 0.0


@attrs.define(eq=False)
class PrefixState:
    """What the model knows after a token prefix: its KV cache, next-token logits, the ids.

    ``ids`` is the whole prefix (prompt included); the cache holds its last
    ``block_size`` tokens at most (the sliding window).
    """

    cache: Any
    logits: torch.Tensor  # [1, V]
    ids: list[int]


class TreeRun:
    """One tree search for one prompt. Subclass to change how states and rollouts are computed."""

    def __init__(self, strategy: "TreeSearch", model: Any, tokenizer: Any, prompt: str,
                 generator: torch.Generator, scorer: Any, validate: Callable[[str], Any] | None,
                 device: Any, prompt_index: int = 0) -> None:
        self.s = strategy
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.prompt_ids = list(tokenizer.encode(prompt))
        self.generator = generator
        self.scorer = scorer
        self.validate = validate
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.prompt_index = prompt_index
        self.newline = getattr(tokenizer, "newline_id", NEWLINE_ID)
        self.block_size = int(model.config.block_size)
        if len(self.prompt_ids) >= self.block_size:
            from ..errors import SequenceTooLongError

            raise SequenceTooLongError(
                f"prompt has {len(self.prompt_ids)} tokens but the model's context window is {self.block_size}")
        self.budget = len(self.prompt_ids) + strategy.max_new_tokens  # most tokens of a candidate
        self.pick = make_picker(temperature=strategy.temperature, top_k=strategy.top_k)
        self.processor = make_processor(getattr(strategy, "constrain", "none"), tokenizer)
        self.rewards = RewardModel(k=strategy.reward_k,
                                   lower_is_better=scorer_lower_is_better(scorer))
        self.sg_tokens = self._space_group_prefix()
        self.root = Node()
        self.states: OrderedDict[int, PrefixState] = OrderedDict()
        self.root_state = self.prefill(self.prompt_ids)
        self.seen: dict[str, Evaluation] = {}
        self.rows: list[dict[str, Any]] = []

    # -- model work (overridden by the recomputing reference in bench/mcts.py) -----------
    @torch.no_grad()
    def prefill(self, ids: list[int]) -> PrefixState:
        """Return the state after the prompt."""
        cache = self.model.new_cache(1, max_len=min(self.block_size, self.budget))
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        return PrefixState(cache, self.model.forward_cached(idx, cache)[:, -1, :], list(ids))

    @torch.no_grad()
    def extend(self, state: PrefixState, tokens: list[int], copy: bool = True) -> PrefixState:
        """Return the state after appending ``tokens`` to ``state`` (cloned unless ``copy=False``).

        Past the context window the cache is the window of the new prefix, prefilled again.
        """
        cache = state.cache.clone() if copy else state.cache
        ids = state.ids + list(tokens)
        cache, logits = extend_cache(self.model, cache, state.ids, tokens, room=self.budget - len(ids))
        return PrefixState(cache, logits, ids)

    def masked_logits(self, state: PrefixState) -> torch.Tensor:
        """Return the state's next-token logits with the strategy's constraints applied."""
        if self.processor is None:
            return state.logits
        return self.processor.start([state.ids])(state.logits)

    @torch.no_grad()
    def rollout(self, state: PrefixState, n: int) -> list[tuple[list[int], bool]]:
        """Complete ``state`` ``n`` times by sampling; return ``(ids, finished)`` per row."""
        return self.rollout_many([(state, n)])[0]

    @torch.no_grad()
    def rollout_many(self, leaves: Sequence[tuple[PrefixState, int]]) -> list[list[tuple[list[int], bool]]]:
        """Complete several leaves in one batch of the shared decoding engine: ``(state, n)`` each.

        The leaves' caches (of different lengths) are stacked right-aligned into one
        cache, the gap on the left of shorter rows marked as padding, so every row keeps
        its own positions. Rollouts get the strategy's logits constraints and slide past
        the context window like sampling does. Returns, per leaf, ``n`` ``(ids, finished)``.
        """
        states = [state for state, _ in leaves]
        counts = [n for _, n in leaves]
        limits = [self.budget - len(state.ids) for state in states]
        if len(leaves) == 1:
            only = states[0].cache
            cache = only.clone() if counts[0] == 1 else only  # the engine extends a lone row in place
        else:
            cache = stack_caches(self.model, [st.cache for st in states], [1] * len(states), max(limits))
        decoded = sample_batch(
            self.model, [st.ids for st in states], repeats=counts, max_new_tokens=limits, pick_next=self.pick,
            generator=self.generator, newline_id=self.newline, processor=self.processor, cache=cache,
            last_logits=torch.cat([st.logits for st in states]),
            generated=[len(st.ids) - len(self.prompt_ids) for st in states],
        )
        grouped, start = [], 0
        for n in counts:
            grouped.append([(row.ids, row.finished) for row in decoded[start:start + n]])
            start += n
        return grouped

    # -- tree -----------------------------------------------------------------------------
    def _space_group_prefix(self) -> list[int]:
        stoi = getattr(self.tokenizer, "stoi", {})
        if SPACE_GROUP_KEY in stoi and " " in stoi:
            return [stoi[SPACE_GROUP_KEY], stoi[" "]]
        return []

    def _ends(self, node_ids: list[int]) -> bool:
        """Whether the generated tokens end with the end-of-CIF marker (prompt tokens never count)."""
        tail = node_ids[-2:]
        return len(tail) == 2 and tail[0] == self.newline and tail[1] == self.newline

    def state(self, node: Node) -> PrefixState:
        """Return the state after ``node``'s prefix, extending the deepest cached ancestor."""
        if node is self.root:
            return self.root_state
        if node.parent is not None and id(node) in self.states:
            self.states.move_to_end(id(node))
            return self.states[id(node)]
        chain: list[Node] = []
        ancestor = node
        while ancestor is not self.root and id(ancestor) not in self.states:
            chain.append(ancestor)
            ancestor = ancestor.parent  # type: ignore[assignment]
        base = self.root_state if ancestor is self.root else self.states[id(ancestor)]
        tokens = [t for n in reversed(chain) for t in n.tokens]
        state = self.extend(base, tokens)
        self._remember(node, state)
        return state

    def _remember(self, node: Node, state) -> None:
        self.states[id(node)] = state
        self.states.move_to_end(id(node))
        while len(self.states) > self.s.cache_nodes:
            self.states.popitem(last=False)

    def evaluate_leaf(self, node: Node) -> PrefixState:
        """Compute the leaf's state; absorb forced tokens into its edge when bypassing chains."""
        state = self.state(node)
        ids = node.path_tokens()
        if self._ends(ids) or len(self.prompt_ids) + len(ids) >= self.budget:
            node.terminal = True
            return state
        if self.s.bypass_chains and node is not self.root:
            extended = False
            bound = self.processor.start([state.ids]) if self.processor is not None else None
            while True:
                logits = bound(state.logits) if bound is not None else state.logits
                probs = torch.softmax(logits[0].float() / max(self.s.temperature, 1e-6), dim=-1)
                top_p, top = torch.max(probs, dim=-1)
                if float(top_p) <= self.s.branch_cutoff or len(self.prompt_ids) + node.length >= self.budget:
                    break
                # the leaf's cache is its own (built for it by state()): extend it in place
                extended = True
                token = int(top)
                state = self.extend(state, [token], copy=False)
                if bound is not None:
                    bound.advance([token])
                node.tokens = node.tokens + (token,)
                node.length += 1
                ids.append(token)
                if self._ends(ids):
                    node.terminal = True
                    break
            if extended:
                self._remember(node, state)
            if len(self.prompt_ids) + node.length >= self.budget:
                node.terminal = True
        return state

    def expand(self, node: Node, logits: torch.Tensor) -> None:
        """Add the node's children (context-sensitive width and branching)."""
        probs = torch.softmax(logits[0].float() / max(self.s.temperature, 1e-6), dim=-1).tolist()
        width = self.s.width
        ids = self.prompt_ids + node.path_tokens()
        if self.s.space_group_width > 0 and self.sg_tokens and ids[-2:] == self.sg_tokens:
            width = self.s.space_group_width
        for token, prior in child_priors(probs, width, self.s.branch_cutoff):
            node.add_child([token], prior)
        node.expanded = True

    def select(self, node: Node) -> Node:
        return self.s.select_child(node, lambda: float(torch.rand(1, generator=self.generator)))

    # -- candidates -----------------------------------------------------------------------
    def judge(self, ids: list[int], finished: bool, simulation: int) -> Evaluation:
        """Validate and score one completion (memoised by text); return its evaluation."""
        text = self.tokenizer.decode(self.prompt_ids + ids)
        known = self.seen.get(text)
        if known is not None:
            known.reward = self._reward(known)
            return known
        cif = _postprocess(text)
        is_valid, bls = False, None
        if cif is not None:
            report = self.validate(text) if self.validate is not None else _default_validate(cif)
            if report is None:
                is_valid, bls = True, 1.0
            else:
                is_valid, bls = bool(report.is_valid), report.bond_length_score
        score = math.nan
        if is_valid and self.scorer is not None:
            try:
                score = float(self.scorer.score(cif))
            except Exception as exc:  # a scorer failure on one candidate is a failed score
                logger.warning("scorer failed: %s: %s", type(exc).__name__, exc)
            self.rewards.observe(score)
        evaluation = Evaluation(text=text, n_tokens=len(ids), finished=finished, is_valid=is_valid,
                                bond_length_score=bls, score=score, simulation=simulation)
        evaluation.reward = self._reward(evaluation)
        self.seen[text] = evaluation
        return evaluation

    def _reward(self, e: Evaluation) -> float:
        return self.rewards.reward(e.is_valid, e.bond_length_score, e.score, self.scorer is not None)

    def _record(self, e: Evaluation, simulation: int, rollout: int) -> None:
        self.rows.append({
            "prompt": self.prompt_index, "simulation": simulation, "rollout": rollout,
            "n_tokens": e.n_tokens, "finished": e.finished, "is_valid": e.is_valid,
            "bond_length_score": e.bond_length_score, "score": e.score, "reward": e.reward,
            "cif": e.text,
        })

    # -- the loop -------------------------------------------------------------------------
    def _finish_terminal(self, node: Node, simulation: int) -> None:
        ids = node.path_tokens()
        evaluation = self.judge(ids, self._ends(ids), simulation)
        self._record(evaluation, simulation, 0)
        node.backpropagate(evaluation.reward)

    def simulate(self, first: int, count: int) -> int:
        """Run up to ``count`` simulations whose leaves are rolled out in one batch.

        Leaves are chosen one after another under a virtual loss (a pending visit with
        reward -1 along the path), so a batch spreads over the tree. Returns the number of
        simulations done.
        """
        leaves: list[tuple[Node, PrefixState, int]] = []
        done = 0
        while done < count:
            node = self.root
            while node.expanded and node.children and not node.terminal:
                node = self.select(node)
            simulation = first + done
            if node.terminal:
                self._finish_terminal(node, simulation)
                done += 1
                continue
            if any(node is leaf for leaf, _, _ in leaves):
                break  # the tree offers no other leaf right now: roll out what we have
            state = self.evaluate_leaf(node)
            done += 1
            if node.terminal:
                self._finish_terminal(node, simulation)
                continue
            if self.s.max_depth <= 0 or node.depth < self.s.max_depth:
                self.expand(node, self.masked_logits(state))
            _virtual_loss(node, +1)  # undone before the real rewards arrive
            leaves.append((node, state, simulation))
        for node, _, _ in leaves:
            _virtual_loss(node, -1)
        if not leaves:
            return done
        prefixes = [node.path_tokens() for node, _, _ in leaves]
        batch = [(state, self.s.n_rollouts) for _, state, _ in leaves]
        for (node, _, simulation), ids, rollouts in zip(leaves, prefixes, self.rollout_many(batch)):
            for rollout, (more, finished) in enumerate(rollouts):
                evaluation = self.judge(ids + more, finished, simulation)
                self._record(evaluation, simulation, rollout)
                node.backpropagate(evaluation.reward)
        return done

    def run(self, progress: bool = False) -> list[Evaluation]:
        """Run ``num_simulations`` simulations; return every distinct candidate judged."""
        total = self.s.num_simulations
        with tqdm(total=total, desc="mcts", unit="sim", disable=not progress, dynamic_ncols=True) as bar:
            simulation = 0
            while simulation < total and not self.root.terminal:
                done = self.simulate(simulation, min(self.s.batch_leaves, total - simulation))
                simulation += done
                bar.update(done)
        return list(self.seen.values())


def _virtual_loss(node: Node, sign: int) -> None:
    """Add (``sign=+1``) or remove (``-1``) a pending visit with reward -1 along the path."""
    current: Node | None = node
    while current is not None:
        current.visits += sign
        current.value_sum -= sign
        current = current.parent


def _postprocess(text: str) -> str | None:
    from ..cif.postprocess import postprocess_cif

    try:
        return postprocess_cif(text)
    except Exception:  # noqa: BLE001 - generated text is hostile input
        return None


def _default_validate(cif: str) -> Any:
    from ..validation.report import validate

    return validate(cif)


def best_evaluations(evaluations: Sequence[Evaluation], n: int, lower_is_better: bool) -> list[Evaluation]:
    """Return the ``n`` best candidates: valid before invalid, then by score, then by reward."""
    from ..generation.ranking import score_order

    def key(e: Evaluation) -> tuple:
        return (not e.is_valid, *score_order(e.score, lower_is_better), -e.reward, e.simulation)

    return sorted(evaluations, key=key)[:n]


@attrs.define
class TreeSearch:
    """Common options and driver of the tree searches; subclasses choose the selector."""

    width: int = attrs.field(default=10, validator=_positive,
                             metadata={"help": "children per expanded node (most likely tokens)"})
    num_simulations: int = attrs.field(default=200, validator=_positive,
                                       metadata={"help": "simulations (leaf expansions) per prompt"})
    n_rollouts: int = attrs.field(default=1, validator=_positive,
                                  metadata={"help": "completions sampled per leaf (one batch)"})
    temperature: float = attrs.field(default=1.0, validator=_positive,
                                     metadata={"help": "softmax temperature of priors and rollouts"})
    top_k: int = attrs.field(default=10, validator=_non_negative,
                             metadata={"help": "rollouts sample among the k most likely tokens (0: all)"})
    max_new_tokens: int = attrs.field(default=1000, validator=_positive,
                                      metadata={"help": "most tokens generated after the prompt"})
    max_depth: int = attrs.field(default=0, validator=_non_negative,
                                 metadata={"help": "deepest node expanded (0: no limit)"})
    branch_cutoff: float = attrs.field(default=0.99, validator=_positive,
                                       metadata={"help": "no branching where the top token's probability exceeds this"})
    bypass_chains: bool = attrs.field(default=True,
                                      metadata={"help": "absorb forced (non-branching) tokens into one node"})
    space_group_width: int = attrs.field(default=0, validator=_non_negative,
                                         metadata={"help": "children at the space-group position (0: width)"})
    reward_k: float = attrs.field(default=2.0, validator=_positive,
                                  metadata={"help": "steepness of the score-to-reward logistic"})
    batch_leaves: int = attrs.field(default=1, validator=_positive,
                                    metadata={"help": "leaves rolled out together per batch (virtual loss)"})
    n_best: int = attrs.field(default=0, validator=_non_negative,
                              metadata={"help": "best candidates returned per prompt (0: n)"})
    constrain: str = attrs.field(default="all", validator=_check_constrain, metadata={
        "help": "logits masks of priors and rollouts, as the sampling strategies' constrain option"})
    cache_nodes: int = attrs.field(default=16, validator=_positive,
                                   metadata={"help": "tree nodes whose KV cache is kept (memory vs speed)"})
    results_path: str = attrs.field(default="", metadata={"help": "CSV of every scored rollout ('' : none)"})
    results: list[dict[str, Any]] = attrs.field(factory=list, init=False, metadata={"option": False})
    run_class: type = attrs.field(default=TreeRun, init=False, metadata={"option": False})

    def select_child(self, node: Node, uniform: Callable[[], float]) -> Node:
        raise NotImplementedError

    def artifacts(self) -> dict[str, list[dict[str, Any]]]:
        """Return the extra tables of the search for the run folder: every scored rollout."""
        return {"results.csv": list(self.results)} if self.results else {}

    def generate(self, model: Any, tokenizer: Any, prompts: Sequence[str], n: int, *,
                 generator: Any, device: Any = "cpu", batch_size: int = 32, scorer: Any = None,
                 validate: Callable[[str], Any] | None = None, progress: bool = True) -> list[list[Sample]]:
        """Search a tree per prompt; return each prompt's best candidates (``n_best`` or ``n``).

        Each :class:`Sample` has ``extra`` with ``score``, ``reward``, ``is_valid``,
        ``bond_length_score`` and ``simulation``. Every scored rollout is kept in
        :attr:`results` and written to ``results_path`` when set.

        Raises:
            SequenceTooLongError: a prompt does not fit the model's context window.
        """
        if generator is None or not isinstance(generator, torch.Generator):
            generator = torch.Generator().manual_seed(0)
        wanted = self.n_best or n
        lower = scorer_lower_is_better(scorer)
        out: list[list[Sample]] = []
        first = max((r["prompt"] for r in self.results), default=-1) + 1  # numbering across calls
        for index, prompt in enumerate(prompts):
            run = self.run_class(self, model, tokenizer, prompt, generator, scorer, validate, device,
                                 prompt_index=first + index)
            evaluations = run.run(progress=progress)
            self.results.extend(run.rows)
            out.append([
                Sample(text=e.text, n_tokens=e.n_tokens, finished=e.finished,
                       extra={"score": e.score, "reward": e.reward, "is_valid": e.is_valid,
                              "bond_length_score": e.bond_length_score, "simulation": e.simulation})
                for e in best_evaluations(evaluations, wanted, lower)
            ])
            if self.results_path:
                write_results(self.results_path, self.results)
        return out


def write_results(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Write every scored rollout as CSV (atomically), one row per rollout."""
    from ..util import plain_cell, write_csv

    write_csv(path, rows, RESULT_COLUMNS, cell=plain_cell)


@attrs.define
class PUCTSearch(TreeSearch):
    """Monte Carlo tree search with PUCT selection: Q + c * prior * sqrt(N) / (1 + n)."""

    c: float = attrs.field(default=5.0, validator=_non_negative, metadata={"help": "exploration constant"})

    def select_child(self, node: Node, uniform: Callable[[], float]) -> Node:
        return puct_select(node, self.c)


@attrs.define
class UCTSearch(TreeSearch):
    """Monte Carlo tree search with UCT selection: Q + c * sqrt(ln N / n), unvisited first."""

    c: float = attrs.field(default=5.0, validator=_non_negative, metadata={"help": "exploration constant"})

    def select_child(self, node: Node, uniform: Callable[[], float]) -> Node:
        return uct_select(node, self.c)


@attrs.define
class GreedyTreeSearch(TreeSearch):
    """Monte Carlo tree search with epsilon-greedy selection (best mean reward, else random)."""

    epsilon: float = attrs.field(default=0.1, validator=_non_negative,
                                 metadata={"help": "probability of a uniformly random child"})

    def select_child(self, node: Node, uniform: Callable[[], float]) -> Node:
        return epsilon_greedy_select(node, self.epsilon, uniform)
