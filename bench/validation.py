"""Validation throughput: crystalforge's ``validate`` against a straightforward reference.

The reference judges a CIF the way CrystaLLM's evaluation script does, written out plainly
here: every check reads the CIF on its own (pymatgen's ``CifParser`` for the fields,
``Structure.from_str`` for the structure), the bond-length check runs ``CrystalNN`` over
every site, and -- in the default ``evaluate`` mode -- the bond score and space group are
computed once for the statistics and again inside ``is_valid``, as CrystaLLM's
``evaluate_cifs.py`` does. ``--reference single`` computes each check once instead (one
CrystalNN pass per CIF). Both sides run on the same CIFs (real benchmark structures after
the preprocess -> postprocess chain) in the same process, on one core, and the bench
prints structures per second for each, the ratio, and how often the verdicts agree.

    nice python bench/validation.py --per-dataset 100
    python bench/validation.py --data ../shared/data --per-dataset 300 --reference single
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

DATASETS = ("perov_5", "carbon_24")
REPO = Path(__file__).resolve().parents[1]


# --- the reference: each check on its own, as CrystaLLM's evaluation does -----------------

def _first_block(cif: str) -> dict:
    from pymatgen.io.cif import CifParser

    return next(iter(CifParser.from_str(cif).as_dict().values()))


def reference_formula(cif: str) -> bool:
    import re

    from pymatgen.core import Composition

    block = _first_block(cif)
    data_line = re.search(r"data_([A-Za-z0-9]+)\n", cif).group(1)
    formulas = (data_line, block["_chemical_formula_sum"], block["_chemical_formula_structural"])
    return len({Composition(f).reduced_formula for f in formulas}) == 1


def reference_multiplicity(cif: str) -> bool:
    from pymatgen.core import Composition
    from pymatgen.io.cif import CifParser

    blocks = list(CifParser.from_str(cif).as_dict().values())
    counted: dict[str, int] = {}
    for block in blocks:
        if "_atom_site_type_symbol" in block and "_atom_site_symmetry_multiplicity" in block:
            for symbol, count in zip(block["_atom_site_type_symbol"], block["_atom_site_symmetry_multiplicity"]):
                counted[symbol] = counted.get(symbol, 0) + int(count)
    return Composition(blocks[0]["_chemical_formula_sum"]).as_dict() == counted


def reference_bond_score(cif: str) -> float:
    from pymatgen.analysis.local_env import CrystalNN
    from pymatgen.core import Structure

    from crystalforge.validation.checks import expected_bond_length

    structure = Structure.from_str(cif, fmt="cif")
    finder = CrystalNN()
    reasonable = counted = 0
    for index, site in enumerate(structure):
        for neighbour in finder.get_nn_info(structure, index):
            if neighbour["site_index"] == index:
                continue
            other = neighbour["site"]
            ratio = site.distance(other) / expected_bond_length(site.specie, other.specie)
            if "H" in (site.specie.symbol, other.specie.symbol):
                reasonable += ratio < 2.5
            else:
                reasonable += 0.68 < ratio < 1.32
            counted += 1
    return reasonable / counted


def reference_space_group(cif: str) -> bool:
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = Structure.from_str(cif, fmt="cif")
    stated = _first_block(cif)["_symmetry_space_group_name_H-M"]
    return stated.strip() == SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_symbol().strip()


def _safe(function, cif):
    try:
        return function(cif)
    except Exception:  # noqa: BLE001 - a raise is a failed check, as in CrystaLLM's evaluation
        return None


def reference_verdicts(cif: str, mode: str) -> dict:
    """Return the reference's per-check results and is_valid for one CIF."""
    out = {"formula_consistency": _safe(reference_formula, cif) is True,
           "site_multiplicity": _safe(reference_multiplicity, cif) is True}
    score = _safe(reference_bond_score, cif)
    space_group = _safe(reference_space_group, cif) is True
    if mode == "evaluate":  # is_valid recomputes what the statistics computed already
        valid = (out["formula_consistency"] and _safe(reference_multiplicity, cif) is True
                 and (_safe(reference_bond_score, cif) or 0.0) >= 1.0 and _safe(reference_space_group, cif) is True)
    else:
        valid = out["formula_consistency"] and out["site_multiplicity"] and (score or 0.0) >= 1.0 and space_group
    out.update(bond_length=score is not None and score >= 1.0, bond_score=score, space_group=space_group,
               is_valid=bool(valid))
    return out


