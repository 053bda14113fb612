"""De novo generation with the embedded default model: validity, uniqueness and novelty.

For each target (``unconditional``: the prompt ``data_`` alone; a chemical system such as
``C`` or ``Ca-Ti-O``: the same prompt, other elements masked everywhere) it runs
``crystalforge.generate`` into a run folder under ``--out`` (what ``crystalforge run
--unconditional`` / ``--system`` do), then judges the folder's CIFs with
``crystalforge vun``'s code against the training set. Candidates that do not parse stay in
every denominator.

    OMP_NUM_THREADS=1 nice -n 10 python bench/denovo.py runs/data_nodedup/train.tar.gz -n 100
    python bench/denovo.py TRAIN.tar.gz -n 1000 --targets unconditional --device cuda --batch-size 256

Columns: ``valid`` is the run's own validity (CrystaLLM's checks, what ``run`` reports);
``vun-valid`` the CDVAE definition ``crystalforge vun`` uses (no two atoms closer than
0.5 A, SMACT charge neutrality); ``unique`` / ``novel`` / ``VUN`` as ``crystalforge vun``;
``formulas`` the distinct reduced formulas written; ``outside`` candidates holding an
element outside the system (must be 0). On a shared, busy CPU set ``OMP_NUM_THREADS=1``:
torch's threads otherwise spin waiting for each other and a run takes many times longer.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import crystalforge as cf
from crystalforge.cif.extract import parse_composition
from crystalforge.evaluation.vun import compute_vun, denovo_summary, read_cif_set


def run_target(target: str, args) -> dict:
    """Generate ``args.n`` candidates for one target; return its figures."""
    out = Path(args.out) / target
    kind = {"unconditional": True} if target == "unconditional" else {"system": target}
    started = time.perf_counter()
    result = cf.generate(n=args.n, seed=args.seed, device=args.device, batch_size=args.batch_size, out=out,
                         max_atoms=args.max_atoms, search_options={"max_new_tokens": args.max_new_tokens},
                         **kind)
    wall = time.perf_counter() - started
    rows = result.run.rows
    cifs = [(row["name"], (out / row["file"]).read_text(errors="replace")) for row in rows]
    allowed = None if target == "unconditional" else set(target.split("-"))
    outside = 0
    if allowed is not None:
        for _, text in cifs:
            try:
                written = {str(e) for e in parse_composition(text.split("\n", 1)[0][len("data_"):]).elements}
            except Exception:
                written = set()
            if written - allowed:
                outside += 1
    summary = denovo_summary(rows, out, args.max_atoms)
    return {"target": target, "n": len(rows), "wall_s": round(wall, 1),
            "valid": summary["valid"] / max(1, len(rows)), "formulas": summary["distinct_formulas"],
            "over_max_atoms": summary["over_max_atoms"], "outside": outside, "cifs": cifs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", help="training set (tar.gz, folder or CSV of CIFs) for novelty")
    parser.add_argument("-n", type=int, default=100, help="candidates per target")
    parser.add_argument("--targets", nargs="+", default=["unconditional", "C", "Ca-Ti-O"])
    parser.add_argument("--out", default="bench_denovo", help="parent folder of the run folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-atoms", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=1, help="processes matching structures")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures here")
    args = parser.parse_args()

    train = read_cif_set(args.train)
    figures = []
    for target in args.targets:
        figure = run_target(target, args)
        vun = compute_vun(figure.pop("cifs"), train, workers=args.workers, progress=False).summary
        figure.update({f"vun_{key}" if key in ("valid", "vun") else key: vun[key]["rate"]
                       for key in ("parsed", "valid", "unique", "novel", "vun")})
        figures.append(figure)
        print(json.dumps(figure), flush=True)
    header = f"{'target':<14}{'n':>5}{'wall s':>8}{'valid':>8}{'parsed':>8}{'vun-valid':>10}{'unique':>8}" \
             f"{'novel':>8}{'VUN':>8}{'formulas':>9}{'outside':>8}"
    print(header)
    for f in figures:
        print(f"{f['target']:<14}{f['n']:>5}{f['wall_s']:>8.0f}{f['valid']:>8.1%}{f['parsed']:>8.1%}"
              f"{f['vun_valid']:>10.1%}{f['unique']:>8.1%}{f['novel']:>8.1%}{f['vun_vun']:>8.1%}{f['formulas']:>9}"
              f"{f['outside']:>8}")
    print(f"training set: {len(train)} structures ({args.train})")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2) + "\n")



if __name__ == "__main__":
    main()
