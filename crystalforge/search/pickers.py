"""Pickers: how one next token per row is chosen from logits and a uniform draw.

``pick_next(logits[B, V], uniforms[B]) -> LongTensor[B]``: temperature, then top-k, then
top-p, then inverse-CDF sampling at the uniform (deterministic given the uniforms), or
the argmax (greedy).
"""

from __future__ import annotations

from typing import Callable

import torch

#: ``pick_next(logits[B, V], uniforms[B]) -> LongTensor[B]``
PickNext = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def greedy_pick(logits: torch.Tensor, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Return the most likely token of each row (the first one on ties)."""
    return torch.argmax(logits, dim=-1)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Return ``logits`` with everything below each row's k-th largest value set to -inf."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Return ``logits`` keeping, per row, the smallest most-likely set with mass >= p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # [B, V] mass of strictly better tokens
    drop_sorted = mass_before >= p
    drop_sorted[:, 0] = False  # the most likely token always stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_from_logits(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Return one token per row drawn from ``softmax(logits)`` by inverting the CDF at ``uniforms``.

    Tokens with zero probability are never drawn. Deterministic given the uniforms.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    cdf = torch.cumsum(probs, dim=-1)  # [B, V]
    target = (uniforms.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)  # [B, 1]
    picked = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return picked.clamp_(max=logits.size(-1) - 1)


def make_picker(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False) -> PickNext:
    """Return ``pick_next(logits, uniforms)``: temperature, then top-k, then top-p, then a draw.

    ``greedy`` (or ``temperature == 0``) ignores the uniforms and takes the argmax.

    Raises:
        ValueError: a negative temperature, negative ``top_k`` or ``top_p`` outside (0, 1].
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if greedy or temperature == 0:
        return greedy_pick

    def pick(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        logits = logits.float() / temperature
        if top_k:
            logits = filter_top_k(logits, top_k)
        if top_p < 1.0:
            logits = filter_top_p(logits, top_p)
        return sample_from_logits(logits, uniforms)

    return pick
