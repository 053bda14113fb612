"""Learned token embeddings of a model: elements, space groups or digits.

The rows of ``model.transformer.wte.weight`` for one kind of token, written as CSV
(``token, v0 .. vN``) and plotted in two dimensions (PCA by SVD; t-SNE when scikit-learn
is installed), elements coloured by their periodic-table group.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cif.io import atomic_write_bytes, atomic_write_text
from ..errors import DataError, OptionError

KINDS = ("atom", "spacegroup", "digit")
METHODS = ("pca", "tsne")


def tokens_of_kind(tokenizer: Any, kind: str) -> list[str]:
    """Return the vocabulary tokens of ``kind`` (``atom``, ``spacegroup`` or ``digit``), in id order.

    Raises:
        OptionError: an unknown kind.
    """
    if kind == "atom":
        from pymatgen.core.periodic_table import Element

        digits_start = tokenizer.stoi["0"]
        return [t for t in tokenizer.itos[:digits_start] if Element.is_valid_symbol(t)]
    if kind == "spacegroup":
        return [t for t in tokenizer.itos if t.endswith("_sg")]
    if kind == "digit":
        return [str(d) for d in range(10)]
    raise OptionError(f"Unknown embedding kind '{kind}'. Available: {', '.join(KINDS)}")


def token_embeddings(model: Any, tokenizer: Any, kind: str) -> tuple[list[str], np.ndarray]:
    """Return the tokens of ``kind`` and their embedding rows (``[len(tokens), n_embd]`` float64).

    Raises:
        OptionError: an unknown kind.
        CheckpointError: the model has no ``transformer.wte`` or fewer rows than the vocabulary.
    """
    from ..errors import CheckpointError

    tokens = tokens_of_kind(tokenizer, kind)
    try:
        weight = model.transformer.wte.weight.detach().float().cpu().numpy()
    except AttributeError:
        raise CheckpointError("model has no transformer.wte token embedding") from None
    ids = [tokenizer.stoi[t] for t in tokens]
    if max(ids) >= weight.shape[0]:
        raise CheckpointError(f"model's embedding has {weight.shape[0]} rows, the vocabulary needs {max(ids) + 1}")
    return tokens, weight[ids].astype(np.float64)


def load_model_for_embeddings(model: str | os.PathLike | None) -> Any:
    """Return the model at ``model`` (checkpoint file or folder; ``"default"``/None: embedded)."""
    from ..model.checkpoint import load_model

    path = None if model is None or str(model) == "default" else model
    return load_model(path)


def write_embeddings(path: str | os.PathLike, tokens: Sequence[str], vectors: np.ndarray) -> None:
    """Write ``token, v0 .. vN`` rows to a CSV at ``path`` (atomically); ``_sg`` suffixes are kept."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["token", *[f"v{i}" for i in range(vectors.shape[1])]])
    for token, row in zip(tokens, vectors):
        writer.writerow([token, *[repr(float(x)) for x in row]])
    atomic_write_text(path, buffer.getvalue())


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Return the tokens and vectors of an embeddings CSV written by :func:`write_embeddings`.

    Raises:
        DataError: the file is missing or not in ``token, v0 .. vN`` form.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"No such embeddings file: {p}")
    with open(p, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or header[0] != "token" or len(header) < 2:
            raise DataError(f"{p}: not an embeddings CSV (expected a header 'token,v0,...')")
        tokens, rows = [], []
        for line_number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise DataError(f"{p}: line {line_number} has {len(row)} columns, expected {len(header)}")
            try:
                rows.append([float(x) for x in row[1:]])
            except ValueError:
                raise DataError(f"{p}: line {line_number} has a non-numeric value") from None
            tokens.append(row[0])
    return tokens, np.array(rows, dtype=np.float64).reshape(len(tokens), len(header) - 1)


def check_method(method: str) -> None:
    """Raise :class:`OptionError` when ``method`` is unknown or its dependency is missing."""
    if method not in METHODS:
        raise OptionError(f"Unknown projection method '{method}'. Available: {', '.join(METHODS)}")
    if method == "tsne":
        try:
            import sklearn.manifold  # noqa: F401
        except ImportError:
            raise OptionError("t-SNE needs scikit-learn (pip install scikit-learn); use --method pca") from None


def project_2d(vectors: np.ndarray, method: str = "pca", *, seed: int = 0) -> np.ndarray:
    """Return ``[n, 2]`` coordinates of ``vectors`` by PCA (numpy SVD) or t-SNE (scikit-learn).

    Raises:
        OptionError: an unknown method, or t-SNE without scikit-learn installed.
    """
    if method == "pca":
        centered = vectors - vectors.mean(axis=0, keepdims=True)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        components = vt[:2].T
        coords = centered @ components
        if coords.shape[1] < 2:
            coords = np.hstack([coords, np.zeros((coords.shape[0], 2 - coords.shape[1]))])
        return coords
    if method == "tsne":
        check_method(method)
        from sklearn.manifold import TSNE

        perplexity = max(2.0, min(30.0, (len(vectors) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(vectors)
    raise OptionError(f"Unknown projection method '{method}'. Available: {', '.join(METHODS)}")


def _group_of(token: str) -> int | None:
    try:
        from pymatgen.core.periodic_table import Element

        element = Element(token)
        if element.is_lanthanoid or element.is_actinoid:
            return 3  # f-block shown with group 3
        return int(element.group)
    except Exception:
        return None


def plot_embeddings(path: str | os.PathLike, tokens: Sequence[str], vectors: np.ndarray, *, kind: str,
                    method: str = "pca") -> Path:
    """Write a 2-D scatter plot of the embeddings, each point labelled by its token; return the path.

    Elements are coloured by periodic-table group (lanthanoids and actinoids with group 3).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    coords = project_2d(vectors, method)
    labels = [t[:-3] if t.endswith("_sg") else t for t in tokens]
    figure, axes = plt.subplots(figsize=(9, 7) if kind != "digit" else (5, 4))
    if kind == "atom":
        groups = [_group_of(t) or 0 for t in tokens]
        scatter = axes.scatter(coords[:, 0], coords[:, 1], c=groups, cmap="tab20", s=30, vmin=1, vmax=18)
        figure.colorbar(scatter, ax=axes, label="periodic-table group")
    else:
        axes.scatter(coords[:, 0], coords[:, 1], s=18, color="#4477aa")
    fontsize = 6 if len(tokens) > 100 else 8
    for (x, y), label in zip(coords, labels):
        axes.annotate(label, (x, y), fontsize=fontsize, xytext=(2, 2), textcoords="offset points")
    axes.set_xlabel(f"{method.upper()} 1")
    axes.set_ylabel(f"{method.upper()} 2")
    axes.set_title(f"{kind} token embeddings ({len(tokens)} tokens, {vectors.shape[1]} dims)")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    out = Path(path)
    atomic_write_bytes(out, buffer.getvalue())
    return out
