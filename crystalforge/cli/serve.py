"""``crystalforge serve``: the web page and JSON API, on one process with the model loaded once."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from pathlib import Path

import click

from . import get_plugin_manager


def is_loopback(host: str) -> bool:
    """Return whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback requires a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Folder of run folders (crystalforge run --out folders show up too).")
@click.option("--model", "model_path", default=None, metavar="NAME_OR_PATH",
              help="Registered model name, or checkpoint file or folder (default: the embedded model).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--token", default=None, help="Token every API call must carry (default: generated off loopback).")
@click.option("--max-n", type=click.IntRange(min=1), default=100, show_default=True,
              help="Most candidates per composition in one run.")
@click.option("--max-queued", type=click.IntRange(min=0), default=8, show_default=True,
              help="Most runs waiting behind the running one.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Samples decoded together (progress is reported per batch).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, runs_dir: Path, model_path: str | None, device: str,
          token: str | None, max_n: int, max_queued: int, batch_size: int) -> None:
    """Serve the web page: generate, watch, inspect in 3D, compare and download runs.

    One process: the model is loaded once and runs are generated one at a time, the
    others queued. Runs are ordinary run folders under RUNS, so a restart keeps them.

    \b
    Examples:
      crystalforge serve                      # http://127.0.0.1:8000
      crystalforge serve --runs results --port 8080
      crystalforge serve --host 0.0.0.0       # prints the URL with a generated token
    """
    import uvicorn

    from ..web.app import Limits, create_app

    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(18)
    app = create_app(runs_dir=runs_dir, plugin_manager=get_plugin_manager(ctx), model_path=model_path,
                     device=device, token=token, batch_size=batch_size,
                     limits=Limits(max_n=max_n, max_queued=max_queued))
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"crystalforge serving {runs_dir.resolve()} at {url}  (API docs: /docs; Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
