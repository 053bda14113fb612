"""Split a CIF collection into train/validation/test sets with a seed.

The split depends only on the CIF names, the seed and the fractions: items are sorted by
name, shuffled with ``random.Random(seed)`` and cut. With ``group_polymorphs`` all CIFs
of one reduced composition land in the same split (so no test composition is seen in
training). Each split keeps its CIFs sorted by name.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import DataError
from .ingest import Item

log = logging.getLogger(__name__)


@dataclass
class SplitResult:
    """The three splits, each a list of ``(name, cif)`` sorted by name."""

    train: list[Item] = field(default_factory=list)
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Return ``{"train": n, "val": n, "test": n}``."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def reduced_composition(cif: str) -> str | None:
    """Return the reduced formula of a CIF's ``_chemical_formula_sum``, or None if unreadable."""
    from ..cif.extract import extract_formula, parse_composition
    from ..errors import CrystalforgeError

    try:
        return parse_composition(str(extract_formula(cif))).reduced_formula
    except CrystalforgeError:
        return None


def split_items(
    items: Sequence[Item],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    group_polymorphs: bool = False,
) -> SplitResult:
    """Return ``items`` divided into train/val/test.

    Counts are ``round(fraction * n)`` CIFs (groups are added whole until the target is
    reached, when ``group_polymorphs`` is set).

    Raises:
        DataError: a fraction outside [0, 1) or fractions adding up to 1 or more.
    """
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{label} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    ordered = sorted(items, key=lambda item: item[0])
    if group_polymorphs:
        groups: dict[str, list[Item]] = {}
        for item in ordered:
            key = reduced_composition(item[1]) or f"\0{item[0]}"  # unreadable: its own group
            groups.setdefault(key, []).append(item)
        units = [groups[key] for key in sorted(groups)]
    else:
        units = [[item] for item in ordered]
    random.Random(seed).shuffle(units)
    n = len(ordered)
    targets = {"test": round(test_fraction * n), "val": round(val_fraction * n)}
    result = SplitResult()
    chosen = {"test": result.test, "val": result.val}
    position = 0
    for split in ("test", "val"):
        while position < len(units) and len(chosen[split]) < targets[split]:
            chosen[split].extend(units[position])
            position += 1
    for unit in units[position:]:
        result.train.extend(unit)
    for part in (result.train, result.val, result.test):
        part.sort(key=lambda item: item[0])
    log.info("split (seed %d): %s", seed, result.counts())
    return result
