"""Judging a completed candidate: validity, score, reward; the results table and the best ones."""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import attrs

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ("prompt", "simulation", "rollout", "n_tokens", "finished", "is_valid",
                  "bond_length_score", "score", "reward", "cif")


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


class Judge:
    """Mixin of :class:`~.run.TreeRun`: validate and score completions once each, record rollouts."""

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
        return self.rewards.reward(e.is_valid, e.score, self.scorer is not None)

    def _record(self, e: Evaluation, simulation: int, rollout: int) -> None:
        self.rows.append({
            "prompt": self.prompt_index, "simulation": simulation, "rollout": rollout,
            "n_tokens": e.n_tokens, "finished": e.finished, "is_valid": e.is_valid,
            "bond_length_score": e.bond_length_score, "score": e.score, "reward": e.reward,
            "cif": e.text,
        })

def _postprocess(text: str) -> str | None:
    from ...generation.pipeline import postprocess_safely

    return postprocess_safely(text)[0]


def _default_validate(cif: str) -> Any:
    from ...validation.report import validate

    return validate(cif)


def best_evaluations(evaluations: Sequence[Evaluation], n: int, lower_is_better: bool) -> list[Evaluation]:
    """Return the ``n`` best candidates: valid before invalid, then by score, then by reward."""
    from ...generation.ranking import score_order

    def key(e: Evaluation) -> tuple:
        return (not e.is_valid, *score_order(e.score, lower_is_better), -e.reward, e.simulation)

    return sorted(evaluations, key=key)[:n]


def write_results(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Write every scored rollout as CSV (atomically), one row per rollout."""
    from ...util import plain_cell, write_csv

    write_csv(path, rows, RESULT_COLUMNS, cell=plain_cell)
