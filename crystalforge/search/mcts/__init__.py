"""Monte Carlo tree search over token prefixes, steered by validity and a scorer.

- ``tree``: nodes, the PUCT / UCT / epsilon-greedy selectors, the branching rule and the
  reward model, free of any model.
- ``states``: prefix states (KV cache, logits, ids) built from the deepest cached
  ancestor, and rollouts through the shared batched decoding engine.
- ``builder``: the context-sensitive tree builder (no branching above ``branch_cutoff``,
  bypassed chains of forced tokens, a wider space-group position).
- ``evaluation``: judging completions (validity, score, reward), the results table.
- ``run``: one search for one prompt (select, evaluate, expand, roll out, back-propagate).
- ``strategies``: the registered strategies and their options; ``artifacts()`` hands the
  results table to the run folder.
"""

from .evaluation import RESULT_COLUMNS, Evaluation, best_evaluations, write_results
from .run import TreeRun
from .states import PrefixState
from .strategies import GreedyTreeSearch, PUCTSearch, TreeSearch, UCTSearch

__all__ = ["RESULT_COLUMNS", "Evaluation", "GreedyTreeSearch", "PUCTSearch", "PrefixState", "TreeRun",
           "TreeSearch", "UCTSearch", "best_evaluations", "write_results"]
