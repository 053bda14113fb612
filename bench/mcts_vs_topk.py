"""MCTS against plain top-k sampling with the same number of completed generations.

For each composition, PUCT tree search runs ``S`` simulations (one rollout each, so ``S``
complete generations) and returns its ``k`` best candidates; top-k sampling draws ``S``
candidates, all scored, and keeps its ``k`` best (valid first, then by score). Printed side
by side: validity of the kept candidates and the mean score (energy) of the valid ones.

    python bench/mcts_vs_topk.py CaTiO3 SrTiO3 BaTiO3 --spacegroup Pm-3m -S 40 -k 5 --scorer chgnet
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import crystalforge as cf
from crystalforge.generation.ranking import rank_candidates


def summarize(candidates) -> tuple[float, float, int]:
    valid = [c for c in candidates if c.is_valid]
    energies = [c.score for c in valid if c.score is not None and math.isfinite(c.score)]
    return len(valid) / max(1, len(candidates)), statistics.fmean(energies) if energies else math.nan, len(energies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compositions", nargs="+")
    parser.add_argument("--spacegroup", default=None)
    parser.add_argument("-S", "--simulations", type=int, default=40, help="generations per composition")
    parser.add_argument("-k", "--keep", type=int, default=5, help="best candidates kept per composition")
    parser.add_argument("--scorer", default="chgnet")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    manager = cf.make_plugin_manager()
    scorer = manager.registry("scorer").create(args.scorer)
    lower = bool(getattr(scorer, "lower_is_better", True))
    model = cf.load_model(args.model)
    rows = []
    for composition in args.compositions:
        common = dict(spacegroup=args.spacegroup, model=model, seed=args.seed, scorer=scorer,
                      plugin_manager=manager)
        start = time.perf_counter()
        tree = cf.generate(composition, n=args.keep, search="puct",
                           search_options={"num_simulations": args.simulations, "n_rollouts": 1,
                                           "n_best": args.keep}, **common)
        tree_seconds = time.perf_counter() - start
        start = time.perf_counter()
        sampled = cf.generate(composition, n=args.simulations, search="top-k", **common)
        sample_seconds = time.perf_counter() - start
        kept = rank_candidates(sampled, lower_is_better=lower)[: args.keep]
        for name, cands, seconds in (("puct", tree, tree_seconds), ("top-k", kept, sample_seconds)):
            validity, energy, n_scored = summarize(cands)
            rows.append((composition, name, len(cands), validity, energy, n_scored, seconds))
            print(f"{composition} {name}: {validity:.0%} valid, mean score {energy:.4f} "
                  f"({n_scored} scored) in {seconds:.0f}s", file=sys.stderr)
    print(f"{'composition':<12} {'search':<7} {'kept':>4} {'valid':>6} {'mean score (valid)':>19} {'seconds':>8}")
    for composition, name, kept_n, validity, energy, n_scored, seconds in rows:
        print(f"{composition:<12} {name:<7} {kept_n:>4} {validity:>6.0%} {energy:>19.4f} {seconds:>8.0f}")
    for name in ("puct", "top-k"):
        mine = [r for r in rows if r[1] == name]
        energies = [r[4] for r in mine if math.isfinite(r[4])]
        print(f"{'all':<12} {name:<7} {sum(r[2] for r in mine):>4} "
              f"{statistics.fmean(r[3] for r in mine):>6.0%} "
              f"{(statistics.fmean(energies) if energies else math.nan):>19.4f} {sum(r[6] for r in mine):>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
