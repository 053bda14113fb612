"""One tree search for one prompt: select, evaluate, expand, roll out, back-propagate.

Each simulation descends the tree with the strategy's selector to a leaf, evaluates the
leaf's next-token distribution, expands it over the ``width`` most likely tokens,
completes the leaf ``n_rollouts`` times (one batch; ``batch_leaves`` leaves together under
a virtual loss), validates and scores each completion and back-propagates the rewards.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

import torch
from tqdm.auto import tqdm

from ...generation.ranking import scorer_lower_is_better
from ..decode import NEWLINE_ID, make_picker
from ..logits import make_processor
from .builder import TreeBuilder
from .evaluation import Evaluation, Judge
from .states import PrefixState, PrefixStates
from .tree import Node, RewardModel

if TYPE_CHECKING:  # strategies imports this module
    from .strategies import TreeSearch


class TreeRun(PrefixStates, TreeBuilder, Judge):
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
            from ...errors import SequenceTooLongError

            raise SequenceTooLongError(
                f"prompt has {len(self.prompt_ids)} tokens but the model's context window is {self.block_size}")
        self.budget = len(self.prompt_ids) + strategy.max_new_tokens  # most tokens of a candidate
        self.pick = make_picker(temperature=strategy.temperature, top_k=strategy.top_k)
        self.processor = make_processor(getattr(strategy, "constrain", "none"), tokenizer,
                                        getattr(strategy, "elements", ""), getattr(strategy, "max_atoms", 0))
        self.rewards = RewardModel(k=strategy.reward_k,
                                   lower_is_better=scorer_lower_is_better(scorer))
        self.sg_tokens = self._space_group_prefix()
        self.root = Node()
        self.states: OrderedDict[int, PrefixState] = OrderedDict()
        self.root_state = self.prefill(self.prompt_ids)
        self.seen: dict[str, Evaluation] = {}
        self.rows: list[dict[str, Any]] = []

    def select(self, node: Node) -> Node:
        return self.s.select_child(node, lambda: float(torch.rand(1, generator=self.generator)))

    # -- the loop -------------------------------------------------------------------------
    def _finish_terminal(self, node: Node, simulation: int) -> None:
        ids = node.path_tokens()
        evaluation = self.judge(ids, self._ends(ids), simulation)
        self._record(evaluation, simulation, 0)
        node.backpropagate(evaluation.reward)

    def simulate(self, first: int, count: int) -> int:
        """Run up to ``count`` simulations whose leaves are rolled out in one batch.

        Leaves are chosen one after another under a virtual loss (a pending visit with
        reward 0, the lowest reward, along the path), so a batch spreads over the tree; all
        the batch's leaves are completed in one call of the batched decoder. Returns the
        number of simulations done.
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
    """Add (``sign=+1``) or remove (``-1``) a pending visit with reward 0 along the path."""
    current: Node | None = node
    while current is not None:
        current.visits += sign
        current = current.parent
