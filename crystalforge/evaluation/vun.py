"""Validity, uniqueness and novelty (VUN) of generated structures.

- *valid*: structurally valid (no two atoms closer than 0.5 A, volume > 0.1 A^3) and
  compositionally valid (SMACT charge neutrality with the Pauling electronegativity test);
- *unique*: no earlier generated structure matches it;
- *novel*: no training structure matches it;
- *VUN*: all three.

Matching uses ``StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)``. Only structures with
the same reduced composition can match, so structures are grouped by reduced formula
first and compared pairwise within a group; groups are judged in parallel. Training CIFs
whose ``_chemical_formula_sum`` names a formula no generated structure has are never parsed.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import warnings
from typing import Any, Sequence

import attrs

from ..cif.io import iter_cifs
from ..errors import DataError
from .metrics import UNIQUENESS_TOLERANCES, parse_structure, structure_matcher
from .smact_check import smact_valid, structure_valid

logger = logging.getLogger(__name__)

_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+(.+)$", re.MULTILINE)


@attrs.define
class VUNRow:
    """The verdict on one generated structure."""

    name: str
    reduced_formula: str = ""
    parsed: bool = False
    structure_valid: bool = False
    composition_valid: bool = False
    unique: bool = False
    novel: bool = False
    duplicate_of: str = ""
    matches_train: str = ""
    error: str = ""

    @property
    def valid(self) -> bool:
        return self.structure_valid and self.composition_valid

    @property
    def vun(self) -> bool:
        return self.valid and self.unique and self.novel

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["valid"] = self.valid
        out["vun"] = self.vun
        return out


@attrs.define
class VUNResult:
    """One row per generated CIF (input order) and the summary rates."""

    rows: list[VUNRow]
    summary: dict[str, Any]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        dicts = [r.to_dict() for r in self.rows]
        columns = list(dicts[0]) if dicts else ["name"]
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
        return buffer.getvalue()


def _reduced_formula_of_text(cif: str) -> str | None:
    """Return the reduced formula named by ``_chemical_formula_sum`` without parsing the structure."""
    match = _FORMULA_SUM.search(cif)
    if not match:
        return None
    try:
        from pymatgen.core import Composition

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Composition(match.group(1).strip().strip("'\"")).reduced_formula
    except Exception:
        return None


def _judge_group(item: tuple[list[tuple[str, str]], list[tuple[str, str]]]) -> list[tuple[str, str, str]]:
    """Return ``(name, duplicate_of, matches_train)`` for each generated structure of one formula group.

    ``item`` holds the group's generated ``(name, cif)`` pairs (input order) and its
    training ``(name, cif)`` pairs. Each structure is reduced (primitive, Niggli) once, as
    ``StructureMatcher.fit`` would on every call, and only structures whose reduced cells
    hold as many sites are compared: the matcher (no supercells) never matches others, so
    the verdicts are the same at a fraction of the cost (one formula such as C can have
    thousands of training structures).
    """
    generated, train = item
    matcher = structure_matcher(UNIQUENESS_TOLERANCES)
    structures = [(name, _reduced(matcher, parse_structure(cif))) for name, cif in generated]
    train_by_size: dict[int | None, list[tuple[str, Any]]] = {}
    for name, cif in train:
        try:
            reduced = _reduced(matcher, parse_structure(cif))
        except Exception:
            continue
        train_by_size.setdefault(_size(reduced), []).append((name, reduced))
    kept: list[tuple[str, Any]] = []  # first occurrences
    verdicts = []
    for name, structure in structures:
        duplicate_of = ""
        for earlier_name, earlier in kept:
            if _comparable(earlier, structure) and structures_match(matcher, earlier, structure):
                duplicate_of = earlier_name
                break
        if not duplicate_of:
            kept.append((name, structure))
        matches_train = ""
        size = _size(structure)
        candidates = train_by_size.get(size, []) + (train_by_size.get(None, []) if size is not None else
                                                     [t for group in train_by_size.values() for t in group])
        for train_name, train_structure in candidates:
            if structures_match(matcher, train_structure, structure):
                matches_train = train_name
                break
        verdicts.append((name, duplicate_of, matches_train))
    return verdicts


class _Reduced:
    """A structure with its reduced (primitive, Niggli) form, or without one when reduction failed."""

    __slots__ = ("original", "reduced")

    def __init__(self, original: Any, reduced: Any) -> None:
        self.original, self.reduced = original, reduced


def _reduced(matcher: Any, structure: Any) -> _Reduced:
    reduce = getattr(type(matcher), "_get_reduced_structure", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _Reduced(structure, reduce(structure, matcher._primitive_cell, True) if reduce else None)
    except Exception:  # degenerate cells: the matcher gets the original and decides
        return _Reduced(structure, None)


def _size(item: _Reduced) -> int | None:
    return len(item.reduced) if item.reduced is not None else None


def _comparable(a: _Reduced, b: _Reduced) -> bool:
    return _size(a) is None or _size(b) is None or _size(a) == _size(b)


def structures_match(matcher: Any, a: Any, b: Any) -> bool:
    """Return ``matcher.fit(a, b)``, False where pymatgen raises on a degenerate cell; with two
    :class:`_Reduced` items their reduced forms are compared without reducing again."""
    if isinstance(a, _Reduced) and isinstance(b, _Reduced):
        if a.reduced is not None and b.reduced is not None:
            a, b, skip = a.reduced, b.reduced, True
        else:
            a, b, skip = a.original, b.original, False
    else:
        skip = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(matcher.fit(a, b, skip_structure_reduction=skip) if skip else matcher.fit(a, b))
    except Exception as exc:  # degenerate cells make pymatgen raise
        logger.debug("matcher failed: %s", exc)
        return False


def compute_vun(
    generated: Sequence[tuple[str, str]],
    train: Sequence[tuple[str, str]] | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
) -> VUNResult:
    """Return validity, uniqueness and novelty of ``generated`` ``(name, cif)`` pairs.

    ``train`` (``(name, cif)`` pairs) is the set novelty is judged against; without it
    every structure counts as novel. Rates are over all generated CIFs (unparsable ones
    count as invalid, not unique and not novel).
    """
    from ..parallel import imap_progress

    rows = []
    groups: dict[str, list[tuple[str, str]]] = {}
    for name, cif in generated:
        row = VUNRow(name=name)
        rows.append(row)
        try:
            structure = parse_structure(cif)
        except Exception as exc:
            row.error = str(exc)
            continue
        row.parsed = True
        row.reduced_formula = structure.composition.reduced_formula
        row.structure_valid = structure_valid(structure)
        try:
            row.composition_valid = smact_valid(structure.composition)
        except Exception as exc:
            row.error = f"SMACT: {exc}"
        groups.setdefault(row.reduced_formula, []).append((name, cif))
    train_groups: dict[str, list[tuple[str, str]]] = {}
    for name, cif in train or ():
        formula = _reduced_formula_of_text(cif)
        if formula is None:
            try:
                formula = parse_structure(cif).composition.reduced_formula
            except Exception:
                continue
        if formula in groups:
            train_groups.setdefault(formula, []).append((name, cif))
    items = [(members, train_groups.get(formula, [])) for formula, members in groups.items()]
    by_name = {row.name: row for row in rows}
    results = imap_progress(_judge_group, items, workers=workers, total=len(items),
                            description="vun", progress=progress)
    for (members, _), (ok, result) in zip(items, results):
        if not ok:
            for name, _ in members:
                by_name[name].error = f"matching failed: {result}"
            continue
        for name, duplicate_of, matches_train in result:
            row = by_name[name]
            row.duplicate_of = duplicate_of
            row.unique = not duplicate_of
            row.matches_train = matches_train
            row.novel = not matches_train
    return VUNResult(rows=rows, summary=summarize_vun(rows, n_train=len(train or ())))


def summarize_vun(rows: Sequence[VUNRow], *, n_train: int = 0) -> dict[str, Any]:
    """Return counts and rates (over all rows) of valid, unique, novel and VUN structures."""
    total = len(rows)

    def entry(count: int) -> dict[str, Any]:
        return {"count": count, "total": total, "rate": count / total if total else 0.0}

    return {
        "n_generated": total,
        "n_train": n_train,
        "parsed": entry(sum(r.parsed for r in rows)),
        "structure_valid": entry(sum(r.structure_valid for r in rows)),
        "composition_valid": entry(sum(r.composition_valid for r in rows)),
        "valid": entry(sum(r.valid for r in rows)),
        "unique": entry(sum(r.unique for r in rows)),
        "novel": entry(sum(r.novel for r in rows)),
        "unique_and_novel": entry(sum(r.unique and r.novel for r in rows)),
        "vun": entry(sum(r.vun for r in rows)),
        "tolerances": UNIQUENESS_TOLERANCES,
    }


def read_cif_set(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Return ``(name, cif)`` pairs from a folder, ``.tar.gz``, CSV or CIF; empty members skipped.

    Raises:
        DataError: the source is missing or holds no CIFs.
    """
    items = list(iter_cifs(path))
    if not items:
        raise DataError(f"{path}: no CIF files found")
    return items


