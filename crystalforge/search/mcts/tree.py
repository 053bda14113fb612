"""The pieces of Monte Carlo tree search over token prefixes, free of any model.

- :class:`Node`: one token prefix (its edge may hold several tokens when a chain of
  only-children was bypassed), with prior, visit count and value sum.
- Selectors: :func:`puct_select`, :func:`uct_select`, :func:`epsilon_greedy_select` pick
  the child to descend into; :func:`puct_scores` and :func:`uct_scores` expose the formulas.
- :func:`child_priors`: the context-sensitive tree builder's branching rule.
- :class:`RewardModel`: 0 for invalid candidates, a running-normalised logistic of the
  score in (0, 1) for valid ones.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import attrs


@attrs.define(eq=False)
class Node:
    """A token prefix in the search tree.

    Attributes:
        tokens: token ids on the edge from the parent (one, or several after a bypassed chain).
        prior: the probability of this edge under the model (normalised among siblings).
        visits, value_sum: back-propagated rollout count and reward sum.
        best: the highest reward back-propagated through this node (0 when unvisited).
        terminal: the prefix ends the CIF (end marker or no room left): nothing to expand.
        expanded: children were created (a leaf is not expanded).
    """

    tokens: tuple[int, ...] = ()
    parent: "Node | None" = attrs.field(default=None, repr=False)
    prior: float = 1.0
    depth: int = 0
    length: int = 0  # generated tokens from the root to the end of this node
    children: list["Node"] = attrs.field(factory=list, repr=False)
    visits: int = 0
    value_sum: float = 0.0
    best: float = 0.0
    terminal: bool = False
    expanded: bool = False

    @property
    def q(self) -> float:
        """Mean reward of the rollouts through this node (0 when unvisited)."""
        return self.value_sum / self.visits if self.visits else 0.0

    def value(self, max_backup: float = 0.0) -> float:
        """The node's value for selection: ``(1 - m) * mean + m * best`` reward, ``m = max_backup``.

        ``m = 0`` is the mean (the usual backup: which prefix is good on average);
        ``m = 1`` the best reward seen below the node, the single-player-MCTS backup for a
        search that keeps only its best candidate (which prefix led to the best one).
        """
        if not self.visits:
            return 0.0
        if max_backup <= 0.0:
            return self.q
        return (1.0 - max_backup) * self.q + max_backup * self.best

    def path_tokens(self) -> list[int]:
        """Return the generated token ids from the root to this node (prompt excluded)."""
        parts = []
        node: Node | None = self
        while node is not None:
            parts.append(node.tokens)
            node = node.parent
        return [t for part in reversed(parts) for t in part]

    def add_child(self, tokens: Sequence[int], prior: float) -> "Node":
        child = Node(tokens=tuple(tokens), parent=self, prior=prior, depth=self.depth + 1,
                     length=self.length + len(tokens))
        self.children.append(child)
        return child

    def backpropagate(self, reward: float) -> None:
        """Add one visit with ``reward`` to this node and every ancestor."""
        node: Node | None = self
        while node is not None:
            node.visits += 1
            node.value_sum += reward
            node.best = max(node.best, reward)
            node = node.parent


# -- selectors ----------------------------------------------------------------------------
def puct_scores(node: Node, c: float, max_backup: float = 0.0) -> list[float]:
    """Return ``Q(child) + c * P(child) * sqrt(N(node)) / (1 + N(child))`` per child.

    ``Q`` is :meth:`Node.value` (the mean reward, or with ``max_backup`` a blend with the best).
    """
    root_visits = math.sqrt(max(node.visits, 1))
    return [ch.value(max_backup) + c * ch.prior * root_visits / (1 + ch.visits) for ch in node.children]


def uct_scores(node: Node, c: float, max_backup: float = 0.0) -> list[float]:
    """Return ``Q(child) + c * sqrt(ln N(node) / N(child))`` per child (``inf`` if unvisited)."""
    log_visits = math.log(max(node.visits, 1))
    return [
        ch.value(max_backup) + c * math.sqrt(log_visits / ch.visits) if ch.visits else math.inf
        for ch in node.children
    ]


def _argmax(node: Node, scores: Sequence[float]) -> Node:
    # ties broken by the prior, then by order (the more likely token first)
    best = max(range(len(scores)), key=lambda i: (scores[i], node.children[i].prior, -i))
    return node.children[best]


def puct_select(node: Node, c: float = 5.0, uniform: Callable[[], float] | None = None,
                max_backup: float = 0.0) -> Node:
    """Return the child with the highest PUCT score (AlphaZero's rule)."""
    return _argmax(node, puct_scores(node, c, max_backup))


def uct_select(node: Node, c: float = 5.0, uniform: Callable[[], float] | None = None,
               max_backup: float = 0.0) -> Node:
    """Return the child with the highest UCT score; unvisited children first, likeliest first."""
    return _argmax(node, uct_scores(node, c, max_backup))


def epsilon_greedy_select(node: Node, epsilon: float = 0.1,
                          uniform: Callable[[], float] | None = None, max_backup: float = 0.0) -> Node:
    """Return a uniformly random child with probability ``epsilon``, else the best mean reward.

    Unvisited children count with their parent's mean reward, so a likely unexplored
    token is tried before a proven-bad one. ``uniform()`` draws from [0, 1) (seeded).
    """
    if uniform is not None and epsilon > 0 and uniform() < epsilon:
        index = min(int(uniform() * len(node.children)), len(node.children) - 1)
        return node.children[index]
    return _argmax(node, [ch.value(max_backup) if ch.visits else node.value(max_backup)
                          for ch in node.children])


# -- tree builder -------------------------------------------------------------------------
def child_priors(probs: Sequence[float], width: int, branch_cutoff: float = 1.0) -> list[tuple[int, float]]:
    """Return the ``(token, prior)`` children of a node given its next-token ``probs``.

    The ``width`` most likely tokens (with non-zero probability), priors renormalised to
    sum to 1, most likely first. When the most likely token's probability exceeds
    ``branch_cutoff`` the node does not branch: its only child is that token (prior 1).
    """
    ranked = sorted(((p, t) for t, p in enumerate(probs) if p > 0), key=lambda x: (-x[0], x[1]))
    if not ranked:
        return []
    if ranked[0][0] > branch_cutoff:
        return [(ranked[0][1], 1.0)]
    top = ranked[: max(1, width)]
    total = sum(p for p, _ in top)
    return [(t, p / total) for p, t in top]


# -- reward -------------------------------------------------------------------------------
@attrs.define
class RewardModel:
    """Turn (validity, scorer value) into a reward in [0, 1].

    - invalid or unparsable candidate: 0, whatever the scorer would say (the scorer is never
      consulted for it). CrystaLLM's evaluator gives such candidates a penalty instead
      (-1, or minus the share of unreasonable bonds); a floor of 0 keeps every reward in
      [0, 1], the scale on which PUCT's and UCT's exploration constant ``c`` is set;
    - valid candidate: ``1 / (1 + exp(-k * s * z))`` in (0, 1), where ``z`` is the score
      standardised by the running mean and standard deviation of the valid scores seen so
      far and ``s`` is -1 when lower scores are better (energies), +1 otherwise: a valid
      candidate at the mean of its peers earns 0.5, one a standard deviation better
      ``1 / (1 + exp(-k))`` (0.88 for k = 2);
    - valid candidate with no scorer: 1; valid candidate whose score is ``nan`` (the scorer
      failed on it): the neutral 0.5.
    """

    k: float = 2.0
    lower_is_better: bool = True
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def observe(self, value: float) -> None:
        """Add a valid candidate's score to the running statistics (Welford)."""
        if not math.isfinite(value):
            return
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    @property
    def sigma(self) -> float:
        if self.count < 2 or self.m2 <= 0:
            return 1.0
        return math.sqrt(self.m2 / (self.count - 1))

    def reward(self, is_valid: bool, score: float | None, has_scorer: bool = True) -> float:
        """Return the reward of one candidate (see the class docstring)."""
        if not is_valid:
            return 0.0
        if not has_scorer:
            return 1.0
        if score is None or not math.isfinite(score):
            return 0.5
        sign = -1.0 if self.lower_is_better else 1.0
        z = (score - self.mean) / self.sigma
        return 1.0 / (1.0 + math.exp(-self.k * sign * max(min(z, 50.0), -50.0)))
