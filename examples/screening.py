#!/usr/bin/env python
"""High-throughput screening: generate for a list of compositions, keep valid ones, rank by score.

Reads compositions from the command line or a file (one `COMPOSITION [SPACEGROUP]` per
line, `#` comments), generates n candidates each, scores them, keeps the candidates that
are valid (and pass --require checks) with a finite score, and writes the shortlist
(shortlist.csv plus one .cif per kept structure), best first in the scorer's direction.

    python examples/screening.py CaTiO3 SrTiO3 BaZrO3 -n 16
    python examples/screening.py --file compositions.txt --scorer zmq --scorer-opt port=5555 --top 20
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import crystalforge as cf


def read_compositions(path: Path) -> list[tuple[str, str | None]]:
    """Return ``(composition, space group or None)`` per non-empty line of a file."""
    items = []
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            items.append((fields[0], fields[1] if len(fields) > 1 else None))
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compositions", nargs="*", help="compositions to screen")
    parser.add_argument("--file", type=Path, help="file of 'COMPOSITION [SPACEGROUP]' lines")
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("-n", type=int, default=8, help="candidates per composition")
    parser.add_argument("--max-new-tokens", type=int, default=1000, help="stop after this many tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search", default="top-k")
    parser.add_argument("--scorer", default="random", help="a registered scorer (crystalforge list scorer)")
    parser.add_argument("--scorer-opt", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--require", action="append", default=[], help="extra validator that must pass")
    parser.add_argument("--top", type=int, default=10, help="size of the shortlist")
    parser.add_argument("--out", type=Path, default=Path("out/examples/screening"))
    args = parser.parse_args(argv)

    items = [(c, None) for c in args.compositions]
    if args.file:
        items += read_compositions(args.file)
    if not items:
        parser.error("give compositions or --file")
    scorer_options = dict(pair.split("=", 1) for pair in args.scorer_opt)

    pm = cf.make_plugin_manager()
    model = cf.load_model(args.model)
    scorer = pm.registry("scorer").create(args.scorer, **scorer_options)
    candidates = []
    try:
        for composition, spacegroup in items:
            found = cf.generate(composition, spacegroup=spacegroup, n=args.n, model=model, seed=args.seed,
                                search=args.search, search_options={"max_new_tokens": args.max_new_tokens},
                                scorer=scorer, plugin_manager=pm, require=args.require)
            valid = sum(c.is_valid for c in found)
            print(f"{composition:<12} {spacegroup or 'any':<8} {valid}/{len(found)} valid")
            candidates.extend(found)
    finally:
        scorer.close()

    kept = [c for c in candidates if c.is_valid and c.score is not None and not math.isnan(c.score)]
    # best first in the scorer's direction (energies: lower is better)
    shortlist = sorted(kept, key=lambda c: c.score, reverse=not scorer.lower_is_better)[: args.top]

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for rank, candidate in enumerate(shortlist, 1):
        path = args.out / f"{rank:03d}_{candidate.name}.cif"
        path.write_text(candidate.cif)
        row = candidate.to_row()
        rows.append({"rank": rank, "name": candidate.name, "composition": candidate.composition,
                     "spacegroup": row["spacegroup_found"], "score": candidate.score,
                     "volume": row["volume"], "file": path.name})
    with (args.out / "shortlist.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["rank", "name", "composition", "spacegroup", "score",
                                                    "volume", "file"])
        writer.writeheader()
        writer.writerows(rows)
    direction = "lowest" if scorer.lower_is_better else "highest"
    print(f"{len(candidates)} generated, {len(kept)} valid with a score; "
          f"kept the {len(shortlist)} {direction}-scoring in {args.out / 'shortlist.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
