"""Print training throughput (tokens/s) of the real training loop for a model size and device.

Runs ``crystalforge.train.loop.train`` for a few iterations on random token ids (or on a
dataset made by ``crystalforge data prepare`` with ``--dataset``), without evaluation, and
reports tokens per second after the first (warm-up) step.

    python bench/train_throughput.py --n-layer 4 --n-head 4 --n-embd 128 --block-size 1024 --batch-size 8
    python bench/train_throughput.py --config configs/crystallm_small.yaml --device cuda --iters 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def _random_dataset(folder: Path, tokens: int, seed: int) -> Path:
    from crystalforge.data.tokenize import make_meta
    from crystalforge.cif.io import dump_pickle

    vocab = make_meta()["vocab_size"]
    rng = np.random.default_rng(seed)
    rng.integers(0, vocab, size=tokens, dtype=np.uint16).tofile(folder / "train.bin")
    dump_pickle(folder / "meta.pkl", make_meta())
    return folder


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML training config (its sizes are the starting point).")
    parser.add_argument("--dataset", help="Dataset folder (default: random ids).")
    for name in ("n-layer", "n-head", "n-embd", "block-size", "batch-size", "gradient-accumulation-steps"):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--device", default=None, help="cpu, cuda, auto (default: the config's, else auto).")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16, auto.")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model.")
    parser.add_argument("--iters", type=int, default=10, help="Timed iterations (plus one warm-up).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    args = parser.parse_args(argv)

    import torch

    from crystalforge.train.config import load_config
    from crystalforge.train.loop import train

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {key.replace("-", "_"): getattr(args, key.replace("-", "_"))
                 for key in ("n-layer", "n-head", "n-embd", "block-size", "batch-size", "gradient-accumulation-steps")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.device:
        overrides["device"] = args.device
    if args.dtype:
        overrides["dtype"] = args.dtype
    if args.compile:
        overrides["compile"] = True
    with tempfile.TemporaryDirectory() as tmp:
        base = load_config(args.config, [f"{k}={v}" for k, v in overrides.items()])
        if args.dataset:
            dataset = Path(args.dataset)
        else:
            dataset = _random_dataset(Path(tmp), max(200_000, 4 * base.block_size * base.batch_size), 0)
        config = base.replace(dataset=str(dataset), out_dir=str(Path(tmp) / "out"), max_iters=args.iters + 1,
                              eval_interval=10**9, eval_iters_train=0, eval_iters_val=0, validate=False,
                              init_from="scratch", always_save_checkpoint=False, decay_lr=False)
        result = train(config, progress=False)
    from crystalforge.model.gpt import GPT, GPTConfig

    params = GPT(GPTConfig(block_size=config.block_size, n_layer=config.n_layer, n_head=config.n_head,
                           n_embd=config.n_embd, bias=config.bias)).num_params()
    figures = {
        "tokens_per_second": round(result.tokens_per_second, 1),
        "parameters": params,
        "n_layer": config.n_layer, "n_head": config.n_head, "n_embd": config.n_embd,
        "block_size": config.block_size, "batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "device": config.device, "dtype": config.dtype, "compile": config.compile,
        "timed_iterations": args.iters, "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['tokens_per_second']:,.0f} tokens/s  ({params / 1e6:.2f}M parameters, "
              f"{config.n_layer}x{config.n_head}x{config.n_embd}, block {config.block_size}, "
              f"batch {config.batch_size}x{config.gradient_accumulation_steps}, device {config.device}, "
              f"{torch.get_num_threads()} threads)")
    return figures


if __name__ == "__main__":
    main()
