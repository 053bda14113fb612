"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

from ..cif.io import atomic_write_bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    _pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def bond_length_histogram(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write a histogram of bond-length scores to ``path`` and return it."""
    plt = _pyplot()
    scores = [float(r["bond_length_score"]) for r in rows
              if isinstance(r.get("bond_length_score"), (int, float)) and not math.isnan(r["bond_length_score"])]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.hist(scores, bins=20, range=(0.0, 1.0), color="#4477aa", edgecolor="white")
    axes.set_xlabel("bond-length reasonableness score")
    axes.set_ylabel("CIFs")
    axes.set_title(f"Bond-length score (n={len(scores)})")
    return _save(figure, Path(path))


def validity_by_check(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a bar chart of the pass rate of every check (and overall validity) to ``path``."""
    plt = _pyplot()
    entries = dict(summary.get("checks", {}))
    entries["smact_valid"] = summary["smact_valid"]
    entries["structure_valid"] = summary["structure_valid"]
    entries["valid"] = summary["valid"]
    names = list(entries)
    rates = [entries[n]["rate"] for n in names]
    figure, axes = plt.subplots(figsize=(max(5, 0.8 * len(names)), 3.8))
    bars = axes.bar(range(len(names)), rates, color=["#228833" if n != "valid" else "#aa3377" for n in names])
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels(names, rotation=35, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("pass rate")
    axes.set_title(f"Validity by check (n={summary['n_cifs']})")
    for bar, rate in zip(bars, rates):
        axes.text(bar.get_x() + bar.get_width() / 2, rate + 0.01, f"{rate:.0%}", ha="center", fontsize=7)
    return _save(figure, Path(path))


def validity_by_crystal_system(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a bar chart of CIF counts and valid counts per crystal system to ``path``."""
    plt = _pyplot()
    systems = summary.get("by_crystal_system", {})
    names = list(systems)
    counts = [systems[n]["count"] for n in names]
    valid = [systems[n]["valid"] for n in names]
    figure, axes = plt.subplots(figsize=(max(5, 0.9 * len(names)), 3.8))
    positions = range(len(names))
    axes.bar([p - 0.2 for p in positions], counts, width=0.4, label="all", color="#bbbbbb")
    axes.bar([p + 0.2 for p in positions], valid, width=0.4, label="valid", color="#4477aa")
    axes.set_xticks(list(positions))
    axes.set_xticklabels(names, rotation=30, ha="right")
    axes.set_ylabel("CIFs")
    axes.set_title("Validity by crystal system")
    axes.legend()
    return _save(figure, Path(path))


def write_evaluation_plots(rows: Sequence[dict[str, Any]], summary: dict[str, Any],
                           folder: str | os.PathLike) -> list[Path]:
    """Write the three evaluation plots into ``folder`` and return their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return [
        bond_length_histogram(rows, out / "bond_length_score.png"),
        validity_by_check(summary, out / "validity_by_check.png"),
        validity_by_crystal_system(summary, out / "validity_by_crystal_system.png"),
    ]
