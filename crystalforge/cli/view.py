"""``crystalforge view``: a standalone offline HTML page with the 3D viewer and the checks."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "--output", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write [default: crystalforge-view.html].")
def view(files: tuple[Path, ...], out_path: Path | None) -> None:
    """Write an offline HTML page showing CIF files in 3D with their validity checks.

    The page carries the viewer (3Dmol.js) inline: open it in any browser, no server
    and no internet needed.

    \b
    Examples:
      crystalforge view out/CaTiO3/*.cif -o CaTiO3.html
    """
    from ..cif.io import atomic_write_text
    from ..web.jobs import view_items
    from ..web.render import standalone_page

    items = view_items(files)
    target = out_path or Path("crystalforge-view.html")
    title = files[0].name if len(files) == 1 else f"{len(files)} structures"
    atomic_write_text(target, standalone_page(items, title=f"crystalforge: {title}"))
    valid = sum(1 for item in items if item["checks"] and all(c["passed"] for c in item["checks"] if c["required"]))
    click.echo(f"{len(items)} structures ({valid} valid) -> {target}")
