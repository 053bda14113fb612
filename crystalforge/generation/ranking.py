"""The one ranking rule: valid candidates first, then the best score first.

The direction of "best" comes from the scorer (``lower_is_better``) and is applied here
only; summary rows (read back from a run folder) and :class:`Candidate` objects rank alike.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from ..util import as_float, truthy
from .candidate import Candidate


def scorer_lower_is_better(scorer: Any) -> bool:
    """Return the scorer's ranking direction (True without a scorer or when it does not say)."""
    return bool(getattr(scorer, "lower_is_better", True))


def score_order(score: float | None, lower: bool = True) -> tuple[bool, float]:
    """Return a sort key for one score: finite scores first, the best one first."""
    if score is None or math.isnan(score):
        return (True, 0.0)
    return (False, score if lower else -score)


def rank_key(lower_is_better: bool = True) -> Callable[[Mapping[str, Any]], tuple]:
    """Return a sort key for summary rows: valid first, then by score (nan/None last).

    Ties keep their order: sort rows given in prompt order, then index order (Python's
    sort is stable), so the API and a run folder rank alike.
    """

    def key(row: Mapping[str, Any]) -> tuple:
        return (not truthy(row.get("is_valid")), *score_order(as_float(row.get("score")), lower_is_better))

    return key


def rank_candidates(candidates: Sequence[Candidate], lower_is_better: bool = True) -> list[Candidate]:
    """Return candidates ranked: valid first, then best score first (``lower_is_better`` sets
    the direction); ties keep the given order."""
    key = rank_key(lower_is_better)
    return sorted(candidates, key=lambda c: key({"is_valid": c.is_valid, "score": c.score}))
