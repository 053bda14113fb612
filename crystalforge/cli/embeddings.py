"""``crystalforge embeddings``: export (and plot) a model's learned token embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..evaluation.embeddings import KINDS, METHODS


@click.command()
@click.argument("model")
@click.option("--kind", type=click.Choice(KINDS), default="atom", show_default=True, help="Which tokens.")
@click.option("-o", "--output", "--out", "output", type=click.Path(path_type=Path), required=True,
              help="CSV to write (token, v0..vN).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Also write a 2-D plot (PNG).")
@click.option("--method", type=click.Choice(METHODS), default="pca", show_default=True,
              help="Projection for the plot (t-SNE needs scikit-learn).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def embeddings(model: str, kind: str, output: Path, plot_path: Path | None, method: str, as_json: bool) -> None:
    """Export learned token embeddings of MODEL (a checkpoint, or "default") as CSV.

    \b
    Examples:
      crystalforge embeddings default --kind atom -o atoms.csv --plot atoms.png
      crystalforge embeddings out/ckpt.pt --kind spacegroup -o sg.csv --method tsne --plot sg.png
    """
    from ..cif.tokenizer import default_tokenizer
    from ..evaluation.embeddings import (check_method, load_model_for_embeddings, plot_embeddings,
                                         token_embeddings, write_embeddings)

    if plot_path is not None:
        check_method(method)  # a missing t-SNE dependency fails before any work
    loaded = load_model_for_embeddings(model)
    tokens, vectors = token_embeddings(loaded, default_tokenizer(), kind)
    write_embeddings(output, tokens, vectors)
    if plot_path is not None:
        plot_embeddings(plot_path, tokens, vectors, kind=kind, method=method)
    if as_json:
        click.echo(json.dumps({"output": str(output), "plot": str(plot_path) if plot_path else None,
                               "kind": kind, "tokens": len(tokens), "dims": int(vectors.shape[1])}))
        return
    click.echo(f"{len(tokens)} {kind} embeddings ({vectors.shape[1]} dims) written to {output}")
    if plot_path is not None:
        click.echo(f"plot written to {plot_path}")
