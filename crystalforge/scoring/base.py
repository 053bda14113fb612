"""The scorer interface: a number for a CIF, and which direction is good.

Scorers are components (attrs classes whose fields are their options). Search strategies
(MCTS) and the generation runner call :meth:`Scorer.score` per candidate; ``nan`` means
"could not score" and is never an exception, so one bad candidate cannot stop a run.
"""

from __future__ import annotations

import math

from .. import contracts


class Scorer(contracts.Scorer):
    """Base class of scorers: the :class:`crystalforge.Scorer` contract with its defaults.

    Subclasses implement :meth:`score` and set ``lower_is_better`` (energies: ``True``;
    properties to maximise: ``False``) and, optionally, ``unit`` (``"eV/atom"``).
    :meth:`score_many` loops over :meth:`score` unless a subclass can batch; :meth:`close`
    releases sockets, models, ... A scorer is also a context manager that closes itself.
    """

    lower_is_better: bool = True

    def score(self, cif: str) -> float:
        """Return the score of one CIF text, or ``nan`` when it cannot be scored."""
        raise NotImplementedError

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def is_better(a: float, b: float, lower_is_better: bool) -> bool:
    """Return whether score ``a`` beats ``b`` in the scorer's direction (``nan`` never beats)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if lower_is_better else a > b


def parse_score(text: str) -> float:
    """Return the float in ``text`` (a scorer reply), ``nan`` when it is not a number."""
    try:
        return float(text.strip())
    except (TypeError, ValueError, AttributeError):
        return math.nan
