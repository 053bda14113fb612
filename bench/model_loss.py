#!/usr/bin/env python
"""Next-token loss of checkpoints on a tokenized dataset, measured the same way for each.

Training prints losses estimated on a few random windows, drawn anew at every evaluation,
which makes two checkpoints hard to compare. This script scores every checkpoint given on
the same windows: every CIF-aligned window of the validation split (``starts_val.pkl``)
and a seeded draw of ``--train-windows`` windows of the training split, and prints the
mean loss per split side by side.

    python bench/model_loss.py runs/data_nodedup crystalforge/assets/default_model/ckpt.pt runs/phase3/ckpt.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from crystalforge.model.checkpoint import load_checkpoint, model_from_checkpoint
from crystalforge.train.dataset import TokenSplit, open_dataset


def window_offsets(split: TokenSplit, block_size: int, count: int | None, seed: int) -> np.ndarray:
    """Offsets of the windows to score: all CIF starts (``count`` None) or a seeded draw."""
    offsets = split.starts if split.starts is not None else np.arange(0, len(split) - block_size - 1, block_size)
    if count is not None and count < len(offsets):
        offsets = np.sort(np.random.default_rng(seed).choice(offsets, size=count, replace=False))
    return np.asarray(offsets)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, split: TokenSplit, offsets: np.ndarray, block_size: int,
              batch_size: int) -> float:
    """Token-weighted mean cross-entropy over the windows at ``offsets``."""
    total, count = 0.0, 0
    for first in range(0, len(offsets), batch_size):
        x, y = split.windows(offsets[first:first + batch_size], block_size)
        _, loss = model(x, y)
        total += float(loss) * y.numel()
        count += y.numel()
    return total / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="tokenized dataset folder (train.bin, val.bin, starts*.pkl)")
    parser.add_argument("checkpoints", type=Path, nargs="+", help="ckpt.pt files or their folders")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--train-windows", type=int, default=400, help="training windows drawn (seeded)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_grad_enabled(False)
    dataset = open_dataset(args.dataset, args.block_size, need_val=True)
    plan = {"train": window_offsets(dataset.train, args.block_size, args.train_windows, args.seed),
            "val": window_offsets(dataset.val, args.block_size, None, args.seed)}
    print(f"dataset {args.dataset}: {len(plan['train'])} train windows (seed {args.seed}), "
          f"{len(plan['val'])} val windows (all CIF starts), {args.block_size} tokens each")
    print(f"{'checkpoint':<50} {'iter':>6} {'train loss':>11} {'val loss':>9}")
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt).eval()
        losses = {name: mean_loss(model, getattr(dataset, name), offsets, args.block_size, args.batch_size)
                  for name, offsets in plan.items()}
        print(f"{str(path):<50} {int(ckpt.get('iter_num', 0)):>6} {losses['train']:>11.4f} {losses['val']:>9.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
