"""Record CrystaLLM's own validity verdicts as golden test data.

The original CrystaLLM code (github lantunes/CrystaLLM) is imported at run time from a
folder given on the command line (an unpacked copy of its repository; it is not installed
and nothing of it is kept here). Its package ``__init__`` pulls in torch and ZeroMQ, so only
the modules needed are loaded: ``crystallm._metrics``, ``crystallm._utils`` and
``crystallm._tokenizer``. Current pymatgen renamed two methods that code calls
(``CifParser.from_string`` -> ``from_str``, ``SymmOp.as_xyz_string`` -> ``as_xyz_str``); the
old names are aliased to the new ones before it runs.

Validity records (``--out``, gzipped JSON lines, one object per CIF):

- ``id``, ``source`` (``perov_5``, ``carbon_24`` or ``generated``) and ``cif``: the text the
  checks ran on. For the real structures that is crystalforge's benchmark chain
  ``postprocess_cif(preprocess_cif(raw))``; for generated ones the candidate file as
  ``crystalforge run`` wrote it.
- ``formula``, ``multiplicity``, ``space_group``: CrystaLLM's ``is_formula_consistent``,
  ``is_atom_site_multiplicity_consistent`` and ``is_space_group_consistent``, each ``true``,
  ``false`` or ``null`` when it raised; ``bond_score``: ``bond_length_reasonableness_score``
  (a float, exactly as computed) or ``null`` when it raised; ``errors`` says what raised.
- ``is_valid``: CrystaLLM's ``is_valid`` rule, where an exception means invalid as in its
  ``evaluate_cifs.py``. It is derived from the four results above (``is_valid`` calls the
  same four functions on the same text, in order, and stops at the first failure).
- real structures only: ``same_preprocess``, whether crystalforge's ``preprocess_cif``
  equals CrystaLLM's preprocessing chain (``CifWriter`` at symprec 0.1, data line, collapsed
  operators, atom properties, rounding, the tokenizer's line cleanup) character for character.

Atom-property records (``--atom-props``, JSON): CrystaLLM's ``get_atomic_props_block`` for
each of the 89 elements of its vocabulary and for a few multi-element compositions.

Usage (see tests/data/README.md)::

    python scripts/make_golden_validity.py --crystallm /tmp/crystallm-src --data ../shared/data \\
        --per-dataset 600 --candidates /tmp/golden_gen --out tests/data/crystallm_golden_validity.jsonl.gz \\
        --atom-props tests/data/crystallm_atom_props.json
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib
import json
import multiprocessing
import random
import sys
import time
import types
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("perov_5", "carbon_24")
#: multi-element compositions whose block pins the element order too
COMPOSITIONS = ("SrTiO3", "KF", "CsPbI3", "LiFePO4", "Ba2YCu3O7", "H2O", "XeF2", "KrF2", "C")

_metrics = _utils = None


def load_crystallm(source: str) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """Import CrystaLLM's metrics, utils and tokenizer modules from an unpacked source tree."""
    from pymatgen.core.operations import SymmOp
    from pymatgen.io.cif import CifParser

    if not hasattr(CifParser, "from_string"):
        CifParser.from_string = CifParser.from_str
    if not hasattr(SymmOp, "as_xyz_string"):
        SymmOp.as_xyz_string = SymmOp.as_xyz_str
    folder = Path(source) / "crystallm"
    if not (folder / "_metrics.py").is_file():
        raise SystemExit(f"{folder} has no _metrics.py: pass the root of an unpacked CrystaLLM checkout")
    package = types.ModuleType("crystallm")
    package.__path__ = [str(folder)]
    sys.modules["crystallm"] = package
    return (importlib.import_module("crystallm._metrics"), importlib.import_module("crystallm._utils"),
            importlib.import_module("crystallm._tokenizer"))


def _init(source: str) -> None:
    global _metrics, _utils
    warnings.simplefilter("ignore")
    _metrics, _utils, _ = load_crystallm(source)


