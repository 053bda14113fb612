"""The tree-search strategies (registered as ``puct``, ``uct``, ``mcts-greedy``): options,
the driver over prompts, and the selector each one uses."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs
import torch

from ...errors import OptionError
from ...generation.ranking import scorer_lower_is_better
from ..base import Sample
from ..sampling import (_check_constrain, _elements_field, _max_atoms_field,  # the options sampling declares too
                        _positive)
from .evaluation import best_evaluations, write_results
from .run import TreeRun
from .tree import Node, epsilon_greedy_select, puct_select, uct_select


def _non_negative(instance, attribute, value) -> None:
    if value < 0:
        raise OptionError(f"Option '{attribute.name}' must be >= 0, got {value}")


def _unit_interval(instance, attribute, value) -> None:
    if not 0.0 <= value <= 1.0:
        raise OptionError(f"Option '{attribute.name}' must be between 0 and 1, got {value}")


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
    max_backup: float = attrs.field(default=0.0, validator=_unit_interval, metadata={
        "help": "weight of the best reward below a node in its value (0: mean reward, 1: best, for best-of-n)"})
    batch_leaves: int = attrs.field(default=1, validator=_positive,
                                    metadata={"help": "leaves rolled out together per batch (virtual loss)"})
    n_best: int = attrs.field(default=0, validator=_non_negative,
                              metadata={"help": "best candidates returned per prompt (0: n)"})
    constrain: str = attrs.field(default="all", validator=_check_constrain, metadata={
        "help": "logits masks of priors and rollouts, as the sampling strategies' constrain option"})
    elements: str = _elements_field()
    max_atoms: int = _max_atoms_field()
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


@attrs.define
class PUCTSearch(TreeSearch):
    """Monte Carlo tree search with PUCT selection: Q + c * prior * sqrt(N) / (1 + n)."""

    c: float = attrs.field(default=5.0, validator=_non_negative, metadata={"help": "exploration constant"})

    def select_child(self, node: Node, uniform: Callable[[], float]) -> Node:
        return puct_select(node, self.c, max_backup=self.max_backup)


@attrs.define
class UCTSearch(TreeSearch):
    """Monte Carlo tree search with UCT selection: Q + c * sqrt(ln N / n), unvisited first."""

    c: float = attrs.field(default=5.0, validator=_non_negative, metadata={"help": "exploration constant"})

    def select_child(self, node: Node, uniform: Callable[[], float]) -> Node:
        return uct_select(node, self.c, max_backup=self.max_backup)


@attrs.define
class GreedyTreeSearch(TreeSearch):
    """Monte Carlo tree search with epsilon-greedy selection (best mean reward, else random)."""

    epsilon: float = attrs.field(default=0.1, validator=_non_negative,
                                 metadata={"help": "probability of a uniformly random child"})

    def select_child(self, node: Node, uniform: Callable[[], float]) -> Node:
        return epsilon_greedy_select(node, self.epsilon, uniform, max_backup=self.max_backup)
