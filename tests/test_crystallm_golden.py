"""The built-in checks give CrystaLLM's own verdicts, recorded from its original code.

``tests/data/crystallm_golden_*.jsonl.gz`` hold, per CIF, what CrystaLLM's
``is_formula_consistent``, ``is_atom_site_multiplicity_consistent``,
``bond_length_reasonableness_score``, ``is_space_group_consistent`` and ``is_valid``
returned (tests/data/README.md says how they were produced). Every record must get the
same verdicts here, the bond score to 1e-9. The default run checks a seeded share of the
records; the slow run checks all of them over a worker pool.
"""

from __future__ import annotations

import gzip
import json
import math
import random

import pytest

from conftest import TEST_DATA
from crystalforge.cif.properties import atom_props_block
from crystalforge.cif.preprocess import clean_lines
from crystalforge.parallel import imap_progress
from crystalforge.validation.report import validate

GOLDEN_FILES = sorted(TEST_DATA.glob("crystallm_golden_validity_*.jsonl.gz"))
#: golden field -> crystalforge check
CHECKS = {"formula": "formula_consistency", "multiplicity": "site_multiplicity", "space_group": "space_group"}
DEFAULT_SHARE = 60  # records per source in the quick run


def load_records() -> list[dict]:
    records = []
    for path in GOLDEN_FILES:
        with gzip.open(path, "rt") as handle:
            records += [r for r in map(json.loads, handle) if "_meta" not in r]
    return records


RECORDS = load_records()


def disagreements(record: dict) -> list[str]:
    """Return how crystalforge's report on ``record["cif"]`` differs from CrystaLLM's verdicts."""
    from crystalforge.plugins import make_plugin_manager

    report = validate(record["cif"], plugin_manager=make_plugin_manager(entry_points=False))
    out = []
    for golden, check in CHECKS.items():
        if report.checks[check].passed != bool(record[golden]):
            out.append(f"{check}: {report.checks[check].passed} vs {record[golden]} ({report.checks[check].message})")
    bond = report.checks["bond_length"]
    expected = record["bond_score"]
    if expected is None:
        if bond.passed or bond.score is not None:
            out.append(f"bond_length: score {bond.score} where CrystaLLM raised {record['errors'].get('bond_score')}")
    elif bond.score is None or not math.isclose(bond.score, expected, rel_tol=0, abs_tol=1e-9):
        out.append(f"bond_length: score {bond.score} vs {expected} ({bond.message})")
    elif bond.passed != (expected >= 1.0):
        out.append(f"bond_length: passed {bond.passed} with score {expected}")
    if report.is_valid != record["is_valid"]:
        out.append(f"is_valid: {report.is_valid} vs {record['is_valid']}")
    return [f"{record['id']}: {line}" for line in out]


def _check_all(records: list[dict]) -> list[str]:
    failures = []
    for ok, result in imap_progress(disagreements, records, workers=2, progress=False):
        failures += result if ok else [f"worker failed: {result}"]
    return failures


def test_golden_files_cover_every_source():
    sources = {}
    for record in RECORDS:
        sources[record["source"]] = sources.get(record["source"], 0) + 1
    assert set(sources) == {"perov_5", "carbon_24", "generated"}, sources
    assert sources["perov_5"] >= 300 and sources["carbon_24"] >= 300 and sources["generated"] >= 100, sources
    # the set holds invalid structures of every kind, so the test can fail
    assert any(not r["is_valid"] for r in RECORDS if r["source"] == "perov_5")
    assert any(r["bond_score"] is not None and r["bond_score"] < 1.0 for r in RECORDS)
    assert any(r["space_group"] is False for r in RECORDS)


def test_seeded_share_matches_crystallm():
    by_source: dict[str, list[dict]] = {}
    for record in RECORDS:
        by_source.setdefault(record["source"], []).append(record)
    chosen = []
    for source in sorted(by_source):
        records = by_source[source]
        chosen += random.Random(f"golden:{source}").sample(records, min(DEFAULT_SHARE, len(records)))
    failures = _check_all(chosen)
    assert not failures, f"{len(failures)} disagreements:\n" + "\n".join(failures[:20])


@pytest.mark.slow
def test_every_record_matches_crystallm():
    failures = _check_all(RECORDS)
    assert not failures, f"{len(failures)} disagreements:\n" + "\n".join(failures[:20])


def _tokens(block: str) -> list[str]:
    return clean_lines(block).split()


def test_atom_props_block_matches_crystallm_for_every_element():
    from pymatgen.core import Composition

    golden = json.loads((TEST_DATA / "crystallm_atom_props.json").read_text())
    assert len(golden["elements"]) == 89
    wrong = [symbol for symbol, block in golden["elements"].items()
             if _tokens(atom_props_block(Composition(symbol).elements)) != _tokens(block)]
    assert not wrong, f"blocks differ for {wrong}"
    for formula, block in golden["compositions"].items():
        assert _tokens(atom_props_block(Composition(formula).elements)) == _tokens(block), formula
