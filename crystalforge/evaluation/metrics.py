"""Crystal-structure-prediction metrics: match rate and RMSE (CDVAE / DiffCSP / CrystaLLM).

For each reference structure a list of candidate CIFs is judged. A candidate is *eligible*
when it parses, passes cell sanity and the CDVAE validity test (SMACT composition validity
and structure validity). The reference is *matched* when an eligible candidate matches it
under ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``; its RMSE is the smallest
normalized RMS displacement (``get_rms_dist(...)[0]``) among matching candidates.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Iterable, Sequence

import attrs

from .smact_check import cdvae_valid

logger = logging.getLogger(__name__)

#: StructureMatcher tolerances of the CSP benchmark (match rate, RMSE).
MATCH_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
#: Tighter tolerances used for uniqueness and novelty.
UNIQUENESS_TOLERANCES = {"stol": 0.3, "angle_tol": 5.0, "ltol": 0.2}

#: Cell sanity ("sensible") limits, as the ``cell_sanity`` validator.
CELL_LENGTH_RANGE = (0.5, 1000.0)
CELL_ANGLE_RANGE = (10.0, 170.0)


def structure_matcher(tolerances: dict[str, float] | None = None) -> Any:
    """Return a pymatgen ``StructureMatcher`` with the benchmark tolerances (or ``tolerances``)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**(tolerances or MATCH_TOLERANCES))


def parse_structure(cif: str) -> Any:
    """Return the first structure of a CIF text as a pymatgen ``Structure``.

    Raises:
        CIFError: the text has no readable structure.
    """
    from pymatgen.io.cif import CifParser

    from ..cif.safety import check_cif_text, check_structure
    from ..errors import CIFError

    if not cif or not cif.strip():
        raise CIFError("empty CIF")
    check_cif_text(cif)  # values that crash spglib are refused before pymatgen runs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser.from_str(cif, occupancy_tolerance=1e9)
            structures = parser.parse_structures(primitive=False)
    except Exception as exc:
        raise CIFError(f"cannot parse CIF: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not structures:
        raise CIFError("CIF holds no structure")
    check_structure(structures[0])
    return structures[0]


def cell_sane(structure: Any) -> bool:
    """Return whether cell lengths are within 0.5-1000 A and angles within 10-170 degrees."""
    low, high = CELL_LENGTH_RANGE
    amin, amax = CELL_ANGLE_RANGE
    lattice = structure.lattice
    return all(low <= x <= high for x in lattice.abc) and all(amin <= x <= amax for x in lattice.angles)


@attrs.define
class CandidateCheck:
    """Eligibility of one candidate: parsed, sane cell, SMACT valid, structure valid."""

    parsed: bool = False
    cell_sane: bool = False
    composition_valid: bool = False
    structure_valid: bool = False
    error: str = ""

    @property
    def eligible(self) -> bool:
        return self.parsed and self.cell_sane and self.composition_valid and self.structure_valid

    @property
    def valid(self) -> bool:
        """CDVAE validity (composition and structure valid)."""
        return self.parsed and self.composition_valid and self.structure_valid


def check_candidate(cif: str) -> tuple[CandidateCheck, Any]:
    """Return the eligibility facts of one candidate CIF and its structure (``None`` if unparsable)."""
    check = CandidateCheck()
    try:
        structure = parse_structure(cif)
    except Exception as exc:
        check.error = str(exc)
        return check, None
    check.parsed = True
    check.cell_sane = cell_sane(structure)
    check.composition_valid, check.structure_valid = cdvae_valid(structure)
    return check, structure


@attrs.define
class MatchOutcome:
    """How one reference fared against its candidates.

    Attributes:
        reference_id: the reference's name.
        n_candidates: candidates judged.
        n_eligible / n_valid: eligible candidates and CDVAE-valid ones.
        matched_first: the first candidate matches (the n=1 metric).
        rms_first: its normalized RMS displacement, when matched.
        matched: some eligible candidate matches (the full-n metric).
        rms_best: the smallest RMS displacement among matching candidates.
        best_index: index of that candidate.
        error: why the reference itself could not be read, if so.
    """

    reference_id: str
    n_candidates: int = 0
    n_eligible: int = 0
    n_valid: int = 0
    matched_first: bool = False
    rms_first: float | None = None
    matched: bool = False
    rms_best: float | None = None
    best_index: int | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _rms(matcher: Any, reference: Any, candidate: Any) -> float | None:
    """Return the normalized RMS displacement if the two match, else ``None``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = matcher.get_rms_dist(reference, candidate)
    except Exception as exc:  # pymatgen fails on some degenerate cells
        logger.debug("matcher failed: %s", exc)
        return None
    if result is None:
        return None
    return float(result[0])


def match_reference(reference_id: str, reference_cif: str, candidate_cifs: Sequence[str]) -> MatchOutcome:
    """Judge the candidates of one reference; see the module docstring for the rules.

    Never raises: an unreadable reference is recorded in ``error`` and counts as unmatched.
    """
    outcome = MatchOutcome(reference_id=reference_id, n_candidates=len(candidate_cifs))
    try:
        reference = parse_structure(reference_cif)
    except Exception as exc:
        outcome.error = f"reference: {exc}"
        return outcome
    matcher = structure_matcher()
    for index, cif in enumerate(candidate_cifs):
        check, structure = check_candidate(cif)
        outcome.n_valid += check.valid
        if not check.eligible:
            continue
        outcome.n_eligible += 1
        rms = _rms(matcher, reference, structure)
        if rms is None:
            continue
        if index == 0:
            outcome.matched_first = True
            outcome.rms_first = rms
        if not outcome.matched or rms < (outcome.rms_best if outcome.rms_best is not None else math.inf):
            outcome.matched = True
            outcome.rms_best = rms
            outcome.best_index = index
    return outcome


def match_task(item: tuple[str, str, Sequence[str]]) -> dict[str, Any]:
    """Module-level wrapper of :func:`match_reference` for :func:`crystalforge.parallel.imap_progress`."""
    reference_id, reference_cif, candidates = item
    return match_reference(reference_id, reference_cif, candidates).to_dict()


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(sum(values) / len(values)) if values else None


def summarize_matches(outcomes: Sequence[MatchOutcome | dict[str, Any]], n: int | None = None) -> dict[str, Any]:
    """Return match rate and RMSE for n=1 and the full n, plus validity rates.

    Match rate = matched references / all references; RMSE = mean over matched references
    of their smallest RMS displacement (``None`` when nothing matched). Validity rate =
    CDVAE-valid candidates / all candidates.
    """
    rows = [o.to_dict() if isinstance(o, MatchOutcome) else o for o in outcomes]
    total = len(rows)
    candidates = sum(r["n_candidates"] for r in rows)
    first = [r for r in rows if r["matched_first"]]
    full = [r for r in rows if r["matched"]]
    n_full = n if n is not None else max((r["n_candidates"] for r in rows), default=0)
    return {
        "n_references": total,
        "n_candidates": candidates,
        "n": n_full,
        "match_rate_n1": len(first) / total if total else 0.0,
        "rmse_n1": _mean(r["rms_first"] for r in first),
        "matched_n1": len(first),
        "match_rate": len(full) / total if total else 0.0,
        "rmse": _mean(r["rms_best"] for r in full),
        "matched": len(full),
        "validity_rate": sum(r["n_valid"] for r in rows) / candidates if candidates else 0.0,
        "eligibility_rate": sum(r["n_eligible"] for r in rows) / candidates if candidates else 0.0,
        "unreadable_references": sum(1 for r in rows if r["error"]),
    }
