"""PUCT tree search against top-k sampling at equal wall time and at equal model forward tokens.

For each composition, PUCT runs ``-S`` simulations (``--batch-leaves`` leaves rolled out
together per batch) with a scorer; then top-k sampling (same temperature, top-k and
``constrain`` masks, same ``max_new_tokens``) draws candidates in chunks of ``--chunk``,
validates each and scores the valid ones, until it has used at least the wall time AND at
least the model forward tokens PUCT used. Top-k's best valid candidate is then taken twice:
among the candidates judged by the time PUCT's wall time had passed, and among those
generated within PUCT's forward tokens (a chunk's tokens shared out evenly among its
candidates); the candidate that crosses a budget counts, so top-k gets at least PUCT's
budget, never less. Both sides judge candidates the same way: post-processed, the
validators of ``crystalforge.validate``, the scorer only for valid ones, each distinct text
once. Forward tokens are the token positions the model processed (prefill and decode,
padding included), counted on ``model.forward_cached``.

Prompts hold the cell composition only (``data_<formula>``, the CSP convention of CDVAE and
DiffCSP); ``--spacegroup`` adds a space group to every prompt. Without compositions, the
first ten Perov-5 test compositions with ``Z = 1`` (5-atom cells) are used, in the order of
CrystaLLM's ``resources/benchmarks/perov_5/test.csv``.

The table also gives the median energy of each side's valid candidates (top-k's at equal
tokens): whether the tree shifts what it generates, not only its best draw.

Verdict per budget: PUCT passes when its best candidate is valid and at least as low in
energy as top-k's best in ``--need`` (8) of the compositions, and the mean best energy
(over compositions where both found a valid scored candidate) is lower.

    nice -n 10 python bench/mcts_vs_topk.py -S 24 --batch-leaves 8 --scorer chgnet
    python bench/mcts_vs_topk.py CaTiO3 SrTiO3 -S 8 --scorer random
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

import crystalforge as cf
from crystalforge.search.mcts import best_evaluations
from crystalforge.search.mcts.evaluation import _default_validate, _postprocess
from crystalforge.util import format_table

#: the first ten rows of Perov-5's test split (CrystaLLM resources/benchmarks/perov_5/test.csv),
#: all with Z = 1 (5 atoms per cell), written as cell compositions
PEROV5_TEST = ("TiOsNOF", "TlRuO2F", "BiPtN2O", "VRhNOF", "CuAsN3", "LiSiNO2", "PbWNOF", "HgSbO3",
               "BeHgSO2", "InMoNOF")


class ForwardCounter:
    """Count the token positions a model processes (``idx.numel()`` of each ``forward_cached``)."""

    def __init__(self, model) -> None:
        self.tokens = 0
        self.calls = 0
        original = model.forward_cached

        def counted(idx, *args, **kwargs):
            self.tokens += int(idx.numel())
            self.calls += 1
            return original(idx, *args, **kwargs)

        model.forward_cached = counted


class Judge:
    """Validity and score of candidate texts, each distinct text once (as the tree does)."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.seen: dict[str, tuple[bool, float]] = {}

    def __call__(self, text: str) -> tuple[bool, float]:
        if text not in self.seen:
            cif = _postprocess(text)
            valid = cif is not None and bool(_default_validate(cif).is_valid)
            score = float(self.scorer.score(cif)) if valid else math.nan
            self.seen[text] = (valid, score)
        return self.seen[text]


