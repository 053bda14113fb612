"""Evaluate a collection of CIFs: one row per CIF and a summary in CrystaLLM's terms.

Each CIF goes through every registered validator (:func:`crystalforge.validate`), plus
the facts a reader wants next to them: space group stated and detected (symprec 0.1),
crystal system, formula, volume, density, number of sites and the CDVAE validity test.
The summary counts space-group consistency, site-multiplicity consistency, the mean and
standard deviation of the bond-length score, how many CIFs have fully reasonable bond
lengths, and how many are valid.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

import attrs

from ..cif.io import atomic_write_text, iter_cifs, source_kind
from ..errors import DataError

logger = logging.getLogger(__name__)

SYMPREC = 0.1

#: Columns that lead every row, in this order; validator columns follow.
LEADING_COLUMNS = (
    "name", "parsed", "error", "is_valid", "bond_length_score", "space_group_stated",
    "space_group_detected", "crystal_system", "formula", "reduced_formula", "n_sites",
    "volume", "density", "smact_valid", "structure_valid", "score",
)

# Set in the parent before forking workers, so they reuse its plugin manager.
_WORKER_STATE: dict[str, Any] = {}


@attrs.define
class EvaluationResult:
    """Rows (one dict per CIF, in input order) and their summary."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]

    def columns(self) -> list[str]:
        """Return every column of the rows: the leading ones, then validator columns."""
        seen = [c for c in LEADING_COLUMNS]
        for row in self.rows:
            for key in row:
                if key not in seen:
                    seen.append(key)
        return seen

    def to_csv(self) -> str:
        """Return the rows as CSV text."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns(), lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        return buffer.getvalue()

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write the rows to ``path`` as CSV (atomically)."""
        atomic_write_text(path, self.to_csv())


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def _plugin_manager() -> Any:
    manager = _WORKER_STATE.get("plugin_manager")
    if manager is None:  # a spawned worker: build our own
        from ..plugins import make_plugin_manager

        manager = make_plugin_manager()
        _WORKER_STATE["plugin_manager"] = manager
    return manager


def _describe_structure(cif: str, row: dict[str, Any]) -> None:
    """Fill in formula, volume, density, sites, detected space group and CDVAE validity."""
    from .metrics import parse_structure
    from .smact_check import cdvae_valid

    try:
        structure = parse_structure(cif)  # refuses values that crash spglib before pymatgen runs
    except Exception as exc:
        row["parsed"] = False
        row["error"] = str(exc)
        return
    row["parsed"] = True
    row["formula"] = structure.composition.formula.replace(" ", "")
    row["reduced_formula"] = structure.composition.reduced_formula
    row["n_sites"] = len(structure)
    row["volume"] = round(float(structure.volume), 4)
    try:
        row["density"] = round(float(structure.density), 4)
    except Exception:  # zero volume
        row["density"] = None
    try:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        analyzer = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        row["space_group_detected"] = analyzer.get_space_group_symbol()
        row["crystal_system"] = analyzer.get_crystal_system()
    except Exception as exc:  # spglib fails on degenerate cells
        logger.debug("symmetry detection failed: %s", exc)
    row["smact_valid"], row["structure_valid"] = cdvae_valid(structure)


def evaluate_cif(name: str, cif: str, *, plugin_manager: Any = None, require: Sequence[str] = ()) -> dict[str, Any]:
    """Return one evaluation row for a CIF text. Never raises on bad input.

    The row holds every column of :data:`LEADING_COLUMNS` (``None`` where unknown) and the
    validity report flattened (``<check>``, ``<check>_score``, ``<check>_message``).
    """
    from ..validation.report import validate

    row: dict[str, Any] = {column: None for column in LEADING_COLUMNS}
    row["name"] = name
    row["parsed"] = False
    row["error"] = ""
    if not cif.strip():
        row["error"] = "empty or unreadable file"
        row["is_valid"] = False
        return row
    try:
        from ..cif.extract import extract_space_group

        row["space_group_stated"] = extract_space_group(cif)
    except Exception:
        pass
    _describe_structure(cif, row)
    report = validate(cif, plugin_manager=plugin_manager, require=require)
    flat = report.to_dict()
    row["is_valid"] = bool(flat.pop("is_valid", report.is_valid))
    row["bond_length_score"] = report.bond_length_score
    row.update(flat)
    return row


