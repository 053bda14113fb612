#!/usr/bin/env python
"""Write the Wyckoff-position table of all 230 space groups to crystalforge/assets/wyckoff.json.

Each group's positions (multiplicity in the conventional cell, degrees of freedom) are
derived from spglib's symmetry operations by ``crystalforge.cif.wyckoff.compute_wyckoff_positions``;
the script takes a few minutes on one core and writes the same bytes every run.

    python scripts/build_wyckoff_table.py
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import spglib

from crystalforge.cif.io import atomic_write_text
from crystalforge.cif.wyckoff import WYCKOFF_ASSET, compute_wyckoff_positions


def build_table() -> dict:
    """Return the table: ``{"grid", "source", "groups": {number: {"symbol", "positions"}}}``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        symbols: dict[int, str] = {}
        for hall in range(1, 531):
            info = spglib.get_spacegroup_type(hall)
            symbols.setdefault(info.number, info.international_short)
    groups = {}
    for number in range(1, 231):
        groups[str(number)] = {"symbol": symbols[number],
                               "positions": [list(p) for p in compute_wyckoff_positions(number)]}
    return {
        "description": "Wyckoff positions per space group: [multiplicity in the conventional cell "
                       "(hexagonal for R groups), degrees of freedom], one pair per position",
        "source": f"derived from spglib {spglib.__version__} symmetry operations by scripts/build_wyckoff_table.py",
        "groups": groups,
    }


def dumps(table: dict) -> str:
    """Return the table as JSON with one line per group (small, and diffs read well)."""
    lines = ["{", f'  "description": {json.dumps(table["description"])},',
             f'  "source": {json.dumps(table["source"])},', '  "groups": {']
    entries = [f'    {json.dumps(number)}: {json.dumps(entry, separators=(",", ":"))}'
               for number, entry in table["groups"].items()]
    lines.append(",\n".join(entries))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", type=Path, default=WYCKOFF_ASSET, help="where to write (default: the package asset)")
    args = parser.parse_args(argv)
    table = build_table()
    atomic_write_text(args.to, dumps(table))
    count = sum(len(entry["positions"]) for entry in table["groups"].values())
    print(f"wrote {args.to}: 230 space groups, {count} Wyckoff positions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
