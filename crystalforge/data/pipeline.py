"""The data pipeline as composable steps: preprocess, dedupe, split, tokenize.

``prepare(sources, out_dir)`` runs them in order and leaves in ``out_dir``::

    prep.tar.gz       preprocessed CIFs (canonical training form)
    dedup.tar.gz      the same without duplicates
    train.tar.gz      the split CIFs (val.tar.gz, test.tar.gz too)
    train.bin         tokenized train split (uint16); val.bin likewise (with ``augment=K``,
                      train.bin holds up to K equivalent texts per training structure)
    meta.pkl          vocab_size, itos, stoi
    starts.pkl        CIF start positions in train.bin; starts_val.pkl for val.bin
    failures.csv      step,name,error for every CIF a step could not handle
    manifest.json     counts, seed, fractions and options of the run

A subset of steps reads its input from the previous step's file in ``out_dir``, so
``--steps split,tokenize`` re-splits an existing ``dedup.tar.gz``. Every output is
byte-identical for identical input and options.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..cif.io import atomic_write_text, write_cifs
from ..errors import DataError
from ..parallel import imap_progress
from .augment import augment_items, parse_kinds
from .dedupe import dedupe
from .ingest import Failure, Item, ingest, read_items
from .split import split_items
from .tokenize import write_tokenized

log = logging.getLogger(__name__)

STEPS = ("preprocess", "dedupe", "split", "tokenize")
PREP_FILE = "prep.tar.gz"
DEDUP_FILE = "dedup.tar.gz"
SPLIT_FILES = {"train": "train.tar.gz", "val": "val.tar.gz", "test": "test.tar.gz"}
FAILURES_FILE = "failures.csv"
MANIFEST_FILE = "manifest.json"


def _preprocess_one(text: str) -> str:
    from ..cif.preprocess import preprocess_cif

    return preprocess_cif(text)


@dataclass
class StepResult:
    """CIFs a step produced (``items``) and those it could not handle (``failures``)."""

    items: list[Item] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def preprocess_items(items: Sequence[Item], *, workers: int = 1, progress: bool = True) -> StepResult:
    """Return ``items`` in canonical training form (``preprocess_cif``); never raises per CIF.

    A CIF that fails (unparseable, Z = 0, ...) is dropped and listed in ``failures``.
    """
    result = StepResult()
    texts = (text for _, text in items)
    for (name, _), (ok, value) in zip(items, imap_progress(_preprocess_one, texts, workers=workers, total=len(items),
                                                           description="preprocess", progress=progress,
                                                           crash_label="the CIF parser")):
        if ok:
            result.items.append((name, value))
        else:
            result.failures.append(Failure(name, "preprocess", str(value)))
    log.info("preprocess: %d ok, %d failed", len(result.items), len(result.failures))
    return result


def parse_steps(steps: str | Sequence[str] | None) -> tuple[str, ...]:
    """Return the steps to run, in pipeline order, from ``"a,b"`` or a list (None: all).

    Raises:
        DataError: an unknown step name.
    """
    if steps is None:
        return STEPS
    names = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps) if s.strip()]
    unknown = [s for s in names if s not in STEPS]
    if unknown or not names:
        raise DataError(f"unknown step {unknown[0] if unknown else '(none)'!r}; steps are {', '.join(STEPS)}")
    return tuple(s for s in STEPS if s in names)


@dataclass
class PrepareResult:
    """What ``prepare`` did: steps run, counts per stage, failures, the output folder."""

    out_dir: Path
    steps: tuple[str, ...]
    counts: dict[str, int]
    failures: list[Failure]
    manifest: dict


def prepare(
    sources: Sequence[str | os.PathLike] | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    steps: str | Sequence[str] | None = None,
    workers: int = 1,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    group_polymorphs: bool = False,
    detect: str = "auto",
    augment: int = 1,
    augment_kinds: Sequence[str] | str | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Run the pipeline steps from ``sources`` into ``out_dir``; return a :class:`PrepareResult`.

    ``sources`` is needed when ``preprocess`` runs; later steps alone read the previous
    step's output in ``out_dir``. Individual CIF failures never stop the run: they go to
    ``failures.csv``. With ``augment`` K > 1 the tokenize step writes up to K equivalent
    canonical texts of every *training* structure (:mod:`crystalforge.data.augment`, seeded
    with ``seed``) using the ``augment_kinds`` of variation (``"orbit,origin,order"``, all
    by default); the validation split is never augmented.

    Raises:
        DataError: a missing source or missing intermediate file, bad fractions or steps.
        OptionError: ``augment`` below 1, an unknown augmentation kind.
    """
    run = parse_steps(steps)
    if augment < 1 or (augment > 1 and "tokenize" not in run):
        from ..errors import OptionError

        raise OptionError(f"--augment must be at least 1, got {augment}" if augment < 1 else
                          "--augment applies to the tokenize step: add tokenize to --steps")
    kinds = parse_kinds(augment_kinds)  # a bad kind is refused before any work
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    counts: dict[str, int] = {}
    failures: list[Failure] = []
    items: list[Item] | None = None
    splits: dict[str, list[Item]] | None = None

    if "preprocess" in run:
        if sources is None or (not isinstance(sources, (str, os.PathLike)) and not sources):
            raise DataError("the preprocess step needs at least one CIF source")
        ingested = ingest(sources)
        failures += ingested.failures
        counts["ingested"] = len(ingested.items) + len(ingested.failures)
        step = preprocess_items(ingested.items, workers=workers, progress=progress)
        failures += step.failures
        items = step.items
        counts["preprocessed"] = len(items)
        write_cifs(out / PREP_FILE, items)
        if "dedupe" not in run and (out / DEDUP_FILE).exists():
            (out / DEDUP_FILE).unlink()  # stale: a later split must read these new CIFs

    if "dedupe" in run:
        if items is None:
            items = _read_required(out / PREP_FILE, "dedupe", "preprocess")
        deduped = dedupe(items, detect=detect, workers=workers, progress=progress)
        failures += deduped.failures
        items = deduped.items
        counts["duplicates"] = len(deduped.duplicates)
        counts["deduplicated"] = len(items)
        write_cifs(out / DEDUP_FILE, items)

    if "split" in run:
        if items is None:  # deduplicated CIFs when there are any, else the preprocessed ones
            dedup_path = out / DEDUP_FILE
            items = _read_required(dedup_path if dedup_path.exists() else out / PREP_FILE, "split", "preprocess")
        parts = split_items(items, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                            group_polymorphs=group_polymorphs)
        splits = {"train": parts.train, "val": parts.val, "test": parts.test}
        for label, part in splits.items():
            write_cifs(out / SPLIT_FILES[label], part)
            counts[label] = len(part)

    if "tokenize" in run:
        if splits is None:
            splits = {label: _read_required(out / SPLIT_FILES[label], "tokenize", "split") for label in ("train", "val")}
        train_items = splits["train"]
        if augment > 1:
            train_items, augment_failures = augment_items(train_items, augment, seed=seed, workers=workers,
                                                          kinds=kinds,
                                                          progress=progress)
            failures += [Failure(name, "augment", error) for name, error in augment_failures]
            counts["train_augmented"] = len(train_items)
        tokenized = write_tokenized(out, train_items, splits.get("val", []), workers=workers, progress=progress)
        for label, part in tokenized.items():
            failures += part.failures
            counts[f"{label}_cifs_tokenized"] = len(part.starts)
            counts[f"{label}_tokens"] = int(len(part.ids))

    write_failures(out / FAILURES_FILE, failures, replace_steps=_failure_steps(run))
    manifest = _update_manifest(out / MANIFEST_FILE, run, counts, {
        "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
        "group_polymorphs": group_polymorphs, "detect": detect, "augment": augment, "augment_seed": seed,
        "augment_kinds": list(kinds) if augment > 1 else None,
        "sources": [str(s) for s in ([sources] if isinstance(sources, (str, os.PathLike)) else sources or [])],
    })
    return PrepareResult(out_dir=out, steps=run, counts=counts, failures=failures, manifest=manifest)


