"""``crystalforge validate``: run every registered validator over CIF files."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import click

from ..parallel import auto_workers
from . import get_plugin_manager

# validators built in the parent; forked workers inherit them (plugins registered
# in-process included). Spawned workers rebuild them from the default plugin manager.
_STATE: dict[str, Any] = {}


def _validate_item(item: tuple[str, tuple[str, ...]]) -> dict[str, Any]:
    """Validate one ``(cif, require)`` item; module-level so worker processes can run it."""
    from ..validation.report import run_checks, validators

    cif, require = item
    built = _STATE.get("built")
    if built is None or _STATE.get("require") != require:
        built = _STATE["built"] = validators(None, require)
        _STATE["require"] = require
    return run_checks(cif, built, timeout=_STATE.get("timeout", "default")).to_dict()


def summarize(rows: list[dict[str, Any]], check_names: list[str]) -> dict[str, Any]:
    """Return counts and rates per check, the valid rate and mean/sd of the bond-length score."""
    total = len(rows)
    summary: dict[str, Any] = {"cifs": total, "valid": sum(bool(r.get("is_valid")) for r in rows)}
    summary["valid_rate"] = summary["valid"] / total if total else 0.0
    checks = {}
    for name in check_names:
        passed = sum(bool(r.get(name)) for r in rows)
        checks[name] = {"passed": passed, "rate": passed / total if total else 0.0}
    summary["checks"] = checks
    scores = [r["bond_length_score"] for r in rows if isinstance(r.get("bond_length_score"), (int, float))]
    if scores:
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        summary["bond_length_score"] = {"mean": mean, "sd": sd, "n": len(scores)}
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from ..cif.io import atomic_write_text

    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--require", "-r", "require", multiple=True, metavar="NAME",
              help="Also require this validator to pass for validity (repeatable).")
@click.option("--workers", "-j", type=int, default=None,
              help="Worker processes  [default: all CPUs, at most one per 4 CIFs].")
@click.option("--check-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Fail a check still running after this long (0: no limit)  [default: 60, or "
                   "CRYSTALFORGE_CHECK_TIMEOUT].")
@click.option("--output", "-o", "--out", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one CSV row per CIF (every check, score and message).")
@click.option("--json", "as_json", is_flag=True, help="Print results and summary as JSON.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...], require: tuple[str, ...], workers: int | None,
             check_timeout: float | None, output: Path | None, as_json: bool, no_progress: bool) -> None:
    """Check CIFs for validity with every registered validator.

    Built-in checks: formula, site multiplicities, bond lengths, space group, cell sanity.

    PATHS are .cif files, folders, .tar.gz archives or CSVs with a `cif` column. Third-party
    validators installed as plugins join every report; --require makes one decide validity.
    Each CIF is checked in a worker process: one that crashes or hangs it is reported as
    invalid with the reason, and the others go on.

    \b
    Examples:
      crystalforge validate out/*.cif
      crystalforge validate generated.tar.gz -j 4 -o report.csv
      crystalforge validate cifs/ --require my_check --json
    """
    from ..cif.io import iter_cifs
    from ..parallel import imap_progress
    from ..validation.report import default_check_timeout, validators

    manager = get_plugin_manager(ctx)
    built = validators(manager, require)  # unknown --require names fail here, before any work
    timeout = default_check_timeout() if check_timeout is None else (check_timeout or None)
    _STATE["built"], _STATE["require"], _STATE["timeout"] = built, tuple(require), timeout
    # a check stuck in C code holding the GIL cannot be abandoned: kill its worker instead
    backstop = None if timeout is None else timeout * (len(built) + 1) + 60
    check_names = [name for name, _, _ in built]
    items: list[tuple[str, str]] = []
    unreadable: dict[int, str] = {}  # item position -> why it is not a CIF (not validated)
    for path in paths:
        for name, text in iter_cifs(path):
            reason = not_a_cif_reason(text, path)
            if reason is not None:
                unreadable[len(items)] = reason
            items.append((name, text))
    checked = [item for position, item in enumerate(items) if position not in unreadable]
    outcomes = iter(imap_progress(_validate_item, ((text, tuple(require)) for _, text in checked),
                                  workers=auto_workers(len(checked), workers or None), total=len(checked),
                                  description="validating", progress=not no_progress,
                                  crash_label="the CIF parser", timeout=backstop))
    rows: list[dict[str, Any]] = []
    for position, (name, _) in enumerate(items):
        if position in unreadable:
            rows.append({"name": name, "is_valid": False, "error": unreadable[position]})
            continue
        ok, value = next(outcomes)
        if ok:
            rows.append({"name": name, **value})
        else:  # run_checks never raises; this is a worker crash
            rows.append({"name": name, "is_valid": False, "error": str(value)})
    summary = summarize(rows, check_names)
    summary["not_cifs"] = len(unreadable)
    if output is not None:
        _write_csv(output, rows)
    if as_json:
        click.echo(json.dumps({"summary": summary, "results": rows}, indent=2, default=str))
    else:
        for position, row in enumerate(rows):
            if position in unreadable:
                click.echo(f"{row['name']}: {unreadable[position]}")
            elif len(rows) <= 50:
                failed = [n for n in check_names if row.get(n) is False]
                verdict = "valid" if row.get("is_valid") else "invalid"
                detail = "; ".join(f"{n}: {row.get(f'{n}_message', '')}" for n in failed) or row.get("error", "")
                click.echo(f"{row['name']}: {verdict}" + (f" ({detail})" if detail else ""))
        click.echo(_summary_text(summary, output))
    if unreadable:
        ctx.exit(1)  # a file that is not a CIF is a mistake in the input, not an invalid structure


def not_a_cif_reason(text: str, source: Path) -> str | None:
    """Return why ``text`` (read from ``source``) is not a CIF at all, or None when it may be one.

    Such a file is named once with the reason instead of failing every check.
    """
    import re

    if not text.strip():
        if source.is_file() and source_is_single_cif(source):
            from ..cif.io import read_text_file
            from ..errors import CIFError

            try:
                read_text_file(source)
            except CIFError as exc:
                return f"not a CIF: {str(exc).removeprefix(f'{source}: ').removesuffix(', not a CIF')}"
        return "not a CIF: empty, binary or unreadable"
    if re.search(r"^[ \t]*data_", text, re.MULTILINE):
        return None
    if _reads_as_poscar(text):
        return ("not a CIF but a VASP POSCAR: convert it first, e.g. "
                "pymatgen's Structure.from_file('POSCAR').to(filename='x.cif')")
    return "not a CIF: no data_ block"


def source_is_single_cif(path: Path) -> bool:
    """Return whether ``path`` is read as one CIF file (not a folder, archive or table)."""
    from ..cif.io import source_kind

    return source_kind(path) == "cif"


def _reads_as_poscar(text: str) -> bool:
    import warnings

    from pymatgen.io.vasp import Poscar

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Poscar.from_str(text)
    except Exception:  # noqa: BLE001 - any failure means "not a POSCAR"
        return False
    return True


def _summary_text(summary: dict[str, Any], output: Path | None) -> str:
    parts = [f"{summary['valid']}/{summary['cifs']} valid ({summary['valid_rate']:.1%})"]
    parts += [f"{name} {c['passed']}/{summary['cifs']} ({c['rate']:.1%})" for name, c in summary["checks"].items()]
    bond = summary.get("bond_length_score")
    if bond:
        parts.append(f"bond-length score {bond['mean']:.3f} +- {bond['sd']:.3f}")
    if summary.get("not_cifs"):
        parts.append(f"{summary['not_cifs']} file(s) not CIFs")
    text = "; ".join(parts)
    if output is not None:
        text += f"; report in {output}"
    return text
