"""``crystalforge run``: generate, validate, score and rank candidate structures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import click

from ..util import format_table, parse_dotted_pairs, parse_pairs
from . import get_plugin_manager

TABLE_ROWS = 20


@click.command()
@click.argument("compositions", nargs=-1, metavar="[COMPOSITION]...")
@click.option("--spacegroup", "-s", default=None, help="Space group symbol or number for every composition.")
@click.option("--z", type=int, default=None, help="Formula units per cell (prompt formula = reduced x Z).")
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="Candidates per prompt.")
@click.option("--search", default="top-k", show_default=True, help="Search strategy (crystalforge list search).")
@click.option("-O", "--search-opt", "search_opts", multiple=True, metavar="KEY=VALUE",
              help="Search strategy option, e.g. -O top_k=5 -O constrain=both.")
@click.option("--scorer", default=None, help="Scorer to rank by (crystalforge list scorer).")
@click.option("--scorer-opt", "scorer_opts", multiple=True, metavar="KEY=VALUE", help="Scorer option.")
@click.option("--model", "model_path", default=None, metavar="NAME_OR_PATH",
              help="Registered model name, else a checkpoint file or folder (default: the embedded model).")
@click.option("--model-opt", "model_opts", multiple=True, metavar="KEY=VALUE", help="Model option.")
@click.option("--tokenizer", default=None, help="Tokenizer (crystalforge list tokenizer; default: crystallm).")
@click.option("--validator-opt", "validator_opts", multiple=True, metavar="CHECK.KEY=VALUE",
              help="Validator option, e.g. --validator-opt bond_length.tolerance=0.3.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Model dtype (default float32).")
@click.option("-o", "--out", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder; rerunning into it resumes it [default: a new folder under generated/ "
                   "named from the time and compositions].")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--prompts", "prompts_path", type=click.Path(path_type=Path), default=None,
              help="File of 'COMPOSITION [SPACEGROUP]' lines, a prompt file (crystalforge prompt -o), "
                   "or a folder/tar of prompt texts.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Samples decoded together.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Processes validating candidates  [default: all CPUs, at most one per 4 candidates; "
                   "small batches are validated in-process].")
@click.option("--require", "-r", multiple=True, metavar="CHECK", help="Extra check that must pass for validity.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--rescore", is_flag=True,
              help="Score the kept candidates of --out again with this --scorer (a folder made with another scorer).")
@click.option("--unique", is_flag=True, help="Group equivalent structures (pymatgen StructureMatcher) in the summary.")
@click.option("--unconditional", is_flag=True, help="De novo: prompt 'data_' only, the model picks the composition.")
@click.option("--system", default=None, metavar="A-B-...",
              help="De novo within a chemical system, e.g. Li-Fe-P-O: no other element anywhere (subsets allowed).")
@click.option("--max-atoms", type=int, default=None, help="With --unconditional/--system: most atoms per cell.")
@click.pass_context
def run(ctx: click.Context, compositions: tuple[str, ...], spacegroup: str | None, z: int | None, n: int,
        search: str, search_opts: tuple[str, ...], scorer: str | None, scorer_opts: tuple[str, ...],
        model_path: str | None, model_opts: tuple[str, ...], tokenizer: str | None,
        validator_opts: tuple[str, ...], device: str, dtype: str | None, out_dir: Path, seed: int,
        prompts_path: Path | None, batch_size: int, workers: int, require: tuple[str, ...], no_progress: bool,
        as_json: bool, rescore: bool, unique: bool, unconditional: bool, system: str | None,
        max_atoms: int | None) -> None:
    """Generate candidate structures for compositions, validate, score and rank them.

    Each candidate is written to OUT as <formula>_<spacegroup>_<index>.cif, with
    summary.csv ranking them (valid first, then by score). Rerunning the same command
    keeps what is there and makes only the missing candidates. Under torchrun the
    prompts are shared out across processes and merged into one folder.

    \b
    Examples:
      crystalforge run CaTiO3 --spacegroup Pm-3m -n 10
      crystalforge run SrTiO3 BaZrO3 -n 20 --search top-p -O top_p=0.95 -o results
      crystalforge run C8 -s Fd-3m -n 50 --scorer zmq --scorer-opt port=5555
      crystalforge run --unconditional -n 1000
      crystalforge run --system Ca-Ti-O -n 200 --max-atoms 20
      torchrun --nproc_per_node=4 -m crystalforge run --prompts prompts.txt -n 100 --device cuda
    """
    from ..generation.api import generate
    from ..generation.runfolder import new_run_folder

    _refuse_option_as_folder(out_dir)
    if out_dir is None:
        label = "-".join(compositions[:3]) or (prompts_path.stem if prompts_path else
                                                ("unconditional" if unconditional else system) or "run")
        out_dir = new_run_folder("generated", label + ("-etc" if len(compositions) > 3 else ""))
    result = generate(
        list(compositions), spacegroup=spacegroup, n=n, search=search, scorer=scorer, model=model_path, seed=seed,
        z=z, search_options=parse_pairs(search_opts, "-O"), scorer_options=parse_pairs(scorer_opts, "--scorer-opt"),
        device=device, batch_size=batch_size, plugin_manager=get_plugin_manager(ctx), require=require,
        progress=not no_progress and not as_json, workers=workers, dtype=dtype, prompts=prompts_path,
        out=out_dir, tokenizer=tokenizer, model_options=parse_pairs(model_opts, "--model-opt"),
        validator_options=parse_dotted_pairs(validator_opts, "--validator-opt"), rescore=rescore, unique=unique,
        unconditional=unconditional, system=system, max_atoms=max_atoms,
    )
    run = result.run
    if run.summary_path is None:  # not the main process of a torchrun
        return
    denovo = None
    if unconditional or system is not None:
        from ..evaluation.vun import denovo_summary, denovo_summary_lines

        denovo = denovo_summary(run.rows, run.out_dir, max_atoms)
    if as_json:
        click.echo(json.dumps({
            "out": str(run.out_dir), "summary": str(run.summary_path), "candidates": len(run.rows),
            "generated": run.generated, "resumed": run.resumed, "valid": run.valid,
            "lower_is_better": run.lower_is_better, "score_unit": run.score_unit, "rescored": run.rescored,
            **({"groups": run.groups} if run.groups is not None else {}), "rows": [_plain(r) for r in run.rows],
            **({"denovo": denovo} if denovo is not None else {}),
        }, indent=2, default=str))
        return
    _print_table(run.rows, scored=scorer is not None, unit=run.score_unit, grouped=run.groups is not None)
    rescored = f", {run.rescored} rescored" if rescore else ""
    groups = f" in {len(run.groups)} groups" if run.groups is not None else ""
    click.echo(
        f"{len(run.rows)} candidates{groups} ({run.generated} generated, {run.resumed} kept from before{rescored}), "
        f"{run.valid} valid -> {run.summary_path}"
    )
    if denovo is not None:
        for line in denovo_summary_lines(denovo, run.out_dir):
            click.echo(line)


def _refuse_option_as_folder(out_dir: Path | None) -> None:
    """Stop ``-o top_k=5`` (a search option before -o meant --out) from naming a folder."""
    if out_dir is not None and not out_dir.exists() and re.fullmatch(r"[A-Za-z_]\w*=.*", out_dir.name):
        raise click.UsageError(f"-o/--out names the output folder; {out_dir.name!r} looks like a search "
                               f"option: write -O {out_dir.name} (--search-opt)")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Return the row with NaN as None (strict JSON) and without bookkeeping fields."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return None if isinstance(value, float) and math.isnan(value) else value

    return {k: plain(v) for k, v in row.items() if k != "written_at"}


def _print_table(rows: list[dict[str, Any]], scored: bool, unit: str | None = None, grouped: bool = False) -> None:
    score_header = f"score ({unit})" if unit else "score"
    header = ("#", *(("group",) if grouped else ()), "file", "Z", "sg asked", "sg found", "valid",
              *((score_header,) if scored else ()), "failed checks")
    body = []
    for row in rows[:TABLE_ROWS]:
        score = row.get("score")
        cells = [str(row.get("rank", "")), *((str(row.get("group", "")),) if grouped else ()), row.get("file", ""),
                 str(row.get("z") or "-"), row.get("spacegroup_asked") or "-", row.get("spacegroup_found") or "-",
                 "yes" if row.get("is_valid") else "no"]
        if scored:
            cells.append(float("nan") if score is None else score)
        failed = row.get("failed") or ""
        failed = failed.replace(";", ", ") if failed else "-"
        cells.append(failed if len(failed) <= 60 else failed[:57] + "...")
        body.append(tuple(cells))
    for line in format_table(header, body):
        click.echo(line)
    if len(rows) > TABLE_ROWS:
        click.echo(f"... {len(rows) - TABLE_ROWS} more in summary.csv")
