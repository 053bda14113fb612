"""Small helpers shared by the library and the CLI: ``KEY=VALUE`` options, truthy
strings, numbers read back from text, plain-text tables and atomically written CSV."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import OptionError

TRUE_WORDS = ("1", "true", "yes", "on")


def parse_pairs(pairs: Sequence[str], flag: str = "-o") -> dict[str, str]:
    """Return ``KEY=VALUE`` strings as a dict (values stay strings: the component converts them).

    Raises:
        OptionError: an item is not ``KEY=VALUE``; the message names ``flag``.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{flag} expects KEY=VALUE: {pair!r} is not KEY=VALUE (write key=value, "
                              f"e.g. {flag} top_k=5)")
        out[key.strip()] = value.strip()
    return out


def parse_dotted_pairs(pairs: Sequence[str], flag: str) -> dict[str, dict[str, str]]:
    """Return ``NAME.KEY=VALUE`` strings grouped by name: ``{name: {key: value}}``.

    Raises:
        OptionError: an item is not ``NAME.KEY=VALUE``.
    """
    grouped: dict[str, dict[str, str]] = {}
    for key, value in parse_pairs(pairs, flag).items():
        name, dot, option = key.partition(".")
        if not dot or not name or not option:
            raise OptionError(f"{flag} expects CHECK.KEY=VALUE, got {key}={value} (example: {flag} bond_length.tolerance=0.3)")
        grouped.setdefault(name, {})[option] = value
    return grouped


def truthy(value: Any) -> bool:
    """Return whether a value means yes: a bool as is, a string among 1/true/yes/on (any case)."""
    if isinstance(value, str):
        return value.strip().lower() in TRUE_WORDS
    return bool(value)


def as_float(value: Any) -> float | None:
    """Return ``value`` as a float, None when empty or not a number (``"nan"`` stays NaN)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def format_cell(value: Any) -> str:
    """Return a table cell: ``nan`` for NaN/None floats, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Return the lines of a left-aligned plain-text table: header, dashes, one line per row."""
    body = [tuple(format_cell(c) for c in row) for row in rows]
    widths = [max(len(str(r[i])) for r in [tuple(header), *body]) for i in range(len(header))]
    lines = [tuple(header), tuple("-" * w for w in widths), *body]
    return ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
              cell: Any = None) -> None:
    """Write rows as CSV, atomically; columns default to the first row's keys.

    ``cell`` formats a value (default: floats to 6 significant digits, NaN as ``nan``, None empty).
    """
    import csv
    import io

    from .cif.io import atomic_write_text

    columns = list(columns or rows[0].keys())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (cell or summary_cell)(row.get(k)) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def plain_cell(value: Any) -> Any:
    """Return a CSV cell as the value is (NaN as ``nan``, None empty)."""
    if value is None:
        return ""
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def summary_cell(value: Any) -> Any:
    """Return a CSV cell: floats to 6 significant digits, NaN as ``nan``, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value
