"""``crystalforge vun``: validity, uniqueness and novelty of generated structures."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("generated", type=click.Path(path_type=Path))
@click.option("--train", type=click.Path(path_type=Path), default=None,
              help="Training set (CSV, folder or .tar.gz) for novelty; without it all count as novel.")
@click.option("-o", "--output", "--out", "output", type=click.Path(path_type=Path), default=None,
              help="Write one row per generated CIF to this CSV.")
@click.option("-j", "--workers", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", "--quiet", "quiet", is_flag=True, help="Hide the progress bar.")
def vun(generated: Path, train: Path | None, output: Path | None, workers: int, as_json: bool,
        quiet: bool) -> None:
    """Measure validity, uniqueness and novelty of GENERATED structures.

    Valid: no atoms closer than 0.5 A, volume > 0.1 A^3, SMACT charge neutral with the
    electronegativity test. Unique and novel: no match with StructureMatcher(ltol=0.2,
    stol=0.3, angle_tol=5) among earlier generated / training structures.

    \b
    Examples:
      crystalforge vun out/ --train data/train.csv
      crystalforge vun generated.tar.gz --train train.tar.gz --json -o vun.csv
    """
    from ..cif.io import atomic_write_text
    from ..errors import OptionError
    from ..evaluation.vun import compute_vun, read_cif_set

    if workers < 1:
        raise OptionError(f"--workers must be at least 1, got {workers}")
    generated_set = read_cif_set(generated)
    train_set = read_cif_set(train) if train is not None else None
    result = compute_vun(generated_set, train_set, workers=workers, progress=not quiet and not as_json)
    if output is not None:
        atomic_write_text(output, result.to_csv())
    summary = result.summary
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"generated: {summary['n_generated']}   training set: {summary['n_train'] or 'none'}")
    for key in ("parsed", "structure_valid", "composition_valid", "valid", "unique", "novel",
                "unique_and_novel", "vun"):
        entry = summary[key]
        click.echo(f"{key + ':':<20}{entry['count']:>7}/{entry['total']:<7} {entry['rate']:.2%}")
    if output is not None:
        click.echo(f"rows written to {output}")
