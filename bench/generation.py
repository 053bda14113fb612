"""Compare batched KV-cache generation with a one-sequence, no-cache reference loop.

Both paths use the same random-weight GPT, the same prompts (real ``make_prompt`` output
for a few compositions), the same device and the same top-k picker; the reference decodes
one sequence at a time and runs a full forward pass over the whole context for every
token (what generation costs without a KV cache or batching). By default both generate
exactly ``--max-new-tokens`` tokens per sequence (the end-of-CIF stop is off, since random
weights rarely produce it); ``--stop`` turns it on. The reference decodes only the first
``--reference-sequences`` sequences: its rates are per token and per structure, so a
subset measures them fairly and keeps the run short.

    OMP_NUM_THREADS=2 python bench/generation.py
    python bench/generation.py --n-layer 12 --n-head 12 --n-embd 768 --device cuda --batch-size 128 --n 32

``--constraints MODEL`` instead measures what the logits masks (strategy option
``constrain``) do to validity with a trained checkpoint: the same prompts, seed and
strategy with ``constrain`` none / composition / grammar / stoichiometry / both / all, side by side.

    python bench/generation.py --constraints path/to/ckpt.pt --prompts 8 --n 10 --max-new-tokens 1000
"""

from __future__ import annotations

import argparse
import json
import time

COMPOSITIONS = [("CaTiO3", "Pm-3m"), ("Na2Cl2", None), ("K3Br3", "Fm-3m"), ("Sr2Ti2O6", "P4/mmm"),
                ("LiFePO4", "Pnma"), ("C8", None), ("BaSnO3", "Pm-3m"), ("Mg2Si1", None)]