def warm_up_cif() -> str:
    """Return a real CIF (cubic CaTiO3) to load the scorer's model with."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    structure = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Ca", "Ti", "O"],
                                          [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])
    return str(CifWriter(structure))


def median_valid(judged: list[tuple[bool, float]]) -> float:
    """Return the median finite score of the valid candidates (nan when there is none)."""
    scores = [s for valid, s in judged if valid and math.isfinite(s)]
    return statistics.median(scores) if scores else math.nan


def best_of(judged: list[tuple[bool, float]], lower: bool) -> float:
    """Return the best finite score among valid candidates (nan when there is none)."""
    scores = [s for valid, s in judged if valid and math.isfinite(s)]
    if not scores:
        return math.nan
    return min(scores) if lower else max(scores)


def run_puct(args, model, counter, tokenizer, prompt, scorer, manager):
    options = {"num_simulations": args.simulations, "n_rollouts": args.n_rollouts, "width": args.width,
               "c": args.c, "reward_k": args.reward_k, "max_backup": args.max_backup, "batch_leaves": args.batch_leaves,
               "temperature": args.temperature, "top_k": args.top_k, "constrain": args.constrain,
               "max_new_tokens": args.max_new_tokens}
    strategy = manager.registry("search").create("puct", **options)
    counter.tokens = counter.calls = 0
    start = time.perf_counter()
    strategy.generate(model, tokenizer, [prompt], 1, generator=torch.Generator().manual_seed(args.seed),
                      scorer=scorer, progress=False)
    seconds = time.perf_counter() - start
    rows = strategy.results
    distinct = {r["cif"]: (bool(r["is_valid"]), float(r["score"])) for r in rows}
    return {"seconds": seconds, "tokens": counter.tokens, "calls": counter.calls, "rollouts": len(rows),
            "distinct": len(distinct), "valid": sum(v for v, _ in distinct.values()),
            "best": best_of(list(distinct.values()), args.lower), "median": median_valid(list(distinct.values()))}


def run_topk(args, model, counter, tokenizer, prompt, scorer, manager, wall_budget, token_budget):
    strategy = manager.registry("search").create(
        "top-k", temperature=args.temperature, top_k=args.top_k, constrain=args.constrain,
        max_new_tokens=args.max_new_tokens)
    judge = Judge(scorer)
    counter.tokens = counter.calls = 0
    timeline: list[tuple[float, int, bool, float]] = []  # (seconds, tokens) when each candidate was judged
    start = time.perf_counter()
    drawn = 0
    while (not timeline or timeline[-1][0] < wall_budget or timeline[-1][1] < token_budget) \
            and drawn < args.max_factor * args.simulations:
        indices = list(range(drawn, drawn + args.chunk))
        samples = strategy.generate(model, tokenizer, [prompt], len(indices), indices=[indices],
                                    generator=torch.Generator().manual_seed(args.seed),
                                    batch_size=args.chunk, progress=False)[0]
        before, spent = timeline[-1][1] if timeline else 0, counter.tokens - (timeline[-1][1] if timeline else 0)
        drawn += len(indices)
        for j, sample in enumerate(samples):
            valid, score = judge(sample.text)
            # a chunk's tokens are shared out evenly among its candidates
            tokens = before + round(spent * (j + 1) / len(samples))
            timeline.append((time.perf_counter() - start, tokens, valid, score))

    def within(limit_index: int) -> list[tuple[bool, float]]:
        return [(v, s) for _, _, v, s in timeline[: limit_index + 1]]

    # the first candidate reaching each budget closes it (top-k gets at least PUCT's budget)
    at_wall = next((i for i, t in enumerate(timeline) if t[0] >= wall_budget), len(timeline) - 1)
    at_tokens = next((i for i, t in enumerate(timeline) if t[1] >= token_budget), len(timeline) - 1)
    return {"seconds": timeline[at_wall][0], "tokens": timeline[at_tokens][1], "n_wall": at_wall + 1,
            "n_tokens": at_tokens + 1, "best_wall": best_of(within(at_wall), args.lower),
            "best_tokens": best_of(within(at_tokens), args.lower), "drawn": drawn,
            "total_seconds": timeline[-1][0], "total_tokens": timeline[-1][1],
            "valid_wall": sum(v for v, _ in within(at_wall)), "valid_tokens": sum(v for v, _ in within(at_tokens)),
            "median_tokens": median_valid(within(at_tokens))}


def no_worse(puct: float, topk: float, lower: bool) -> bool:
    """PUCT's best is valid (finite) and at least as good as top-k's (any valid beats none)."""
    if not math.isfinite(puct):
        return False
    if not math.isfinite(topk):
        return True
    return puct <= topk + 1e-9 if lower else puct >= topk - 1e-9


def verdict(label: str, pairs: list[tuple[float, float]], lower: bool, need: int, tol: float = 0.0) -> bool:
    wins = sum(no_worse(p, t, lower) for p, t in pairs)
    # top-k's best moved by tol in PUCT's favour: how often the two are the same within tol
    near = sum(no_worse(p, t + tol if lower else t - tol, lower) for p, t in pairs)
    both = [(p, t) for p, t in pairs if math.isfinite(p) and math.isfinite(t)]
    mean_p = statistics.fmean(p for p, _ in both) if both else math.nan
    mean_t = statistics.fmean(t for _, t in both) if both else math.nan
    better_mean = bool(both) and (mean_p < mean_t if lower else mean_p > mean_t)
    ok = wins >= need and better_mean
    print(f"{label}: PUCT best valid and no worse than top-k's in {wins}/{len(pairs)} (need {need}); "
          f"mean best {mean_p:.4f} vs top-k {mean_t:.4f} over {len(both)} compositions -> "
          f"{'PASS' if ok else 'FAIL'} (within {tol:g} of top-k's or better: {near}/{len(pairs)})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compositions", nargs="*", help="cell compositions (default: 10 Perov-5 test ones)")
    parser.add_argument("--spacegroup", default=None, help="add this space group to every prompt")
    parser.add_argument("-S", "--simulations", type=int, default=24, help="PUCT simulations per composition")
    parser.add_argument("--batch-leaves", type=int, default=8, help="PUCT leaves rolled out per batch")
    parser.add_argument("--n-rollouts", type=int, default=1, help="PUCT completions per leaf")
    parser.add_argument("-c", "--c", type=float, default=5.0, help="PUCT exploration constant")
    parser.add_argument("--width", type=int, default=10, help="PUCT children per node")
    parser.add_argument("--reward-k", type=float, default=2.0, help="PUCT reward steepness")
    parser.add_argument("--max-backup", type=float, default=0.0,
                        help="PUCT value: weight of the best reward below a node (0: mean, 1: best)")
    parser.add_argument("--tie-tol", type=float, default=0.005,
                        help="also count compositions where PUCT's best is within this of top-k's "
                             "(scorer units; informational, the verdict stays strict)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--constrain", default="all", help="logits masks of both searches")
    parser.add_argument("--max-new-tokens", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=8, help="top-k samples generated per batch")
    parser.add_argument("--max-factor", type=int, default=4, help="top-k draws at most this many x S")
    parser.add_argument("--need", type=int, default=8, help="compositions PUCT must win or tie")
    parser.add_argument("--scorer", default="chgnet")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared CPU more threads only wait on each other)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    compositions = args.compositions or list(PEROV5_TEST)

    manager = cf.make_plugin_manager()
    scorer = manager.registry("scorer").create(args.scorer)
    args.lower = bool(getattr(scorer, "lower_is_better", True))
    model = cf.load_model(args.model)
    tokenizer = cf.load_tokenizer()
    counter = ForwardCounter(model)
    scorer.score(warm_up_cif())  # load the scorer's model before anything is timed
    print(f"prompts: {'composition + space group ' + args.spacegroup if args.spacegroup else 'composition only'}; "
          f"PUCT S={args.simulations} batch_leaves={args.batch_leaves} n_rollouts={args.n_rollouts} c={args.c} "
          f"width={args.width} reward_k={args.reward_k} max_backup={args.max_backup}; temperature={args.temperature} top_k={args.top_k} "
          f"constrain={args.constrain}; scorer {args.scorer}; torch threads {torch.get_num_threads()}",
          flush=True)
    rows, wall_pairs, token_pairs = [], [], []
    for composition in compositions:
        prompt = cf.make_prompt(composition, spacegroup=args.spacegroup)
        puct = run_puct(args, model, counter, tokenizer, prompt, scorer, manager)
        topk = run_topk(args, model, counter, tokenizer, prompt, scorer, manager, puct["seconds"], puct["tokens"])
        wall_pairs.append((puct["best"], topk["best_wall"]))
        token_pairs.append((puct["best"], topk["best_tokens"]))
        row = (composition, f"{topk['best_wall']:.4f}", f"{topk['best_tokens']:.4f}", f"{puct['best']:.4f}",
               f"{puct['valid']}/{puct['distinct']}", f"{puct['seconds']:.0f}", f"{topk['seconds']:.0f}",
               puct["tokens"], topk["tokens"], f"{topk['valid_wall']}/{topk['n_wall']}",
               f"{topk['valid_tokens']}/{topk['n_tokens']}", f"{puct['median']:.4f}", f"{topk['median_tokens']:.4f}")
        rows.append(row)
        print("  ".join(str(x) for x in row), file=sys.stderr, flush=True)
    header = ("composition", "top-k best (=wall)", "top-k best (=tokens)", "PUCT best", "PUCT valid/distinct",
              "PUCT s", "top-k s", "PUCT fwd tokens", "top-k fwd tokens", "top-k valid/n (=wall)",
              "top-k valid/n (=tokens)", "PUCT median valid", "top-k median valid (=tokens)")
    print("\n".join(format_table(header, rows)))
    ok_wall = verdict("equal wall time", wall_pairs, args.lower, args.need, args.tie_tol)
    ok_tokens = verdict("equal forward tokens", token_pairs, args.lower, args.need, args.tie_tol)
    return 0 if ok_wall and ok_tokens else 1


if __name__ == "__main__":
    sys.exit(main())
