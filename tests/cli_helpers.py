"""Helpers the CLI tests share: invoke a command with a given plugin manager, read a run's summary."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

from crystalforge.cli import cli


def invoke(plugin_manager, args):
    """Run ``crystalforge ARGS`` in-process with ``plugin_manager`` (built-ins plus what a test registered)."""
    return CliRunner().invoke(cli, args, obj={"plugin_manager": plugin_manager})


def read_summary(out: Path) -> list[dict[str, str]]:
    """Return the rows of ``out/summary.csv``."""
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))