def _their_preprocess(raw: str) -> str:
    """CrystaLLM's chain: benchmark CSV -> CifWriter(symprec=0.1) -> preprocess -> line cleanup."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    text = str(CifWriter(Structure.from_str(raw, fmt="cif"), symprec=0.1))
    if _utils.extract_formula_units(text) == 0:
        raise ValueError("Z = 0")
    text = _utils.replace_data_formula_with_nonreduced_formula(text)
    text = _utils.semisymmetrize_cif(text)
    text = _utils.add_atomic_props_block(text, False)
    text = _utils.round_numbers(text, decimal_places=4)
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line and not line.startswith("#") and "pymatgen" not in line]
    return "\n".join([*lines, "\n"])


def _verdicts(cif: str) -> dict:
    out: dict = {}
    errors: dict[str, str] = {}
    for key, function in (
        ("formula", _metrics.is_formula_consistent),
        ("multiplicity", _metrics.is_atom_site_multiplicity_consistent),
        ("bond_score", _metrics.bond_length_reasonableness_score),
        ("space_group", _metrics.is_space_group_consistent),
    ):
        try:
            value = function(cif)
            out[key] = float(value) if key == "bond_score" else bool(value)
        except Exception as exc:  # noqa: BLE001 - CrystaLLM's evaluate counts a raise as invalid
            out[key] = None
            errors[key] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:160]
    out["is_valid"] = bool(out["formula"] and out["multiplicity"] and out["bond_score"] is not None
                           and out["bond_score"] >= 1.0 and out["space_group"])
    out["errors"] = errors
    return out


def _record(item: tuple[str, str, str | None, str | None]) -> dict:
    """Judge one CIF; a real row (``cif`` None) goes through the benchmark chain here, in the worker."""
    record_id, source, cif, raw = item
    if cif is None:
        from crystalforge.cif.postprocess import postprocess_cif
        from crystalforge.cif.preprocess import preprocess_cif

        try:
            cif = postprocess_cif(preprocess_cif(raw))
        except Exception as exc:  # noqa: BLE001 - a row the chain refuses has no CIF to judge
            return {"id": record_id, "source": source, "skipped": f"{type(exc).__name__}: {exc}"[:160]}
    record = {"id": record_id, "source": source, "cif": cif, **_verdicts(cif)}
    if raw is not None:
        from crystalforge.cif.preprocess import preprocess_cif

        try:
            record["same_preprocess"] = _their_preprocess(raw) == preprocess_cif(raw)
        except Exception as exc:  # noqa: BLE001
            record["same_preprocess"] = f"{type(exc).__name__}"
    return record


def real_items(data: Path, per_dataset: int | None, seed: int, exclude: set[str] = frozenset(),
               shuffle: bool = False) -> list[tuple[str, str, None, str]]:
    """Return ``(id, source, None, raw CIF)`` for the chosen rows of each dataset.

    Rows whose id is in ``exclude`` (already pinned) are left out. With ``shuffle`` the rows come
    in a seeded random order, so a run stopped part way has judged a random sample of them.
    """
    csv.field_size_limit(2**31 - 1)
    items = []
    for dataset in DATASETS:
        with open(data / dataset / "val.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        indices = range(len(rows))
        if per_dataset is not None and per_dataset < len(rows):
            indices = sorted(random.Random(f"{seed}:{dataset}").sample(indices, per_dataset))
        for index in indices:
            row = rows[index]
            record_id = f"{dataset}/val.csv:{index}:{row['material_id']}"
            if record_id not in exclude:
                items.append((record_id, dataset, None, row["cif"]))
    if shuffle:
        random.Random(f"{seed}:order").shuffle(items)
    return items


def read_records(path: Path) -> list[dict]:
    """Return the records of a ``.jsonl.gz`` golden file or a plain ``.partial`` side file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [record for record in map(json.loads, filter(str.strip, handle)) if "_meta" not in record]


def write_records(path: Path, meta: dict, records: list[dict]) -> None:
    """Write ``records`` (sorted by id, skipped rows left out) as gzipped JSON lines, atomically."""
    temporary = path.with_suffix(".tmp")
    with gzip.open(temporary, "wt", compresslevel=9) as handle:
        handle.write(json.dumps({"_meta": meta}) + "\n")
        for record in sorted(records, key=lambda r: r["id"]):
            if "skipped" not in record:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
    temporary.replace(path)


def candidate_items(folder: Path) -> list[tuple[str, str, str, None]]:
    return [(f"generated:{path.name}", "generated", path.read_text(), None) for path in sorted(folder.glob("*.cif"))]


def atom_props(source: str) -> dict:
    from pymatgen.core import Composition

    _, utils, tokenizer = load_crystallm(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "elements": {symbol: utils.get_atomic_props_block(Composition(symbol)) for symbol in tokenizer.ATOMS},
            "compositions": {formula: utils.get_atomic_props_block(Composition(formula)) for formula in COMPOSITIONS},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crystallm", required=True, help="root of an unpacked CrystaLLM checkout")
    parser.add_argument("--data", type=Path, help="folder with perov_5/val.csv and carbon_24/val.csv")
    parser.add_argument("--per-dataset", type=int, default=None, help="seeded subset of rows per dataset (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", type=Path, action="append", default=[], help="folder of generated .cif files")
    parser.add_argument("--out", type=Path, help="validity records (.jsonl.gz)")
    parser.add_argument("--atom-props", type=Path, help="atom-property blocks (.json)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="golden file whose ids are already pinned and are skipped")
    parser.add_argument("--shuffle", action="store_true",
                        help="judge the rows in a seeded random order (a stopped run holds a random sample)")
    parser.add_argument("--from-partial", type=Path, action="append", default=[],
                        help="write --out from the .partial side file(s) of a stopped run instead of running")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    warnings.simplefilter("ignore")
    from importlib.metadata import version

    meta = {"crystallm": args.crystallm, "pymatgen": version("pymatgen"), "spglib": version("spglib"),
            "numpy": version("numpy"), "per_dataset": args.per_dataset, "seed": args.seed}
    if args.atom_props:
        blocks = {"_meta": meta, **atom_props(args.crystallm)}
        args.atom_props.write_text(json.dumps(blocks, indent=1, sort_keys=True) + "\n")
    if args.out and args.from_partial:
        records = [r for path in args.from_partial for r in read_records(path)]
        write_records(args.out, {**meta, "stopped_run": True}, records)
        skipped = sum("skipped" in r for r in records)
        print(f"{len(records) - skipped} records ({skipped} skipped) -> {args.out}", file=sys.stderr)
    elif args.out:
        exclude = {r["id"] for path in args.exclude for r in read_records(path)}
        items = real_items(args.data, args.per_dataset, args.seed, exclude, args.shuffle) if args.data else []
        for folder in args.candidates:
            items += candidate_items(folder)
        start = time.monotonic()
        records = []
        # records also go to a plain-text side file as they come, so a long run that is stopped keeps them
        partial = args.out.with_suffix(".partial")
        with multiprocessing.get_context("spawn").Pool(args.workers, _init, (args.crystallm,)) as pool, \
                open(partial, "w") as side:
            for done, record in enumerate(pool.imap(_record, items, chunksize=2), start=1):
                records.append(record)
                side.write(json.dumps(record, sort_keys=True) + "\n")
                side.flush()
                if done % 50 == 0:
                    print(f"{done}/{len(items)} in {time.monotonic() - start:.0f} s", file=sys.stderr)
        write_records(args.out, meta, records)
        partial.unlink()
        print(f"{len(records)} records -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
