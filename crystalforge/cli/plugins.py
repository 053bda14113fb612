"""``crystalforge plugins`` and ``crystalforge list KIND``."""

from __future__ import annotations

import json

import click

from ..registry import KINDS
from . import get_plugin_manager


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins with their version, status and what they provide."""
    infos = get_plugin_manager(ctx).plugin_infos()
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    rows = []
    for info in infos:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.provides.items())
        detail = info.error if info.status == "error" else provides
        rows.append((info.name, info.version or "-", info.status, detail or "-"))
    _table(("plugin", "version", "status", "provides / error"), rows)


@click.command(name="list")
@click.argument("kind", type=click.Choice(list(KINDS)))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_components(ctx: click.Context, kind: str, as_json: bool) -> None:
    """List the components of one plugin KIND with their options and defaults.

    \b
    Examples:
      crystalforge list search
      crystalforge list scorer --json
    """
    registry = get_plugin_manager(ctx).registry(kind)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in registry], indent=2, default=str))
        return
    for component in registry:
        extra = " (required)" if component.metadata.get("required") else ""
        click.echo(f"{component.name}{extra}  [{component.plugin}]  {component.summary()}")
        for option in component.options:
            help_text = f"  {option.help}" if option.help else ""
            click.echo(f"    {option.name}: {option.type_name} = {option.default!r}{help_text}")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
