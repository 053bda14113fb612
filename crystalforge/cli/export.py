"""``crystalforge export``: convert CIFs to POSCAR, extended XYZ or CIF."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="IN...")
@click.option("--format", "fmt", type=click.Choice(["poscar", "extxyz", "cif"]), default="poscar",
              show_default=True, help="Output format.")
@click.option("-o", "--out", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("exported"),
              show_default=True, help="Output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def export(inputs: tuple[Path, ...], fmt: str, out_dir: Path, as_json: bool) -> None:
    """Convert CIF files (or folders, tar archives, CSVs of them) to another format.

    One output file per structure, named after its input. A CIF that cannot be read is
    reported and skipped; the exit code is 1 when any failed.

    \b
    Examples:
      crystalforge export generated/*.cif --format poscar -o poscars
      crystalforge export generated --format extxyz -o xyz
    """
    from ..generation.export import export_cifs

    results = list(export_cifs(inputs, fmt, out_dir))
    failed = [r for r in results if not r.ok]
    if as_json:
        click.echo(json.dumps({"out": str(out_dir), "format": fmt, "exported": len(results) - len(failed),
                               "failed": [{"name": r.name, "error": r.error} for r in failed]}, indent=2))
    else:
        for result in failed:
            click.echo(f"failed: {result.name}: {result.error}", err=True)
        click.echo(f"exported {len(results) - len(failed)} of {len(results)} structures to {out_dir} ({fmt})")
    if failed or not results:
        raise SystemExit(1)
