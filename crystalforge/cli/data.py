"""``crystalforge data``: prepare training data (preprocess, dedupe, split, tokenize)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..parallel import default_workers

_workers = click.option("--workers", "-j", type=int, default=None,
                        help="Worker processes (default: all CPUs).")
_no_progress = click.option("--no-progress", is_flag=True, help="Hide progress bars.")
_as_json = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    for key, value in summary.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for sub, count in value.items():
                click.echo(f"  {sub}: {count}")
        else:
            click.echo(f"{key}: {value}")


@click.group()
def data() -> None:
    """Prepare CIF datasets for training.

    \b
    Examples:
      crystalforge data prepare perov_5/val.csv carbon_24/val.csv out/data
      crystalforge data prepare cifs/ out/data --steps split,tokenize --seed 1
      crystalforge data preprocess raw.tar.gz prep.tar.gz
    """


@data.command()
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--steps", default=None, help="Comma-separated steps to run (preprocess,dedupe,split,tokenize).")
@_workers
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="Share of CIFs for validation.")
@click.option("--test-fraction", type=float, default=0.1, show_default=True, help="Share of CIFs held out for testing.")
@click.option("--group-polymorphs", is_flag=True, help="Keep all CIFs of one reduced composition in one split.")
@click.option("--augment", type=int, default=1, show_default=True, metavar="K",
              help="Tokenize up to K equivalent texts per training structure (never val/test).")
@click.option("--augment-kinds", default="orbit,origin,order", show_default=True, metavar="KINDS",
              help="Kinds of variation --augment may use (comma-separated: orbit, origin, order).")
@_no_progress
@_as_json
def prepare(sources: tuple[Path, ...], out_dir: Path, steps: str | None, workers: int | None, seed: int,
            val_fraction: float, test_fraction: float, group_polymorphs: bool, augment: int, augment_kinds: str,
            no_progress: bool, as_json: bool) -> None:
    """Turn CIF sources into a tokenized dataset in OUT_DIR.

    SOURCES are CIF folders, .tar.gz archives, CSVs with a `cif` column or CrystaLLM
    .pkl.gz files; several are merged into one dataset. Steps whose input already
    exists in OUT_DIR can be re-run alone with --steps. --augment K writes each training
    structure as K symmetry-equivalent CIFs (orbit representative, origin shift, site
    order; seeded by --seed), the original among them; --augment-kinds picks which
    variations it may use (e.g. orbit,order keeps every site in the original's frame).

    \b
    Examples:
      crystalforge data prepare data/perov_5/val.csv data/carbon_24/val.csv out/data
      crystalforge data prepare cifs.tar.gz out/data --group-polymorphs --seed 7
      crystalforge data prepare out/data --steps split,tokenize --seed 2   (no source needed)
      crystalforge data prepare out/data --steps tokenize --augment 4
      crystalforge data prepare out/data --steps tokenize --augment 4 --augment-kinds orbit,order
    """
    from ..data.pipeline import prepare as run_prepare

    result = run_prepare(list(sources), out_dir, steps=steps, workers=workers or default_workers(), seed=seed,
                         val_fraction=val_fraction, test_fraction=test_fraction, group_polymorphs=group_polymorphs,
                         augment=augment, augment_kinds=augment_kinds, progress=not no_progress)
    _report({"out_dir": str(out_dir), "steps": ",".join(result.steps), "counts": result.counts,
             "failures": len(result.failures)}, as_json)


@data.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@_workers
@click.option("--failures", "failures_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to list CIFs that failed (default: OUTPUT's folder/failures.csv).")
@_no_progress
@_as_json
def preprocess(source: Path, output: Path, workers: int | None, failures_path: Path | None, no_progress: bool,
               as_json: bool) -> None:
    """Preprocess every CIF of SOURCE into canonical training form at OUTPUT.

    \b
    Examples:
      crystalforge data preprocess raw_cifs/ prep.tar.gz -j 8
    """
    from ..cif.io import write_cifs
    from ..data.ingest import ingest
    from ..data.pipeline import preprocess_items, write_failures

    ingested = ingest([source])
    step = preprocess_items(ingested.items, workers=workers or default_workers(), progress=not no_progress)
    write_cifs(output, step.items)
    failures = ingested.failures + step.failures
    write_failures(failures_path or _failures_beside(output), failures)
    _report({"output": str(output), "preprocessed": len(step.items), "failures": len(failures)}, as_json)


@data.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@_workers
@click.option("--detect", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Detect space groups with pymatgen (auto: only for CIFs stating P1).")
@_no_progress
@_as_json
def dedupe(source: Path, output: Path, workers: int | None, detect: str, no_progress: bool, as_json: bool) -> None:
    """Keep one CIF per formula and space group (lowest volume per formula unit).

    \b
    Examples:
      crystalforge data dedupe prep.tar.gz dedup.tar.gz
    """
    from ..cif.io import write_cifs
    from ..data.dedupe import dedupe as run_dedupe
    from ..data.ingest import ingest
    from ..data.pipeline import write_failures

    ingested = ingest([source])
    result = run_dedupe(ingested.items, detect=detect, workers=workers or default_workers(), progress=not no_progress)
    write_cifs(output, result.items)
    failures = ingested.failures + result.failures
    write_failures(_failures_beside(output), failures)
    _report({"output": str(output), "kept": len(result.items), "duplicates": len(result.duplicates),
             "failures": len(failures)}, as_json)


@data.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="Share of CIFs for validation.")
@click.option("--test-fraction", type=float, default=0.1, show_default=True, help="Share of CIFs held out for testing.")
@click.option("--group-polymorphs", is_flag=True, help="Keep all CIFs of one reduced composition in one split.")
@_as_json
def split(source: Path, out_dir: Path, seed: int, val_fraction: float, test_fraction: float, group_polymorphs: bool,
          as_json: bool) -> None:
    """Split SOURCE into OUT_DIR/train.tar.gz, val.tar.gz and test.tar.gz.

    \b
    Examples:
      crystalforge data split dedup.tar.gz out/data --seed 1 --group-polymorphs
    """
    from ..cif.io import write_cifs
    from ..data.ingest import read_items
    from ..data.pipeline import SPLIT_FILES
    from ..data.split import split_items

    parts = split_items(read_items(source), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                        group_polymorphs=group_polymorphs)
    for label, items in (("train", parts.train), ("val", parts.val), ("test", parts.test)):
        write_cifs(out_dir / SPLIT_FILES[label], items)
    _report({"out_dir": str(out_dir), "counts": parts.counts()}, as_json)


@data.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train", "train_source", type=click.Path(path_type=Path), required=True,
              help="Preprocessed CIFs of the training split.")
@click.option("--val", "val_source", type=click.Path(path_type=Path), default=None,
              help="Preprocessed CIFs of the validation split.")
@_workers
@_no_progress
@_as_json
def tokenize(out_dir: Path, train_source: Path, val_source: Path | None, workers: int | None, no_progress: bool,
             as_json: bool) -> None:
    """Write train.bin, val.bin, meta.pkl and starts.pkl to OUT_DIR.

    \b
    Examples:
      crystalforge data tokenize out/data --train train.tar.gz --val val.tar.gz
    """
    from ..data.ingest import read_items
    from ..data.pipeline import write_failures
    from ..data.tokenize import write_tokenized

    train_items = read_items(train_source)
    val_items = read_items(val_source) if val_source is not None else []
    result = write_tokenized(out_dir, train_items, val_items, workers=workers or default_workers(),
                             progress=not no_progress)
    failures = [f for part in result.values() for f in part.failures]
    write_failures(out_dir / "failures.csv", failures, replace_steps={"tokenize"})
    _report({"out_dir": str(out_dir), "train_cifs": len(result["train"].starts),
             "train_tokens": int(len(result["train"].ids)), "val_cifs": len(result["val"].starts),
             "val_tokens": int(len(result["val"].ids)), "failures": len(failures)}, as_json)


def _failures_beside(output: Path) -> Path:
    folder = output if output.suffix == "" and not str(output).endswith(".tar.gz") else output.parent
    return folder / "failures.csv"
