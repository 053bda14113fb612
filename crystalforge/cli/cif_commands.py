"""``crystalforge prompt``, ``preprocess`` and ``postprocess``: the CIF toolkit on the command line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from ..parallel import default_workers

MAX_FAILURES_SHOWN = 20


@click.command()
@click.argument("composition")
@click.option("--spacegroup", "-s", default=None, help="Space group: H-M symbol or number 1-230.")
@click.option("--z", "z", type=int, default=None, help="Formula units per cell (multiplies the formula).")
@click.option("--output", "-o", "--out", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the prompt to this file instead of standard output.")
def prompt(composition: str, spacegroup: str | None, z: int | None, output: Path | None) -> None:
    """Print the generation prompt for a COMPOSITION.

    \b
    Examples:
      crystalforge prompt CaTiO3
      crystalforge prompt CaTiO3 --spacegroup Pm-3m
      crystalforge prompt SrTiO3 --spacegroup 221 --z 2 -o prompt.txt
      crystalforge run --prompts prompt.txt -n 10
    """
    from ..cif.io import atomic_write_text
    from ..cif.prompt import make_prompt

    text = make_prompt(composition, spacegroup=spacegroup, z=z)
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}", err=True)


def _preprocess_item(item: tuple[str, str]) -> str:
    from ..cif.preprocess import preprocess_cif
    from ..errors import CIFError

    if not item[1]:
        raise CIFError("empty, binary or unreadable file")
    return preprocess_cif(item[1])


def _postprocess_item(item: tuple[str, str]) -> str:
    from ..cif.postprocess import postprocess_cif
    from ..errors import CIFError

    if not item[1]:
        raise CIFError("empty, binary or unreadable file")
    return postprocess_cif(item[1])


def failures_path_for(output: Path) -> Path:
    """Return where a batch run writing ``output`` lists its failures: ``<OUT>_failures.csv`` beside it."""
    name = output.name
    for suffix in (".tar.gz", ".tgz", ".tar", ".csv", ".cif"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.parent / f"{name or 'output'}_failures.csv"


def write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    """Write ``(name, error)`` rows to a CSV (atomically)."""
    from ..cif.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "error"])
    writer.writerows(failures)
    atomic_write_text(path, buffer.getvalue())


def _run_batch(function, verb: str, source: Path, output: Path, workers: int | None, no_progress: bool) -> None:
    from ..cif.io import iter_cifs, write_cifs
    from ..parallel import imap_progress

    items = list(iter_cifs(source))
    names = [name for name, _ in items]
    results: list[tuple[str, str]] = []
    failures: list[tuple[str, str]] = []
    outcomes = imap_progress(function, items, workers=workers or default_workers(), total=len(items),
                             description=verb, progress=not no_progress, crash_label="the CIF parser")
    for name, (ok, value) in zip(names, outcomes):
        if ok:
            results.append((name, value))
        else:
            message = str(value).splitlines()[0] if value else "failed"
            failures.append((name, message.removeprefix("CIFError: ")))
    if len(items) == 1 and failures:  # one CIF asked for: its failure is the error
        from ..cif.io import read_text_file, source_kind
        from ..errors import CIFError

        if source_kind(source) == "cif":
            read_text_file(source)  # raises the precise reason for an empty or binary file
        raise CIFError(f"{failures[0][0]}: {failures[0][1].removeprefix('CIFError: ')}")
    write_cifs(output, results)
    failures_file = failures_path_for(output)
    if failures:
        write_failures(failures_file, failures)
        for name, error in failures[:MAX_FAILURES_SHOWN]:
            click.echo(f"failed: {name}: {error}", err=True)
        if len(failures) > MAX_FAILURES_SHOWN:
            click.echo(f"... and {len(failures) - MAX_FAILURES_SHOWN} more", err=True)
    elif failures_file.exists():
        failures_file.unlink()  # a stale list from an earlier run would mislead
    summary = f"{verb} {len(results)} of {len(items)} CIFs into {output}"
    if failures:
        summary += f"; {len(failures)} failed (listed in {failures_file})"
    click.echo(summary)


_workers = click.option("--workers", "-j", type=int, default=None, help="Worker processes (default: all CPUs).")
_no_progress = click.option("--no-progress", is_flag=True, help="Hide the progress bar.")


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@_workers
@_no_progress
def preprocess(source: Path, output: Path, workers: int | None, no_progress: bool) -> None:
    """Convert CIFs into CrystaLLM's canonical training form.

    SOURCE and OUTPUT may each be a .cif file, a folder, a .tar.gz or a CSV with a `cif`
    column. CIFs that fail are listed in OUTPUT_failures.csv and the run goes on.

    \b
    Examples:
      crystalforge preprocess perov_5/val.csv perov_prep.tar.gz -j 4
      crystalforge preprocess raw_cifs/ prep_cifs/
    """
    _run_batch(_preprocess_item, "preprocessed", source, output, workers, no_progress)


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@_workers
@_no_progress
def postprocess(source: Path, output: Path, workers: int | None, no_progress: bool) -> None:
    """Restore full symmetry operators in generated CIFs.

    The atom-properties block the model writes is removed as well.

    SOURCE and OUTPUT may each be a .cif file, a folder, a .tar.gz or a CSV with a `cif`
    column. CIFs that fail are listed in OUTPUT_failures.csv and the run goes on.

    \b
    Examples:
      crystalforge postprocess generated.tar.gz final.tar.gz
      crystalforge postprocess raw_gen/ final/ -j 4
    """
    _run_batch(_postprocess_item, "postprocessed", source, output, workers, no_progress)
