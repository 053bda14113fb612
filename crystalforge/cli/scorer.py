"""``crystalforge scorer``: host a scorer over ZeroMQ, or score CIF files with one."""

from __future__ import annotations

import json
import math
import signal
import threading
from typing import Any

import click

from ..util import parse_pairs
from . import get_plugin_manager


@click.group()
def scorer() -> None:
    """Serve scorers over ZeroMQ and score CIF files.

    \b
    Examples:
      crystalforge scorer serve --scorer chgnet --port 5555
      crystalforge scorer score out/*.cif --scorer zmq --scorer-opt port=5555
    """


@scorer.command()
@click.option("--scorer", "scorer_name", required=True, help="Registered scorer to host.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (0.0.0.0 exposes it to the network).")
@click.option("--port", default=5555, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed at start).")
@click.option("--scorer-opt", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Scorer option (repeatable), as run's --scorer-opt.")
@click.option("--max-bytes", default=10_000_000, show_default=True, type=click.IntRange(1),
              help="Largest request accepted; larger ones are answered nan.")
@click.pass_context
def serve(ctx: click.Context, scorer_name: str, host: str, port: int,
          options: tuple[str, ...], max_bytes: int) -> None:
    """Host a scorer behind CrystaLLM's ZeroMQ REQ/REP protocol until Ctrl-C.

    Each request is one CIF (UTF-8); the reply is the score as text, or nan when the CIF
    cannot be scored. Stops cleanly on SIGINT or SIGTERM.

    \b
    Examples:
      crystalforge scorer serve --scorer random --scorer-opt seed=1
      crystalforge scorer serve --scorer chgnet --port 5555 --scorer-opt relax=true
    """
    from ..scoring.server import ScorerServer

    registry = get_plugin_manager(ctx).registry("scorer")
    instance = registry.create(scorer_name, **parse_pairs(options, "--scorer-opt"))
    server = ScorerServer(instance, host=host, port=port, max_bytes=max_bytes)

    def stop(signum: int, frame: Any) -> None:
        server.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    server.ready.clear()
    try:
        def announce() -> None:
            server.ready.wait()
            if server.listening:
                click.echo(f"Serving scorer '{scorer_name}' on {server.endpoint} (Ctrl-C to stop)",
                           err=True)

        threading.Thread(target=announce, daemon=True).start()
        server.serve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        instance.close()
    click.echo(f"Stopped after {server.requests} requests ({server.failures} answered nan)", err=True)


@scorer.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--scorer", "scorer_name", required=True, help="Registered scorer to use.")
@click.option("--scorer-opt", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Scorer option (repeatable), as run's --scorer-opt.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def score(ctx: click.Context, paths: tuple[str, ...], scorer_name: str,
          options: tuple[str, ...], as_json: bool) -> None:
    """Score CIFs (files, folders, .tar.gz or CSV) with a registered scorer.

    \b
    Examples:
      crystalforge scorer score generated/ --scorer chgnet
      crystalforge scorer score a.cif b.cif --scorer zmq --scorer-opt port=5555 --json
    """
    from ..cif.io import iter_cifs

    registry = get_plugin_manager(ctx).registry("scorer")
    instance = registry.create(scorer_name, **parse_pairs(options, "--scorer-opt"))
    rows = []
    try:
        for path in paths:
            for name, text in iter_cifs(path):
                value = instance.score(text) if text else math.nan
                rows.append({"name": name, "score": None if math.isnan(value) else value})
    finally:
        instance.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max([len(r["name"]) for r in rows] + [4])
    for row in rows:
        shown = "nan" if row["score"] is None else f"{row['score']:.6g}"
        click.echo(f"{row['name'].ljust(width)}  {shown}")