def reference_generate(model, prompt_ids, max_new_tokens, pick, generator, newline_id, stop):
    """Decode one sequence with a full forward pass per token (no cache); return the new ids."""
    import torch

    ids = torch.tensor([prompt_ids], device=model.device)
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits, _ = model(ids)
            token = pick(logits[:, -1, :], torch.rand(1, generator=generator))
            ids = torch.cat([ids, token.view(1, 1).to(ids.device)], dim=1)
            out.append(int(token))
            if stop and len(out) >= 1 and out[-1] == newline_id and int(ids[0, -2]) == newline_id:
                break
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--prompts", type=int, default=4, help="Distinct prompts (compositions).")
    parser.add_argument("--n", type=int, default=8, help="Samples per prompt.")
    parser.add_argument("--batch-size", type=int, default=32, help="Rows decoded together.")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--reference-sequences", type=int, default=4, help="Sequences the reference loop decodes.")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--stop", action="store_true", help="Stop rows at the end-of-CIF marker.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--constraints", metavar="MODEL", default=None,
                        help="Compare validity with each constrain value (none ... all) using this checkpoint.")
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    args = parser.parse_args(argv)
    if args.constraints:
        return compare_constraints(args)

    import torch

    from crystalforge.cif.prompt import make_prompt
    from crystalforge.cif.tokenizer import default_tokenizer
    from crystalforge.model.checkpoint import parse_dtype
    from crystalforge.model.gpt import GPT, GPTConfig
    from crystalforge.search.decode import make_picker, sample_batch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size)
    model = GPT(config).to(device=args.device, dtype=parse_dtype(args.dtype)).eval()
    tokenizer = default_tokenizer()
    specs = [COMPOSITIONS[i % len(COMPOSITIONS)] for i in range(args.prompts)]
    prompts = [tokenizer.encode(make_prompt(c, sg)) for c, sg in specs]
    pick = make_picker(temperature=1.0, top_k=args.top_k)
    rows = [(p, i) for p in range(len(prompts)) for i in range(args.n)]

    def sync():
        if str(args.device).startswith("cuda"):
            torch.cuda.synchronize()

    def batched(work):
        tokens = 0
        for start in range(0, len(work), args.batch_size):
            chunk = work[start : start + args.batch_size]
            order = list(dict.fromkeys(p for p, _ in chunk))
            repeats = [sum(1 for p, _ in chunk if p == q) for q in order]
            generators = [torch.Generator().manual_seed(args.seed * 100_003 + p * 1009 + i) for p, i in chunk]
            decoded = sample_batch(model, [prompts[q] for q in order], repeats=repeats,
                                   max_new_tokens=args.max_new_tokens, pick_next=pick, generator=generators,
                                   stop_on_double_newline=args.stop, newline_id=tokenizer.newline_id)
            tokens += sum(len(d.ids) for d in decoded)
        sync()
        return tokens

    def reference(work):
        tokens = 0
        for p, i in work:
            generator = torch.Generator().manual_seed(args.seed * 100_003 + p * 1009 + i)
            tokens += len(reference_generate(model, prompts[p], args.max_new_tokens, pick, generator,
                                             tokenizer.newline_id, args.stop))
        sync()
        return tokens

    # warm-up (allocator, kernels), not timed
    sample_batch(model, prompts[:1], repeats=2, max_new_tokens=4, pick_next=pick, generator=torch.Generator())
    reference_generate(model, prompts[0], 4, pick, torch.Generator(), tokenizer.newline_id, False)

    started = time.perf_counter()
    batched_tokens = batched(rows)
    batched_seconds = time.perf_counter() - started
    subset = rows[: args.reference_sequences]
    started = time.perf_counter()
    reference_tokens = reference(subset)
    reference_seconds = time.perf_counter() - started

    result = {
        "model": {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd,
                  "block_size": args.block_size, "parameters": model.num_params()},
        "device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "stop": args.stop,
        "batched": {"sequences": len(rows), "tokens": batched_tokens, "seconds": batched_seconds,
                    "tokens_per_s": batched_tokens / batched_seconds,
                    "structures_per_s": len(rows) / batched_seconds},
        "reference": {"sequences": len(subset), "tokens": reference_tokens, "seconds": reference_seconds,
                      "tokens_per_s": reference_tokens / reference_seconds,
                      "structures_per_s": len(subset) / reference_seconds},
    }
    result["speedup_tokens_per_s"] = result["batched"]["tokens_per_s"] / result["reference"]["tokens_per_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    m = result["model"]
    print(f"model {m['n_layer']} layers / {m['n_embd']} wide / block {m['block_size']} "
          f"({m['parameters'] / 1e6:.1f}M params), {args.device} {args.dtype}, {result['threads']} threads, "
          f"{args.max_new_tokens} new tokens per sequence")
    print(f"{'path':<34}{'sequences':>10}{'tokens':>9}{'seconds':>9}{'tokens/s':>11}{'structures/s':>14}")
    for label, key in ((f"batched KV cache (batch {args.batch_size})", "batched"),
                       ("reference (1 seq, no cache)", "reference")):
        r = result[key]
        print(f"{label:<34}{r['sequences']:>10}{r['tokens']:>9}{r['seconds']:>9.2f}"
              f"{r['tokens_per_s']:>11.1f}{r['structures_per_s']:>14.3f}")
    print(f"speed-up (tokens/s): {result['speedup_tokens_per_s']:.1f}x")
    return result


def compare_constraints(args) -> dict:
    """Generate with each ``constrain`` value from a trained model; report validity side by side."""
    import torch

    import crystalforge as cf

    if args.threads:
        torch.set_num_threads(args.threads)
    model = cf.load_model(args.constraints, device=args.device)
    specs = [COMPOSITIONS[i % len(COMPOSITIONS)] for i in range(args.prompts)]
    result = {}
    for constrain in ("none", "composition", "grammar", "stoichiometry", "both", "all"):
        started = time.perf_counter()
        candidates = []
        for composition, spacegroup in specs:
            candidates += cf.generate(composition, spacegroup=spacegroup, n=args.n, model=model, seed=args.seed,
                                      search="top-k", batch_size=args.batch_size,
                                      search_options={"top_k": args.top_k, "max_new_tokens": args.max_new_tokens,
                                                      "constrain": constrain})
        seconds = time.perf_counter() - started
        total = len(candidates)
        result[constrain] = {
            "candidates": total,
            "finished": sum(c.finished for c in candidates) / total,
            "parsed": sum(c.structure is not None for c in candidates) / total,
            "valid": sum(c.is_valid for c in candidates) / total,
            "checks": {name: sum(c.report.checks[name].passed for c in candidates) / total
                       for name in candidates[0].report.checks},
            "seconds": seconds,
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    checks = list(result["none"]["checks"])
    print(f"{'constrain':<13}{'finished':>9}{'parsed':>8}{'valid':>8}" + "".join(f"{c[:12]:>14}" for c in checks)
          + f"{'seconds':>9}")
    for constrain, r in result.items():
        print(f"{constrain:<13}{r['finished']:>9.2f}{r['parsed']:>8.2f}{r['valid']:>8.2f}"
              + "".join(f"{r['checks'][c]:>14.2f}" for c in checks) + f"{r['seconds']:>9.1f}")
    return result


if __name__ == "__main__":
    main()
