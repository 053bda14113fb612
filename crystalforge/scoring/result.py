"""What a scorer can say about one CIF beyond its number: :class:`ScoreResult`.

Kept free of other crystalforge imports so the contracts module can re-export it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import attrs


@attrs.frozen
class ScoreResult:
    """One CIF's score with what the scorer learned on the way.

    Attributes:
        value: the score (``nan`` when the CIF could not be scored), the number ranked by.
        extras: further named numbers or strings for the summary, one column each
            (CHGNet with relaxation: ``energy_unrelaxed``, ``energy_relaxed``).
        structure: the structure ``value`` belongs to when the scorer changed it (a
            relaxation): a pymatgen ``Structure`` or CIF text; None when the score is of
            the CIF as given. A run folder writes it as ``<name>_relaxed.cif``.
    """

    value: float = math.nan
    extras: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    structure: Any = None


def as_score_result(value: Any) -> ScoreResult:
    """Return ``value`` as a :class:`ScoreResult`: a plain number (or anything that is not
    one) becomes a result with no extras; ``nan`` when it is not a number."""
    if isinstance(value, ScoreResult):
        return value
    try:
        return ScoreResult(float(value))
    except (TypeError, ValueError):
        return ScoreResult(math.nan)
