"""``crystalforge evaluate``: validity of a collection of CIFs, per CIF and in summary."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import get_plugin_manager


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("-o", "--output", "--out", "output", type=click.Path(path_type=Path), default=None,
              help="Write one row per CIF to this CSV.")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path), default=None,
              help="Write PNG plots into this folder.")
@click.option("--require", "-r", multiple=True, help="Also require this validator for validity (repeatable).")
@click.option("-j", "--workers", type=int, default=None,
              help="Worker processes  [default: all CPUs, at most one per 4 CIFs].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", "--quiet", "quiet", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def evaluate(ctx: click.Context, path: Path, output: Path | None, plots_dir: Path | None,
             require: tuple[str, ...], workers: int | None, as_json: bool, quiet: bool) -> None:
    """Evaluate the validity of CIFs in a folder, .tar.gz, CSV or generation output.

    Every registered validator runs on every CIF; the summary gives space-group and
    multiplicity consistency, the bond-length score (mean +- sd), bond lengths reasonable
    and valid, as counts and rates.

    \b
    Examples:
      crystalforge evaluate out/ -o results.csv --plots plots/
      crystalforge evaluate generated.tar.gz --workers 4 --json
    """
    from ..errors import OptionError
    from ..evaluation.evaluate import evaluate_source, summary_lines

    if workers is not None and workers < 1:
        raise OptionError(f"--workers must be at least 1, got {workers}")
    manager = get_plugin_manager(ctx)
    registry = manager.registry("validator")
    for name in require:
        registry.get(name)  # unknown names fail before any work
    result = evaluate_source(path, plugin_manager=manager, require=require, workers=workers,
                             progress=not quiet and not as_json)
    if output is not None:
        result.write_csv(output)
    plot_paths = []
    if plots_dir is not None:
        from ..evaluation.plots import write_evaluation_plots

        plot_paths = write_evaluation_plots(result.rows, result.summary, plots_dir)
    if as_json:
        payload = dict(result.summary)
        payload["output"] = str(output) if output else None
        payload["plots"] = [str(p) for p in plot_paths]
        click.echo(json.dumps(payload, indent=2))
        return
    for line in summary_lines(result.summary):
        click.echo(line)
    if output is not None:
        click.echo(f"rows written to {output}")
    for plot in plot_paths:
        click.echo(f"plot written to {plot}")