def denovo_summary(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike,
                   max_atoms: int | None = None) -> dict[str, Any]:
    """Return what a de novo run folder holds: candidates, valid ones (the run's checks),
    those whose CIF parses, distinct reduced formulas written, and those with more atoms
    than ``max_atoms`` (None when no bound was asked).

    ``rows`` are the run's summary rows (``file`` names each candidate's CIF in ``out_dir``);
    a candidate that does not parse still counts in the total. Uniqueness and novelty
    against a training set are :func:`compute_vun`'s (``crystalforge vun OUT --train ...``).
    """
    from pathlib import Path

    from ..util import truthy

    parsed = 0
    formulas: set[str] = set()
    over = 0
    for row in rows:
        try:
            structure = parse_structure((Path(out_dir) / row["file"]).read_text(errors="replace"))
        except Exception:
            continue
        parsed += 1
        formulas.add(structure.composition.reduced_formula)
        if max_atoms is not None and len(structure) > max_atoms:
            over += 1
    return {"candidates": len(rows), "valid": sum(1 for r in rows if truthy(r.get("is_valid"))),
            "parsed": parsed, "distinct_formulas": len(formulas),
            "over_max_atoms": over if max_atoms is not None else None}


def denovo_summary_lines(summary: dict[str, Any], out_dir: str | os.PathLike = "OUT") -> list[str]:
    """Return :func:`denovo_summary` as lines for a terminal."""
    total = summary["candidates"] or 1
    lines = [f"de novo: {summary['valid']}/{summary['candidates']} valid ({summary['valid'] / total:.1%}), "
             f"{summary['parsed']} parse, {summary['distinct_formulas']} distinct reduced formulas"]
    if summary["over_max_atoms"] is not None:
        lines.append(f"over --max-atoms: {summary['over_max_atoms']} (flagged here, not removed)")
    lines.append(f"uniqueness and novelty: crystalforge vun {out_dir} --train TRAIN")
    return lines