def _read_required(path: Path, step: str, previous: str) -> list[Item]:
    if not path.exists():
        raise DataError(f"{path} not found: run the '{previous}' step before '{step}'")
    return read_items(path)


def _failure_steps(run: Sequence[str]) -> set[str]:
    steps = set(run)
    if "preprocess" in steps:
        steps.add("ingest")
    if "tokenize" in steps:
        steps.add("augment")
    return steps


def write_failures(path: str | os.PathLike, failures: Sequence[Failure], *, replace_steps: set[str] | None = None) -> None:
    """Write ``failures.csv`` (``step,name,error``), keeping rows of steps not in ``replace_steps``."""
    p = Path(path)
    kept: list[list[str]] = []
    if replace_steps is not None and p.exists():
        with open(p, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("step") not in replace_steps:
                    kept.append([row.get("step", ""), row.get("name", ""), row.get("error", "")])
    rows = kept + [[f.step, f.name, f.error.splitlines()[0] if f.error else ""] for f in failures]
    order = {name: i for i, name in enumerate(("ingest",) + STEPS[:-1] + ("augment", STEPS[-1]))}
    rows.sort(key=lambda r: order.get(r[0], len(order)))  # stable: input order within a step
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "name", "error"])
    writer.writerows(rows)
    atomic_write_text(p, buffer.getvalue())


def _count_step(key: str) -> str:
    """Return the step that produces manifest count ``key``."""
    if key in ("ingested", "preprocessed"):
        return "preprocess"
    if key in ("duplicates", "deduplicated"):
        return "dedupe"
    if key in SPLIT_FILES:
        return "split"
    return "tokenize"


def _update_manifest(path: Path, run: Sequence[str], counts: dict[str, int], options: dict) -> dict:
    manifest: dict = {}
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            manifest = {}
    first = min(STEPS.index(step) for step in run)
    stale = {step for step in STEPS[first:]}  # counts of re-run steps and of those after them
    kept = {k: v for k, v in manifest.get("counts", {}).items() if _count_step(k) not in stale}
    manifest["counts"] = {**kept, **counts}
    if "preprocess" not in run:
        options.pop("sources", None)  # keep the sources of the run that read them
    if "split" not in run:
        for key in ("seed", "val_fraction", "test_fraction", "group_polymorphs"):
            options.pop(key, None)
    if "dedupe" not in run:
        options.pop("detect", None)
    if "tokenize" not in run:
        options.pop("augment", None)
        options.pop("augment_seed", None)
        options.pop("augment_kinds", None)
    manifest.update(options)
    manifest["steps_last_run"] = list(run)
    manifest["format"] = "crystalforge-dataset/1"
    from ..cif.tokenizer import default_tokenizer

    manifest["vocab_size"] = default_tokenizer().vocab_size
    manifest["vocab_hash"] = default_tokenizer().vocab_hash
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
