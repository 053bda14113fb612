"""Throughput of the CIF tools: tokenizing, validating and evaluating, 1 worker next to 2.

Tokenization runs in this process over every CIF of a benchmark CSV (the whole Perov-5
file by default). Validation and evaluation run the real commands (``crystalforge
validate`` / ``crystalforge evaluate``) as subprocesses over ``--count`` structures of
the CSV after the preprocess -> postprocess round trip (what validators see in real
use), once per worker count, so the figures include process start-up (about 2 s).

    python bench/cif_throughput.py ../shared/data/perov_5/val.csv --count 500 --workers 1 2
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

csv.field_size_limit(1 << 30)


def read_cifs(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as handle:
        return [(row.get("material_id") or str(i), row["cif"]) for i, row in enumerate(csv.DictReader(handle))]


def bench_tokenizer(cifs: list[tuple[str, str]], repeats: int) -> dict[str, float]:
    from crystalforge.cif.tokenizer import default_tokenizer

    tokenizer = default_tokenizer()
    texts = [text for _, text in cifs]
    times, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = sum(len(tokenizer.encode(text)) for text in texts)
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"cifs": len(texts), "tokens": tokens, "seconds": best, "cifs_per_s": len(texts) / best,
            "tokens_per_s": tokens / best}


def round_trip(cifs: list[tuple[str, str]], folder: Path) -> int:
    from crystalforge.cif.postprocess import postprocess_cif
    from crystalforge.cif.preprocess import preprocess_cif

    written = 0
    for name, text in cifs:
        try:
            (folder / f"{name}.cif").write_text(postprocess_cif(preprocess_cif(text)))
            written += 1
        except Exception as exc:  # noqa: BLE001 - a bench reports, it does not stop
            print(f"skipped {name}: {exc}", file=sys.stderr)
    return written


def bench_command(command: list[str], count: int) -> dict[str, float]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some CIFs invalid, still a full run
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-500:]}")
    return {"seconds": seconds, "cifs_per_s": count / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="benchmark CSV with a cif column")
    parser.add_argument("--count", type=int, default=500, help="structures validated and evaluated")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="tokenizer passes (best is reported)")
    args = parser.parse_args(argv)

    cifs = read_cifs(args.csv)
    tok = bench_tokenizer(cifs, args.repeats)
    print(f"tokenize  {tok['cifs']} CIFs, {tok['tokens']:,} tokens in {tok['seconds']:.2f} s: "
          f"{tok['cifs_per_s']:,.0f} CIFs/s, {tok['tokens_per_s']:,.0f} tokens/s")

    exe = str(Path(sys.executable).with_name("crystalforge"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cifs"
        folder.mkdir()
        count = round_trip(cifs[: args.count], folder)
        rows = []
        for workers in args.workers:
            validate = bench_command([exe, "validate", str(folder), "--workers", str(workers),
                                      "-o", str(Path(tmp) / f"validate{workers}.csv")], count)
            evaluate = bench_command([exe, "evaluate", str(folder), "--workers", str(workers), "--no-progress",
                                      "-o", str(Path(tmp) / f"evaluate{workers}.csv")], count)
            rows.append((workers, validate, evaluate))
    print(f"\n{count} post-processed CIFs of {args.csv.name}")
    print(f"{'workers':>7}  {'validate s':>10}  {'CIFs/s':>7}  {'evaluate s':>10}  {'CIFs/s':>7}")
    for workers, validate, evaluate in rows:
        print(f"{workers:>7}  {validate['seconds']:>10.1f}  {validate['cifs_per_s']:>7.1f}  "
              f"{evaluate['seconds']:>10.1f}  {evaluate['cifs_per_s']:>7.1f}")
    if len(rows) > 1:
        speedups = [rows[0][1]["seconds"] / r[1]["seconds"] for r in rows[1:]]
        print(f"speed-up of validate with {rows[-1][0]} workers: {statistics.fmean(speedups):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
