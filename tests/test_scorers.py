"""The scorer base class and the seeded random scorer."""

from __future__ import annotations

import math

import pytest

from crystalforge.errors import OptionError, UnknownComponentError
from crystalforge.scoring.base import Scorer, is_better, parse_score
from crystalforge.scoring.random import RandomScorer


def test_random_scorer_is_a_function_of_seed_and_text(perov_raw):
    cifs = [cif for _, cif in perov_raw[:5]]
    a = RandomScorer(seed=1)
    scores = a.score_many(cifs)
    assert all(0.0 <= s < 1.0 for s in scores)
    assert len(set(scores)) == 5
    # order and instance do not matter, the seed does
    assert RandomScorer(seed=1).score_many(list(reversed(cifs))) == list(reversed(scores))
    assert RandomScorer(seed=2).score_many(cifs) != scores


def test_random_scorer_empty_text_is_nan():
    assert math.isnan(RandomScorer().score(""))
    assert math.isnan(RandomScorer().score("  \n"))


def test_random_scorer_from_registry_converts_options(plugin_manager):
    scorer = plugin_manager.registry("scorer").create("random", seed="7", lower_is_better="false")
    assert scorer.seed == 7 and scorer.lower_is_better is False
    with pytest.raises(OptionError, match="seed"):
        plugin_manager.registry("scorer").create("random", seed="x")
    with pytest.raises(UnknownComponentError, match="Did you mean 'random'"):
        plugin_manager.registry("scorer").get("randon")


def test_base_class_loops_and_closes():
    class Length(Scorer):
        lower_is_better = False

        def score(self, cif: str) -> float:
            return float(len(cif))

        closed = False

        def close(self) -> None:
            self.closed = True

    with Length() as scorer:
        assert scorer.score_many(["a", "abc"]) == [1.0, 3.0]
    assert scorer.closed


def test_parse_score_and_direction():
    assert parse_score(" -1.5\n") == -1.5
    assert math.isnan(parse_score("hello"))
    assert math.isnan(parse_score("nan"))
    assert is_better(-2.0, -1.0, lower_is_better=True)
    assert is_better(2.0, 1.0, lower_is_better=False)
    assert not is_better(math.nan, 1.0, True) and is_better(1.0, math.nan, True)
