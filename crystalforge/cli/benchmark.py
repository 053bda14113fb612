"""``crystalforge benchmark``: the crystal-structure-prediction benchmark (match rate, RMSE)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..util import parse_pairs
from . import get_plugin_manager


@click.command()
@click.argument("references", type=click.Path(path_type=Path))
@click.option("--generated", type=click.Path(path_type=Path), default=None,
              help="Score CIFs generated elsewhere (<id>/<k>.cif or <id>__<k>.cif) instead of generating.")
@click.option("--model", "model_path", default=None, help="Checkpoint file or folder (default: embedded model).")
@click.option("--search", default="top-k", show_default=True, help="Search strategy.")
@click.option("-O", "--search-opt", "search_opts", multiple=True, metavar="KEY=VALUE",
              help="Search strategy option (repeatable).")
@click.option("-n", "n", type=int, default=20, show_default=True, help="Candidates per reference.")
@click.option("--with-spacegroup/--no-spacegroup", default=False, show_default=True,
              help="Also put the reference's space group (symprec 0.1) in the prompt (default: composition only).")
@click.option("--formula", type=click.Choice(["canonical", "cell"]), default="canonical", show_default=True,
              help="Prompt formula: the canonical cell the model trained on, or the reference's own cell.")
@click.option("--limit", type=int, default=None, help="Use a random subset of this many references.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the subset and generation.")
@click.option("-j", "--workers", type=int, default=1, show_default=True, help="Worker processes for matching.")
@click.option("--device", default="auto", show_default=True, help="Torch device for generation: auto, cpu, cuda, ...")
@click.option("--batch-size", type=int, default=None, help="Samples decoded together (default: the API's).")
@click.option("-o", "--out", "--output", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Save references, prompts, candidates, matches.csv and report.json here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-progress", "--quiet", "quiet", is_flag=True, help="Hide the progress bars.")
@click.pass_context
def benchmark(ctx: click.Context, references: Path, generated: Path | None, model_path: str | None, search: str,
              search_opts: tuple[str, ...], n: int, with_spacegroup: bool, formula: str, limit: int | None, seed: int,
              workers: int, device: str, batch_size: int | None, out_dir: Path | None, as_json: bool,
              quiet: bool) -> None:
    """Run the CSP benchmark: match rate and RMSE for n=1 and n candidates.

    REFERENCES is a benchmark CSV (cif column) such as the official Perov-5 or Carbon-24
    test split, a folder or a .tar.gz of CIFs (canonical training CIFs are restored to
    their full structure). Prompts hold the composition only, the CSP convention of
    CDVAE and DiffCSP, unless --with-spacegroup. Candidates match with
    StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3) when they are eligible (parse,
    sane cell, SMACT and structure valid).

    \b
    Examples:
      crystalforge benchmark perov_5/test.csv -n 20 --limit 100 --out bench/
      crystalforge benchmark runs/data/test.tar.gz -n 20 --with-spacegroup
      crystalforge benchmark bench/references.tar.gz --generated bench/generated
    """
    from ..errors import OptionError
    from ..evaluation.benchmark import metrics_table, run_benchmark

    if workers < 1:
        raise OptionError(f"--workers must be at least 1, got {workers}")
    manager = get_plugin_manager(ctx)
    options = parse_pairs(search_opts, "-O")
    if generated is None:
        component = manager.registry("search").get(search)  # unknown names fail before any work
        component.convert_options(options)
    result = run_benchmark(references, generated=generated, model_path=model_path, search=search,
                           search_options=options, n=n, with_space_group=with_spacegroup, formula=formula,
                           limit=limit, seed=seed, workers=workers, out=out_dir, plugin_manager=manager,
                           progress=not quiet and not as_json, device=device, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    if generated is None:
        click.echo(f"prompts:           {'composition + space group' if with_spacegroup else 'composition only'}"
                   f" ({formula} cell formula)")
    for line in metrics_table(result.metrics):
        click.echo(line)
    if out_dir is not None:
        click.echo(f"report written to {out_dir / 'report.json'}")
