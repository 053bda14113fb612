"""Validity of a model's generations next to the real held-out structures they imitate.

For K held-out compositions per dataset (Perov-5: everything that is not pure carbon;
Carbon-24: pure carbon), prompt the model with the composition's cell formula and its real
space group, generate n candidates each, and run the validity checks. The same checks run
on the real held-out structures after the same preprocess -> postprocess round trip: the
strict bond-length check fails a share of real Perov-5 structures too, so the real rate is
the yardstick.

    python bench/default_model_quality.py runs/data_nodedup/test.tar.gz -k 10 -n 20
    python bench/default_model_quality.py TEST.tar.gz --model path/to/ckpt.pt --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from collections import defaultdict

import crystalforge as cf
from crystalforge.cif.extract import extract_data_formula, extract_space_group
from crystalforge.cif.io import iter_cifs
from crystalforge.plugins import make_plugin_manager

CHECKS = ("formula_consistency", "site_multiplicity", "bond_length", "space_group", "cell_sanity")


def dataset_of(formula: str) -> str:
    return "carbon_24" if re.fullmatch(r"C\d*", formula) else "perov_5"


def rates(reports) -> dict[str, float]:
    out = {check: sum(r.checks[check].passed for r in reports) / len(reports) for check in CHECKS}
    scores = [r.bond_length_score for r in reports if r.bond_length_score is not None]
    out["bond_length_score_mean"] = statistics.fmean(scores) if scores else float("nan")
    out["is_valid"] = sum(r.is_valid for r in reports) / len(reports)
    out["count"] = len(reports)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test_set", help="held-out preprocessed CIFs (.tar.gz, folder or CSV)")
    parser.add_argument("-k", type=int, default=10, help="compositions per dataset")
    parser.add_argument("-n", type=int, default=20, help="candidates per composition")
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--search", default="top-k")
    parser.add_argument("-o", "--option", action="append", default=[], help="search option KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the results here too")
    parser.add_argument("--dataset", action="append", choices=("perov_5", "carbon_24"),
                        help="only this dataset (repeatable; default: both)")
    parser.add_argument("--no-real", action="store_true",
                        help="skip validating the real held-out structures (quicker model comparisons)")
    args = parser.parse_args(argv)

    manager = make_plugin_manager(entry_points=False)  # built-in checks only
    by_dataset: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, text in iter_cifs(args.test_set):
        if text:
            by_dataset[dataset_of(extract_data_formula(text))].append((name, text))
    model = cf.load_model(args.model)
    options = dict(item.split("=", 1) for item in args.option)
    results = {}
    for dataset in sorted(by_dataset):
        if args.dataset and dataset not in args.dataset:
            continue
        items = by_dataset[dataset]
        real_reports = [] if args.no_real else [
            cf.validate(cf.postprocess_cif(text), plugin_manager=manager) for _, text in items]
        # one stream per dataset: the compositions drawn do not depend on --dataset
        chosen = random.Random(f"{args.seed}:{dataset}").sample(items, min(args.k, len(items)))
        generated = []
        start = time.perf_counter()
        for name, text in chosen:
            formula, spacegroup = extract_data_formula(text), extract_space_group(text)
            candidates = cf.generate(formula, spacegroup=spacegroup, n=args.n, search=args.search,
                                     search_options=options, model=model, seed=args.seed,
                                     batch_size=args.batch_size, plugin_manager=manager,
                                     workers=args.workers)
            generated.extend(c.report for c in candidates)
            print(f"{dataset} {name} {formula} {spacegroup}: "
                  f"{sum(c.report.is_valid for c in candidates)}/{len(candidates)} valid", file=sys.stderr)
        results[dataset] = {
            "compositions": [extract_data_formula(t) + " " + extract_space_group(t) for _, t in chosen],
            "generated": rates(generated),
            "real_held_out": rates(real_reports) if real_reports else None,
            "seconds": round(time.perf_counter() - start, 1),
        }
    header = f"{'dataset':<10} {'set':<14} " + " ".join(f"{c[:12]:>12}" for c in (*CHECKS, "bl_score", "valid", "n"))
    print(header)
    for dataset, result in results.items():
        for which in ("generated", "real_held_out"):
            r = result[which]
            if r is None:
                continue
            cells = [f"{100 * r[c]:11.1f}%" for c in CHECKS]
            cells += [f"{r['bond_length_score_mean']:12.3f}", f"{100 * r['is_valid']:11.1f}%", f"{r['count']:12d}"]
            print(f"{dataset:<10} {which:<14} " + " ".join(cells))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
