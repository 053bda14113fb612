#!/usr/bin/env python
"""Copy a training checkpoint into the package as the embedded default model.

The optimizer state is left out (it would triple the file and users never resume from
the embedded model); weights, ``model_args``, ``iter_num``, ``best_val_loss``, the
training config and the data card (when the checkpoint has one) are kept, written by
``save_checkpoint`` so the file carries the format version and vocabulary hash. The checkpoint is loaded back and its logits compared with
the source before the script reports success.

    python scripts/ship_default_model.py runs/default_model/ckpt.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from crystalforge.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

ASSET = Path(__file__).resolve().parent.parent / "crystalforge" / "assets" / "default_model" / "ckpt.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (ckpt.pt or its folder)")
    parser.add_argument("--to", type=Path, default=ASSET, help="where to write (default: the package asset)")
    args = parser.parse_args(argv)

    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    written = save_checkpoint(args.to, model, optimizer=None, iter_num=ckpt.get("iter_num", 0),
                              best_val_loss=ckpt.get("best_val_loss", float("inf")), config=ckpt.get("config"),
                              extra={k: ckpt[k] for k in ("data_card",) if ckpt.get(k) is not None})
    shipped = model_from_checkpoint(load_checkpoint(written)).eval()
    probe = torch.randint(0, model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = torch.equal(model(probe)[0], shipped(probe)[0])
    if not same:
        print(f"{written}: logits differ from {args.checkpoint}", file=sys.stderr)
        return 1
    size = written.stat().st_size / 1e6
    print(f"wrote {written} ({size:.1f} MB, iter {ckpt.get('iter_num')}, "
          f"best val loss {ckpt.get('best_val_loss'):.4f}); logits identical to the source")
    return 0


if __name__ == "__main__":
    sys.exit(main())