def _evaluate_task(item: tuple[str, str, tuple[str, ...]]) -> dict[str, Any]:
    name, cif, require = item
    return evaluate_cif(name, cif, plugin_manager=_plugin_manager(), require=require)


def read_summary_scores(folder: Path) -> dict[str, float]:
    """Return ``{cif name: score}`` from a generation output's ``summary.csv``, if any.

    Names are paths relative to ``folder`` without ``.cif`` (as :func:`iter_cifs` gives
    them), taken from the ``file`` column, else ``path``/``name``/``id``.
    """
    summary = folder / "summary.csv"
    if not summary.is_file():
        return {}
    scores: dict[str, float] = {}
    with open(summary, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            raw = row.get("score")
            if raw in (None, ""):
                continue
            try:
                value = float(raw)
            except ValueError:
                continue
            for key in ("file", "path", "cif_file", "filename", "name", "id"):
                cell = row.get(key)
                if cell:
                    key = Path(cell).with_suffix("").as_posix() if cell.lower().endswith(".cif") else cell
                    scores[key] = value
                    break
    return scores


def evaluate_source(
    path: str | os.PathLike,
    *,
    plugin_manager: Any = None,
    require: Sequence[str] = (),
    workers: int | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate every CIF of a folder, ``.tar.gz``, CSV or single file.

    A generation output folder is read the same way (its ``summary.csv`` is not a CIF; its
    ``score`` column is joined to the rows). Each CIF is evaluated in a worker process; a
    CIF that crashes or hangs a check, or kills its worker, is recorded with the error and
    counted as invalid, and the others go on. ``workers``: worker processes; ``None``
    uses every CPU, at most one per few CIFs (:func:`crystalforge.parallel.auto_workers`).

    Raises:
        DataError: the path is missing or holds no CIFs.
    """
    from ..parallel import auto_workers, imap_progress

    source = Path(path)
    kind = source_kind(source)
    items = list(iter_cifs(source))
    if not items:
        raise DataError(f"{source}: no CIF files found")
    scores = read_summary_scores(source) if kind == "folder" else {}
    if plugin_manager is None:
        from ..plugins import make_plugin_manager

        plugin_manager = make_plugin_manager()
    # forked workers inherit this manager; spawned ones (CRYSTALFORGE_SPAWN) build their own
    _WORKER_STATE["plugin_manager"] = plugin_manager
    # registries are collected lazily: do it once before forking
    checks = len(list(plugin_manager.registry("validator")))
    from ..validation.report import default_check_timeout

    check_timeout = default_check_timeout()
    # a check stuck in C code holding the GIL cannot be abandoned by its thread: kill the worker
    backstop = None if check_timeout is None else check_timeout * (checks + 2) + 60
    rows = []
    try:
        tasks = ((name, cif, tuple(require)) for name, cif in items)
        results = imap_progress(_evaluate_task, tasks, workers=auto_workers(len(items), workers), total=len(items),
                                description="evaluate", progress=progress, crash_label="the CIF parser",
                                timeout=backstop)
        for (name, _), (ok, result) in zip(items, results):
            if ok:
                row = result
            else:
                row = {column: None for column in LEADING_COLUMNS}
                row.update(name=name, parsed=False, is_valid=False, error=f"check crashed: {result}")
            if name in scores:
                row["score"] = scores[name]
            rows.append(row)
    finally:
        _WORKER_STATE.clear()
    return EvaluationResult(rows=rows, summary=summarize(rows))


def _count(rows: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    total = len(rows)
    hits = sum(1 for r in rows if r.get(key) is True)
    return {"count": hits, "total": total, "rate": hits / total if total else 0.0}


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return the summary of evaluation rows in CrystaLLM's terms.

    Keys: ``n_cifs``, ``n_unparsable``, ``space_group_consistent``,
    ``multiplicity_consistent``, ``formula_consistent``, ``bond_lengths_reasonable``
    (score 1.0), ``valid`` (each ``{"count", "total", "rate"}``), ``bond_length_score``
    (``{"mean", "sd", "n"}``), ``checks`` (pass counts of every validator), ``by_crystal_system``.
    """
    total = len(rows)
    bond_scores = [float(r["bond_length_score"]) for r in rows
                   if isinstance(r.get("bond_length_score"), (int, float)) and not math.isnan(r["bond_length_score"])]
    reasonable = sum(1 for s in bond_scores if s >= 1.0)
    check_names = sorted({k for r in rows for k, v in r.items()
                          if isinstance(v, bool) and f"{k}_message" in r})
    systems: dict[str, dict[str, int]] = {}
    for row in rows:
        system = row.get("crystal_system") or "unknown"
        entry = systems.setdefault(system, {"count": 0, "valid": 0})
        entry["count"] += 1
        entry["valid"] += bool(row.get("is_valid"))
    return {
        "n_cifs": total,
        "n_unparsable": sum(1 for r in rows if not r.get("parsed")),
        "space_group_consistent": _count(rows, "space_group"),
        "multiplicity_consistent": _count(rows, "site_multiplicity"),
        "formula_consistent": _count(rows, "formula_consistency"),
        "bond_length_score": {
            "mean": statistics.fmean(bond_scores) if bond_scores else None,
            "sd": statistics.pstdev(bond_scores) if len(bond_scores) > 1 else (0.0 if bond_scores else None),
            "n": len(bond_scores),
        },
        "bond_lengths_reasonable": {"count": reasonable, "total": total, "rate": reasonable / total if total else 0.0},
        "smact_valid": _count(rows, "smact_valid"),
        "structure_valid": _count(rows, "structure_valid"),
        "valid": _count(rows, "is_valid"),
        "checks": {name: _count(rows, name) for name in check_names},
        "by_crystal_system": dict(sorted(systems.items())),
    }


def summary_lines(summary: dict[str, Any]) -> Iterable[str]:
    """Yield a human-readable summary, one line at a time."""

    def fraction(entry: dict[str, Any]) -> str:
        return f"{entry['count']}/{entry['total']} ({entry['rate']:.1%})"

    yield f"CIFs evaluated:                {summary['n_cifs']} ({summary['n_unparsable']} unparsable)"
    yield f"space group consistent:        {fraction(summary['space_group_consistent'])}"
    yield f"multiplicity consistent:       {fraction(summary['multiplicity_consistent'])}"
    yield f"formula consistent:            {fraction(summary['formula_consistent'])}"
    bond = summary["bond_length_score"]
    if bond["mean"] is None:
        yield "bond length score:             n/a"
    else:
        yield f"bond length score:             {bond['mean']:.4f} +- {bond['sd']:.4f} (n={bond['n']})"
    yield f"bond lengths reasonable:       {fraction(summary['bond_lengths_reasonable'])}"
    yield f"SMACT valid (CDVAE):           {fraction(summary['smact_valid'])}"
    yield f"structure valid (CDVAE):       {fraction(summary['structure_valid'])}"
    yield f"valid:                         {fraction(summary['valid'])}"
    others = {name: entry for name, entry in summary["checks"].items()
              if name not in ("space_group", "site_multiplicity", "formula_consistency")}
    if others:
        yield "other checks passed:"
        for name, entry in others.items():
            yield f"  {name + ':':<28}{fraction(entry)}"
    if summary["by_crystal_system"]:
        yield "valid by crystal system:"
        for system, entry in summary["by_crystal_system"].items():
            yield f"  {system + ':':<28}{entry['valid']}/{entry['count']}"
