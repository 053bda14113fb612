"""Group candidates that are the same structure (``--unique``, ``generate(unique=True)``).

Candidates are compared within their reduced composition by pymatgen's
``StructureMatcher`` with the tolerances ``crystalforge vun`` judges uniqueness by
(:data:`crystalforge.evaluation.metrics.UNIQUENESS_TOLERANCES`). Given in rank order,
each candidate joins the group of the first representative it matches, else starts a
new group, so a group's representative is its best-ranked member and group ids count
up from the best candidate. A candidate without a readable structure is a group of its own.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

logger = logging.getLogger(__name__)


def group_ids(structures: Sequence[Any]) -> list[int]:
    """Return a group id (1, 2, ...) per structure (pymatgen ``Structure`` or None), given in rank order."""
    from ..evaluation.metrics import UNIQUENESS_TOLERANCES, structure_matcher
    from ..evaluation.vun import structures_match

    matcher = structure_matcher(UNIQUENESS_TOLERANCES)
    representatives: dict[str, list[tuple[int, Any]]] = {}
    ids: list[int] = []
    groups = 0
    for structure in structures:
        found = None
        formula = structure.composition.reduced_formula if structure is not None else ""
        if structure is not None:
            found = next((group for group, first in representatives.get(formula, [])
                          if structures_match(matcher, first, structure)), None)
        if found is None:
            groups += 1
            found = groups
            if structure is not None:
                representatives.setdefault(formula, []).append((found, structure))
        ids.append(found)
    return ids


def group_texts(texts: Sequence[str | None]) -> list[int]:
    """Return a group id per CIF text (None: no structure), given in rank order (:func:`group_ids`)."""
    return group_ids([_structure_or_none(text) for text in texts])


def summarize_groups(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the groups of ranked rows that carry ``group``: id, composition, size,
    representative (best-ranked member) and member names, in group order."""
    groups: dict[int, dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault(row["group"], {"group": row["group"], "composition": row.get("composition"),
                                                 "representative": row["name"], "size": 0, "members": []})
        group["size"] += 1
        group["members"].append(row["name"])
    return [groups[key] for key in sorted(groups)]


def _structure_or_none(text: str | None) -> Any:
    from ..errors import CrystalforgeError
    from ..evaluation.metrics import parse_structure

    if not text:
        return None
    try:
        return parse_structure(text)
    except CrystalforgeError:
        return None
    except Exception as exc:  # noqa: BLE001 - generated text is hostile input
        logger.debug("structure not readable for grouping: %s", exc)
        return None

