"""The context-sensitive tree builder.

Where the most likely token's probability exceeds ``branch_cutoff`` a node does not
branch; with ``bypass_chains`` such forced tokens are absorbed into the node's edge (no
chains of only-children); at the space-group position a node may branch wider
(``space_group_width``). Priors and forced tokens come from the constrained logits.
"""

from __future__ import annotations

import torch

from .states import PrefixState
from .tree import Node, child_priors

SPACE_GROUP_KEY = "_symmetry_space_group_name_H-M"


class TreeBuilder:
    """Mixin of :class:`~.run.TreeRun`: leaf evaluation and expansion."""

    def _space_group_prefix(self) -> list[int]:
        stoi = getattr(self.tokenizer, "stoi", {})
        if SPACE_GROUP_KEY in stoi and " " in stoi:
            return [stoi[SPACE_GROUP_KEY], stoi[" "]]
        return []

    def _ends(self, node_ids: list[int]) -> bool:
        """Whether the generated tokens end with the end-of-CIF marker (prompt tokens never count)."""
        tail = node_ids[-2:]
        return len(tail) == 2 and tail[0] == self.newline and tail[1] == self.newline

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
        """Add the node's children (context-sensitive width and branching).

        ``logits`` are the constrained ones (:meth:`masked_logits`), so a child's token is
        always one the sampling strategies' masks allow; at most ``top_k`` children (the
        rollouts' own choice set) unless ``space_group_width`` asks for more there.
        """
        probs = torch.softmax(logits[0].float() / max(self.s.temperature, 1e-6), dim=-1).tolist()
        # never branch to a token the rollouts' top-k sampling could not pick there
        width = min(self.s.width, self.s.top_k) if self.s.top_k > 0 else self.s.width
        ids = self.prompt_ids + node.path_tokens()
        if self.s.space_group_width > 0 and self.sg_tokens and ids[-2:] == self.sg_tokens:
            width = self.s.space_group_width
        for token, prior in child_priors(probs, width, self.s.branch_cutoff):
            node.add_child([token], prior)
        node.expanded = True