# --- the bench ---------------------------------------------------------------------------

def load_cifs(data: Path, per_dataset: int, seed: int) -> list[tuple[str, str]]:
    """Return ``(dataset, chain CIF)`` for a seeded sample of real structures per dataset."""
    from crystalforge.cif.postprocess import postprocess_cif
    from crystalforge.cif.preprocess import preprocess_cif

    csv.field_size_limit(2**31 - 1)
    out = []
    for dataset in DATASETS:
        with open(data / dataset / "val.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in random.Random(f"{seed}:{dataset}").sample(rows, min(per_dataset, len(rows))):
            out.append((dataset, postprocess_cif(preprocess_cif(row["cif"]))))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-dataset", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", choices=("evaluate", "single"), default="evaluate",
                        help="evaluate: as CrystaLLM's evaluate_cifs.py (is_valid recomputes); single: each check once")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from crystalforge.plugins import make_plugin_manager
    from crystalforge.validation.report import run_checks, validators

    cifs = load_cifs(args.data, args.per_dataset, args.seed)
    built = validators(make_plugin_manager(entry_points=False))
    run_checks(cifs[0][1], built)  # imports and caches outside the timing
    reference_verdicts(cifs[0][1], "single")
    timings = {}
    results = {}
    for dataset in DATASETS:
        chosen = [cif for name, cif in cifs if name == dataset]
        start = time.process_time()
        ours = [run_checks(cif, built) for cif in chosen]
        timings[(dataset, "crystalforge")] = time.process_time() - start
        start = time.process_time()
        theirs = [reference_verdicts(cif, args.reference) for cif in chosen]
        timings[(dataset, "reference")] = time.process_time() - start
        results[dataset] = (ours, theirs)
    print(f"{len(cifs)} real structures ({args.per_dataset} per dataset), one core, CPU seconds; "
          f"reference mode {args.reference}")
    print(f"{'dataset':<10} {'crystalforge/s':>15} {'reference/s':>12} {'ratio':>6} {'verdicts agree':>15} "
          f"{'checks agree':>13} {'valid':>6}")
    total_ours = total_theirs = 0.0
    all_agree = True
    for dataset in DATASETS:
        ours, theirs = results[dataset]
        count = len(ours)
        t_ours, t_theirs = timings[(dataset, "crystalforge")], timings[(dataset, "reference")]
        total_ours, total_theirs = total_ours + t_ours, total_theirs + t_theirs
        verdicts = sum(o.is_valid == t["is_valid"] for o, t in zip(ours, theirs))
        checks = sum(
            all(o.checks[name].passed == t[name] for name in ("formula_consistency", "site_multiplicity",
                                                             "bond_length", "space_group"))
            and (t["bond_score"] is None or math.isclose(o.bond_length_score or -1, t["bond_score"], abs_tol=1e-9))
            for o, t in zip(ours, theirs))
        all_agree &= verdicts == count and checks == count
        print(f"{dataset:<10} {count / t_ours:>15.2f} {count / t_theirs:>12.2f} {t_theirs / t_ours:>5.2f}x "
              f"{verdicts:>7}/{count:<7} {checks:>6}/{count:<6} {sum(o.is_valid for o in ours) / count:>6.1%}")
    print(f"{'all':<10} {len(cifs) / total_ours:>15.2f} {len(cifs) / total_theirs:>12.2f} "
          f"{total_theirs / total_ours:>5.2f}x")
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
