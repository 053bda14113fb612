"""Prefix states: what the model knows after a token prefix, built from the deepest cached
ancestor, and rollouts through the shared batched decoding engine (same logits
constraints and sliding window as sampling)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import attrs
import torch

from ..decode import extend as extend_cache
from ..decode import sample_batch
from ..decode import stack as stack_caches
from .tree import Node


@attrs.define(eq=False)
class PrefixState:
    """What the model knows after a token prefix: its KV cache, next-token logits, the ids.

    ``ids`` is the whole prefix (prompt included); the cache holds its last
    ``block_size`` tokens at most (the sliding window).
    """

    cache: Any
    logits: torch.Tensor  # [1, V]
    ids: list[int]


class PrefixStates:
    """Mixin of :class:`~.run.TreeRun`: node states (KV cache + logits) and rollouts.

    A node's keys/values are never recomputed from the prompt: the deepest cached
    ancestor's cache is cloned and extended by the node's edge tokens (one prefill call);
    caches of recently used nodes are kept (``cache_nodes``), the root's always.
    Overridden by the recomputing reference in ``bench/mcts.py``.
    """

    states: OrderedDict[int, PrefixState]

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
