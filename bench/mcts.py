"""Benchmark: MCTS with KV-cache reuse vs a reference that recomputes the full context per token.

Both runs use the same model, tree parameters, seed and scorer; only how next-token
logits are computed differs. The reference re-runs the whole prompt + prefix through the
model for every token of every rollout and for every node evaluation (what a cache-less
implementation does). Prints simulations/s side by side and whether both explored the
same candidates.

    .venv/bin/python bench/mcts.py                        # tiny random-weight model
    .venv/bin/python bench/mcts.py --model path/to/ckpt.pt --simulations 50 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from crystalforge.cif.tokenizer import default_tokenizer
from crystalforge.model.checkpoint import load_model
from crystalforge.scoring.random import RandomScorer
from crystalforge.search.mcts import GreedyTreeSearch, PrefixState, PUCTSearch, TreeRun, UCTSearch

STRATEGIES = {"puct": PUCTSearch, "uct": UCTSearch, "mcts-greedy": GreedyTreeSearch}


class _Ids:
    """The reference's 'cache': just the token ids so far."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = list(ids)

    def clone(self) -> "_Ids":
        return _Ids(self.ids)

    @property
    def length(self) -> int:
        return len(self.ids)


class RecomputeRun(TreeRun):
    """TreeRun computing every logit with a full forward pass over the (windowed) context."""

    @torch.no_grad()
    def _last(self, rows: list[list[int]]) -> torch.Tensor:
        block = self.block_size
        logits, _ = self.model(torch.tensor([r[-block:] for r in rows], dtype=torch.long, device=self.device))
        return logits[:, -1, :]

    def prefill(self, ids):
        return PrefixState(_Ids(ids), self._last([ids]), list(ids))

    def extend(self, state, tokens, copy=True):
        ids = state.ids + list(tokens)
        return PrefixState(_Ids(ids), self._last([ids]), ids)

    def rollout_many(self, leaves):
        return [self.rollout(state, n) for state, n in leaves]

    @torch.no_grad()
    def rollout(self, state, n):
        steps = self.budget - len(state.ids)
        rows = [list(state.ids) for _ in range(n)]
        out: list[list[int]] = [[] for _ in range(n)]
        finished = [False] * n
        active = list(range(n))
        logits = state.logits.expand(n, -1)
        bound = self.processor.start(rows) if self.processor is not None else None
        generated = len(state.ids) > len(self.prompt_ids)
        prev = [state.ids[-1] if generated else -1] * n
        for step in range(steps):
            if bound is not None:
                logits = bound(logits)
            uniforms = torch.rand(len(active), generator=self.generator)
            tokens = self.pick(logits, uniforms).tolist()
            if bound is not None:
                bound.advance(tokens)
            keep = []
            for i, (row, token) in enumerate(zip(active, tokens)):
                out[row].append(token)
                rows[row].append(token)
                if token == self.newline and prev[i] == self.newline:
                    finished[row] = True
                else:
                    keep.append(i)
            if not keep or step + 1 == steps:
                break
            active = [active[i] for i in keep]
            prev = [tokens[i] for i in keep]
            if bound is not None and len(keep) < len(tokens):
                bound.keep(keep)
            logits = self._last([rows[r] for r in active])
        return list(zip(out, finished))


def run_once(strategy, model, tokenizer, prompt, seed, scorer):
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    strategy.generate(model, tokenizer, [prompt], 1, generator=generator, scorer=scorer, progress=False)
    return time.perf_counter() - start, [r["cif"] for r in strategy.results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: a random-weight model)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128, help="embedding width of the random model")
    parser.add_argument("--search", default="puct", choices=sorted(STRATEGIES))
    parser.add_argument("--simulations", type=int, default=20)
    parser.add_argument("--n-rollouts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--batch-leaves", type=int, default=8,
                        help="also time the KV-cache search rolling out this many leaves per batch")
    parser.add_argument("--prompt", default="data_Ca1Ti1O3\n")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--constrain", default="none", help="logits masks of the searches (none: no masks)")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow recompute reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.model is None:
        from crystalforge.testing import write_tiny_model

        path = Path(tempfile.mkdtemp()) / "ckpt.pt"
        write_tiny_model(path, n_layer=args.layers, n_head=4, n_embd=args.width, block_size=1024)
        model_name = f"random {args.layers}x{args.width}"
    else:
        path, model_name = Path(args.model), args.model
    model = load_model(path, device=args.device)
    tokenizer = default_tokenizer()
    options = dict(num_simulations=args.simulations, n_rollouts=args.n_rollouts,
                   max_new_tokens=args.max_new_tokens, top_k=10, constrain=args.constrain)
    results = {}
    runs = [("kv-cache", TreeRun, 1)] + ([] if args.no_reference else [("recompute", RecomputeRun, 1)])
    if args.batch_leaves > 1:
        runs.append((f"kv-cache x{args.batch_leaves} leaves", TreeRun, args.batch_leaves))
    for label, run_class, batch_leaves in runs:
        strategy = STRATEGIES[args.search](batch_leaves=batch_leaves, **options)
        strategy.run_class = run_class
        results[label] = run_once(strategy, model, tokenizer, args.prompt, args.seed, RandomScorer())

    print(f"model: {model_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params), "
          f"device {args.device}, threads {args.threads}")
    print(f"search {args.search}: {args.simulations} simulations x {args.n_rollouts} rollouts, "
          f"max_new_tokens {args.max_new_tokens}, width 10")
    print(f"{'implementation':<24}{'seconds':>10}{'sim/s':>10}{'rollouts':>10}")
    for label, (seconds, texts) in results.items():
        print(f"{label:<24}{seconds:>10.2f}{args.simulations / seconds:>10.2f}{len(texts):>10}")
    if args.no_reference:
        return
    (fast, a), (slow, b) = results["kv-cache"], results["recompute"]
    same = sum(x == y for x, y in zip(a, b))
    print(f"speed-up (same tree, one leaf per batch): {slow / fast:.1f}x; "
          f"identical rollouts: {same}/{max(len(a), len(b))}")
    if args.batch_leaves > 1:
        batched = results[runs[-1][0]][0]
        print(f"speed-up with {args.batch_leaves} leaves per batch (virtual loss; a different tree): "
              f"{slow / batched:.1f}x over recompute, {fast / batched:.1f}x over one leaf")


if __name__ == "__main__":
    main()
