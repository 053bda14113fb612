"""``crystalforge view`` pages and ``Candidate._repr_html_``: offline, and CIF text never becomes HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from crystalforge.cli import cli
from crystalforge.generation.candidate import Candidate

from conftest import PEROV_CSV, read_csv_slice

HOSTILE = "</script><img src=x onerror=alert(1)><!--"


@pytest.fixture(scope="module")
def perovskites(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cifs")
    paths = []
    for material_id, cif in read_csv_slice(PEROV_CSV, 0, 2):
        path = folder / f"{material_id}.cif"
        path.write_text(cif)
        paths.append(path)
    return paths


def embedded_data(page: str) -> list[dict]:
    match = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def test_view_writes_an_offline_page_with_viewer_and_checks(perovskites, tmp_path):
    out = tmp_path / "page.html"
    result = CliRunner().invoke(cli, ["view", *map(str, perovskites), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 structures" in result.output and str(out) in result.output
    page = out.read_text()
    assert "<script src=" not in page and "https://" not in page.split("<script>")[0]  # nothing fetched
    assert "$3Dmol" in page and "CrystalViewer" in page
    items = embedded_data(page)
    assert [item["name"] for item in items] == [p.name for p in perovskites]
    for item in items:
        assert {c["name"] for c in item["checks"]} >= {"formula_consistency", "space_group", "bond_length"}
        structure = item["structure"]
        assert len(structure["species"]) == len(structure["frac"]) and len(structure["lattice"]) == 3
        assert item["density"] > 0


def test_view_escapes_hostile_cif_text(tmp_path):
    path = tmp_path / "evil.cif"
    path.write_text(f"data_{HOSTILE}\n_cell_length_a 4\n")
    out = tmp_path / "evil.html"
    result = CliRunner().invoke(cli, ["view", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert HOSTILE not in page and "<img src=x" not in page
    item = embedded_data(page)[0]
    assert item["structure"] is None and item["structure_error"]
    assert not all(c["passed"] for c in item["checks"])


def test_view_missing_file_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["view", str(tmp_path / "nope.cif"), "-o", str(tmp_path / "x.html")])
    assert result.exit_code != 0
    assert "nope.cif" in result.output and "Traceback" not in result.output


def test_candidate_repr_html_inlines_the_viewer_once(perovskites):
    from crystalforge.web import render

    render._script_sent = False
    text = perovskites[0].read_text()
    candidate = Candidate(composition="X", formula="X", spacegroup=None, index=0, raw=text, cif=text)
    first, second = candidate._repr_html_(), candidate._repr_html_()
    assert "$3Dmol" in first and len(first) > 300_000  # 3Dmol.js inline: works offline
    assert "$3Dmol=" not in second and len(second) < 50_000  # the next cells reuse it
    assert "CrystalViewer" in second
    item = embedded_data(second)[0]
    assert item["structure"] is not None and item["checks"]
