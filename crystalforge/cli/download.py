"""``crystalforge download``: fetch CrystaLLM's published models and datasets."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("name", required=False)
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to download into.")
@click.option("--list", "list_only", is_flag=True, help="List the artifacts that can be downloaded.")
@click.option("--no-extract", is_flag=True, help="Keep archives packed.")
@click.option("--keep-archive", is_flag=True, help="Keep the archive after unpacking it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def download(name: str | None, directory: str, list_only: bool, no_extract: bool, keep_archive: bool,
             as_json: bool) -> None:
    """Download a published CrystaLLM model or dataset by NAME, resumably, checksum-verified.

    Archives are unpacked into --dir (a model unpacks to a folder holding ckpt.pt). An
    interrupted download continues where it stopped when run again. Set
    CRYSTALFORGE_DOWNLOAD_BASE_URL to use a mirror.

    \b
    Examples:
      crystalforge download --list
      crystalforge download crystallm_v1_small.tar.gz --dir models
      crystalforge download crystallm_perov_5_small --dir models --keep-archive
    """
    from ..download import download_artifact, list_artifacts

    if list_only:
        artifacts = list_artifacts()
        if as_json:
            click.echo(json.dumps([a.to_dict() for a in artifacts], indent=2))
            return
        width = max(len(a.name) for a in artifacts)
        section = None
        for artifact in artifacts:
            if artifact.section != section:
                section = artifact.section
                click.echo(f"{section}:")
            click.echo(f"  {artifact.name.ljust(width)}  {artifact.size:>9}")
        return
    if not name:
        raise click.UsageError("give an artifact NAME, or --list to see them")
    path = download_artifact(name, directory, extract=not no_extract, keep_archive=keep_archive, progress=True)
    if as_json:
        click.echo(json.dumps({"name": name, "path": str(path)}))
    else:
        click.echo(f"Downloaded {name} to {path}")
