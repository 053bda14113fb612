"""Shared fixtures: a fresh plugin manager with built-ins only, and real CIF slices."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
# the first 200 rows of the Perov-5 and Carbon-24 benchmark CSVs (tests/data/README.md)
TEST_DATA = REPO / "tests" / "data"
PEROV_CSV = TEST_DATA / "perov_5_head200.csv"
CARBON_CSV = TEST_DATA / "carbon_24_head200.csv"

csv.field_size_limit(2**31 - 1)


def read_csv_slice(path: Path, start: int = 0, count: int = 20) -> list[tuple[str, str]]:
    """Return ``count`` ``(material_id, cif)`` rows of a benchmark CSV from row ``start``."""
    out = []
    with open(path, newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            if i < start:
                continue
            if len(out) >= count:
                break
            out.append((row["material_id"], row["cif"]))
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture
def plugin_manager(monkeypatch):
    """A fresh plugin manager holding the built-in plugins only."""
    from crystalforge.plugins import make_plugin_manager

    monkeypatch.delenv("CRYSTALFORGE_BLOCK_PLUGINS", raising=False)
    monkeypatch.delenv("CRYSTALFORGE_STRICT_PLUGINS", raising=False)
    return make_plugin_manager(entry_points=False)


@pytest.fixture(scope="session")
def perov_raw() -> list[tuple[str, str]]:
    """20 raw (P1) Perov-5 CIFs from the shared benchmark data."""
    return read_csv_slice(PEROV_CSV, 0, 20)


@pytest.fixture(scope="session")
def carbon_raw() -> list[tuple[str, str]]:
    """10 raw (P1) Carbon-24 CIFs from the shared benchmark data."""
    return read_csv_slice(CARBON_CSV, 0, 10)
