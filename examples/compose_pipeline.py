#!/usr/bin/env python
"""Compose the generation pipeline from its parts, without the CLI or crystalforge.generate.

tokenizer -> prompt -> model + search strategy -> raw text -> postprocess -> validators
-> scorer: each step is one call, so you can replace any of them with your own.

    python examples/compose_pipeline.py
    python examples/compose_pipeline.py --model out/tiny -n 4 --composition SrTiO3 --spacegroup Pm-3m
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

import crystalforge as cf
from crystalforge.errors import CrystalforgeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("-n", type=int, default=4, help="samples to generate")
    parser.add_argument("--max-new-tokens", type=int, default=1000, help="stop after this many tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--composition", default="CaTiO3")
    parser.add_argument("--spacegroup", default="Pm-3m")
    parser.add_argument("--search", default="top-k", help="a registered search strategy")
    args = parser.parse_args(argv)

    # 1. the plugin manager: built-ins plus every installed plugin
    pm = cf.make_plugin_manager()

    # 2. tokenizer and model (None: the embedded default model)
    tokenizer = cf.load_tokenizer()
    model = cf.load_model(args.model)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"block size {model.config.block_size}; vocabulary {tokenizer.vocab_size} tokens")

    # 3. a search strategy built from the registry with typed options
    strategy = pm.registry("search").create(args.search, max_new_tokens=args.max_new_tokens)
    print(f"search: {strategy}")

    # 4. the prompt and the raw generations
    prompt = cf.make_prompt(args.composition, spacegroup=args.spacegroup)
    generator = torch.Generator().manual_seed(args.seed)
    [samples] = strategy.generate(model, tokenizer, [prompt], args.n, generator=generator,
                                  device="cpu", batch_size=args.n, progress=False)

    # 5. a scorer; the random one needs no model and shows the interface
    scorer = pm.registry("scorer").create("random", seed=args.seed)

    # 6. postprocess, validate (every registered validator runs) and score each sample
    for k, sample in enumerate(samples):
        try:
            cif = cf.postprocess_cif(sample.text)
        except CrystalforgeError as exc:
            print(f"[{k}] {sample.n_tokens} tokens, not a usable CIF: {exc}")
            continue
        report = cf.validate(cif, plugin_manager=pm)
        score = scorer.score(cif)
        shown = "nan" if math.isnan(score) else f"{score:.3f}"
        print(f"[{k}] {sample.n_tokens} tokens, finished={sample.finished}, "
              f"{report.summary()}, score={shown}")
    scorer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
