#!/usr/bin/env python
"""Generate ABX3 perovskites across compositions and space groups; analyse validity and tolerance factor.

For every (composition, space group) pair, generate n candidates, then record validity,
the detected space group, the volume per formula unit and the Goldschmidt tolerance factor
(from the `tolerance_factor` validator of the crystalforge-perovskite plugin, installed by
`make run`/`make test`). Writes perovskites.csv and perovskites.png (validity rate per pair,
tolerance factor against volume).

    python examples/perovskite_study.py
    python examples/perovskite_study.py --compositions CaTiO3 SrTiO3 --spacegroups Pm-3m P4mm -n 20
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import crystalforge as cf

COLUMNS = ["composition", "spacegroup_asked", "spacegroup_found", "name", "is_valid", "failed",
           "bond_length_score", "tolerance_factor", "tolerance_factor_ok", "volume_per_formula_unit"]


def analyse(candidate) -> dict:
    """Return one CSV row for a candidate."""
    row = candidate.to_row()
    check = candidate.report.checks.get("tolerance_factor") if candidate.report else None
    volume = row["volume"]
    structure = candidate.structure
    units = None
    if structure is not None:
        units = structure.composition.get_reduced_composition_and_factor()[1]
    return {
        "composition": row["composition"],
        "spacegroup_asked": row["spacegroup_asked"],
        "spacegroup_found": row["spacegroup_found"],
        "name": row["name"],
        "is_valid": row["is_valid"],
        "failed": row["failed"],
        "bond_length_score": row["bond_length_score"],
        "tolerance_factor": check.score if check is not None else None,
        "tolerance_factor_ok": check.passed if check is not None else None,
        "volume_per_formula_unit": round(volume / units, 3) if volume and units else None,
    }


def plot(rows: list[dict], compositions: list[str], spacegroups: list[str], path: Path) -> None:
    """Write a two-panel PNG: validity rate per (composition, space group); t against volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rate = np.zeros((len(compositions), len(spacegroups)))
    for i, comp in enumerate(compositions):
        for j, sg in enumerate(spacegroups):
            cell = [r for r in rows if r["composition"] == comp and r["spacegroup_asked"] == sg]
            rate[i, j] = sum(bool(r["is_valid"]) for r in cell) / len(cell) if cell else math.nan
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    image = left.imshow(rate, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    left.set_xticks(range(len(spacegroups)), spacegroups)
    left.set_yticks(range(len(compositions)), compositions)
    left.set_title("share of valid candidates")
    fig.colorbar(image, ax=left)
    points = [r for r in rows if r["tolerance_factor"] is not None and r["volume_per_formula_unit"]]
    for valid, colour, label in ((True, "tab:green", "valid"), (False, "tab:red", "invalid")):
        chosen = [r for r in points if bool(r["is_valid"]) is valid]
        right.scatter([r["volume_per_formula_unit"] for r in chosen], [r["tolerance_factor"] for r in chosen],
                      c=colour, label=f"{label} ({len(chosen)})", alpha=0.7)
    right.axhspan(0.8, 1.1, color="grey", alpha=0.15, label="0.8 < t < 1.1")
    right.set_xlabel("volume per formula unit (A^3)")
    right.set_ylabel("Goldschmidt tolerance factor t")
    right.set_title("tolerance factor" if points else "tolerance factor (no readable ABX3 candidates)")
    right.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("-n", type=int, default=8, help="candidates per (composition, space group)")
    parser.add_argument("--max-new-tokens", type=int, default=1000, help="stop after this many tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compositions", nargs="+", default=["CaTiO3", "SrTiO3", "BaTiO3", "KNbO3", "LaAlO3"])
    parser.add_argument("--spacegroups", nargs="+", default=["Pm-3m", "P4mm", "P4/mmm"])
    parser.add_argument("--out", type=Path, default=Path("out/examples/perovskites"))
    args = parser.parse_args(argv)

    pm = cf.make_plugin_manager()
    if "tolerance_factor" not in pm.registry("validator"):
        print("note: crystalforge-perovskite is not installed; no tolerance factors "
              "(pip install -e plugins/crystalforge-perovskite)", file=sys.stderr)
    model = cf.load_model(args.model)  # loaded once, shared by every call below
    rows = []
    for spacegroup in args.spacegroups:
        candidates = cf.generate(args.compositions, spacegroup=spacegroup, n=args.n, model=model,
                                 seed=args.seed, plugin_manager=pm,
                                 search_options={"max_new_tokens": args.max_new_tokens})
        rows.extend(analyse(c) for c in candidates)

    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "perovskites.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    figure = args.out / "perovskites.png"
    plot(rows, args.compositions, args.spacegroups, figure)

    print(f"{'composition':<12} {'space group':<11} valid   t")
    for comp in args.compositions:
        for sg in args.spacegroups:
            cell = [r for r in rows if r["composition"] == comp and r["spacegroup_asked"] == sg]
            t_values = [r["tolerance_factor"] for r in cell if r["tolerance_factor"] is not None]
            t_text = f"{t_values[0]:.3f}" if t_values else "-"
            print(f"{comp:<12} {sg:<11} {sum(bool(r['is_valid']) for r in cell)}/{len(cell):<4} {t_text}")
    print(f"wrote {table} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
